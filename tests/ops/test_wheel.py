"""The installed waitroom, outside a checkout: the wheel is built from the source, installed into a
fresh venv, and run from a folder that is not the repository, with no config given. It serves the
shipped wait page by the shipped example config, `waitroom example-config` prints that config, and
`mitmdump -s "$(waitroom --addon-path)"` loads the wait room.

The fresh venv gets only the wheel; its dependencies come from the test venv through a `.pth`
line. A folder added by a `.pth` line is not itself a site folder, so the test venv's editable
install of waitroom (its own `.pth`) cannot leak in; tests/unit/test_packaging.py checks that every
runtime import is a declared dependency, which this shortcut cannot. (A full isolated install from
the network takes half a minute: not in `make test`.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.support import REPO, free_port, port_open, stop_process, wait_for

pytestmark = pytest.mark.e2e


def _run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel built from this checkout; returns its bin folder."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy: building in the checkout would leave build/ and egg-info there
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = root / "dist"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, source)
    (wheel,) = dist.glob("waitroom-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in (
        "waitroom/web/pages/waitroom.html",
        "waitroom/config/waitroom.yaml",
        "waitroom/addon/script.py",
    ):
        assert shipped in names, f"{shipped} is not in the wheel"

    venv = root / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel)
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    (Path(purelib) / "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def _env(home: Path) -> dict[str, str]:
    """No PYTHONPATH (it points at the checkout's src/) and no WAITROOM_*: as on a new machine."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("WAITROOM_")}
    return {**env, "HOME": str(home)}


def test_the_installed_wheel_serves_a_wait_page_outside_a_checkout(installed: Path, tmp_path: Path) -> None:
    where = _run(installed / "python", "-c", "import waitroom; print(waitroom.__file__)", env=_env(tmp_path))
    assert where.stdout.startswith(str(installed.parent)), where.stdout  # the wheel's, not the checkout's
    example = _run(installed / "waitroom", "example-config", env=_env(tmp_path), cwd=tmp_path)
    assert example.stdout == (REPO / "config" / "waitroom.yaml").read_text()

    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                installed / "waitroom",
                "serve",
                "--mode",
                "reverse:http://127.0.0.1:9",
                "--listen-host",
                "127.0.0.1",
                "--listen-port",
                str(port),
                "--set",
                f"confdir={tmp_path / 'mitmproxy'}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(tmp_path),
            cwd=tmp_path,
        )
    try:
        wait_for(lambda: proc.poll() is None and port_open(port), 30, "the installed serve")
        assert "site-packages/waitroom/config/waitroom.yaml (sha256:" in log.read_text()
        # The example config's demo room admits 5 new visitors a minute; the 6th gets the page.
        page = "text/html,application/xhtml+xml"
        url = f"http://127.0.0.1:{port}/"
        answers = [httpx.get(url, headers={"Accept": page}, timeout=10) for _ in range(6)]
        assert [a.status_code for a in answers[:5]] == [502] * 5  # admitted: on to the (absent) upstream
        waiting = answers[5]
        assert waiting.status_code == 503
        assert waiting.headers["Content-Type"].startswith("text/html")
        assert "<html" in waiting.text.lower()
        german = httpx.get(url, headers={"Accept": page, "Accept-Language": "de"}, timeout=10)
        assert german.status_code == 503
        assert 'lang="de"' in german.text  # the strings files came with the wheel
        json = httpx.get(url, headers={"Accept": "application/json"}, timeout=10)
        assert (json.status_code, json.json()["status"]) == (503, "waiting")
    finally:
        stop_process(proc)


def test_mitmdump_loads_the_installed_addon(installed: Path, tmp_path: Path) -> None:
    script = _run(installed / "waitroom", "--addon-path", env=_env(tmp_path)).stdout.strip()
    assert script.startswith(str(installed.parent))
    port = free_port()
    log = tmp_path / "mitmdump.log"
    mitmdump = (
        "from mitmproxy.tools.main import mitmdump; mitmdump()"  # the fresh venv has no scripts of its deps
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                installed / "python",
                "-c",
                mitmdump,
                "-s",
                script,
                "--mode",
                "reverse:http://127.0.0.1:9",
                "--listen-host",
                "127.0.0.1",
                "--listen-port",
                str(port),
                "--set",
                "connection_strategy=lazy",
                "--set",
                f"confdir={tmp_path / 'mitmproxy'}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(tmp_path),
            cwd=tmp_path,
        )
    try:
        wait_for(lambda: proc.poll() is None and port_open(port), 30, "mitmdump")
        wait_for(lambda: "site-packages/waitroom/config/waitroom.yaml" in log.read_text(), 10, "the config")
    finally:
        stop_process(proc)
