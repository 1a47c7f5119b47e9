"""deploy/systemd/waitroom@.service, as docs/vm.md installs it: systemd itself verifies the unit,
and its ExecStart, expanded the way systemd expands it (specifiers, `${VAR}` as one word, `$VAR`
split on whitespace) with the example environment file's variables, starts a proxy that is ready
and drains on SIGTERM. That proves the command line, not only its syntax."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import SECRET
from tests.support import REPO, Upstream, free_port, port_open, stop_process, wait_for

pytestmark = pytest.mark.e2e

UNIT = REPO / "deploy" / "systemd" / "waitroom@.service"
ENV_EXAMPLE = REPO / "deploy" / "systemd" / "waitroom.env.example"
INSTALLED = "/opt/waitroom/bin/waitroom"
"""Where docs/vm.md installs the command; the tests swap in this venv's."""


def exec_start(unit: str) -> str:
    joined = unit.replace("\\\n", " ")
    (line,) = [x for x in joined.splitlines() if x.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=")


def environment_file(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            found[name.strip()] = value.strip()
    return found


def expand(command: str, env: dict[str, str], specifiers: dict[str, str]) -> list[str]:
    """systemd's ExecStart expansion: `%x` specifiers, then `${VAR}` as one word and `$VAR` split
    on whitespace (an empty one gives no word)."""
    for letter, value in specifiers.items():
        command = command.replace(f"%{letter}", value)
    words = []
    for word in shlex.split(command):
        if re.fullmatch(r"\$[A-Za-z_][A-Za-z0-9_]*", word):
            words += env.get(word[1:], "").split()
            continue
        words.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m[1], ""), word))
    return words


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_verifies_the_unit(tmp_path: Path) -> None:
    unit = tmp_path / "waitroom@.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED, str(Path(sys.executable).with_name("waitroom"))))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_the_units_command_line_serves_and_drains(tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert INSTALLED in exec_start(text)
    config = tmp_path / "waitroom.yaml"
    config.write_text(
        "rooms:\n  - {name: shop, match: {path_prefix: /shop}, new_sessions: 1}\nadmin: {drain: 2s}\n"
    )
    upstream = Upstream()
    env = environment_file(ENV_EXAMPLE)
    assert set(env) >= {
        "UPSTREAM",
        "LISTEN_HOST",
        "LISTEN_PORT",
        "ADMIN_PORT",
        "WAITROOM_CONFIG",
        "EXTRA_ARGS",
    }
    port, admin = free_port(), free_port()
    env.update(
        UPSTREAM=upstream.url,
        LISTEN_HOST="127.0.0.1",
        LISTEN_PORT=str(port),
        ADMIN_PORT=str(admin),
        WAITROOM_CONFIG=str(config),
        WAITROOM_SECRET=SECRET,
        WAITROOM_ADMIN_TOKEN="unit-token-0123456789",
    )
    argv = expand(exec_start(text), env, {"S": str(tmp_path / "state"), "i": "a"})
    argv[0] = str(Path(sys.executable).with_name("waitroom"))
    log = tmp_path / "unit.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**_inherited(), **env}, cwd="/"
        )
    try:
        wait_for(lambda: proc.poll() is None and port_open(admin), 30, "the unit's admin port")
        ready = httpx.get(f"http://127.0.0.1:{admin}/readyz", timeout=10)
        assert (ready.status_code, ready.json()["config"]) == (200, str(config))
        assert httpx.get(f"http://127.0.0.1:{port}/shop", timeout=10).status_code == 200
        proc.send_signal(signal.SIGTERM)  # the unit's KillSignal
        assert proc.wait(timeout=30) == 0  # drained within TimeoutStopSec
    finally:
        stop_process(proc)
        upstream.close()
    assert (tmp_path / "state" / "waitroom" / "a").is_dir()  # the instance's own confdir


def _inherited() -> dict[str, str]:
    """What systemd gives a service besides its files: PATH, and here the code under test."""
    keep = ("PATH", "PYTHONPATH", "HOME", "LANG")
    return {k: v for k, v in os.environ.items() if k in keep}
