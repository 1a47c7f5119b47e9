"""`waitroom serve`'s own command line, against real processes: what it refuses (one line, exit 1),
what `--help` and `--options` list, logging like mitmdump, users' own `-s` scripts, and SIGTERM.

The rest of the end-to-end suite runs against it as well as mitmdump (tests/conftest.py)."""

from __future__ import annotations

import resource
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from mitmproxy import optmanager

from tests.conftest import SECRET
from tests.support import MITMDUMP, REPO, WAITROOM, Mitmdump, Upstream, free_port, running, wait_for
from waitroom import serve as serve_module
from waitroom import version_line

pytestmark = pytest.mark.e2e

CONFIG = (
    "rooms:\n  - {name: shop, match: {path_prefix: /shop}, new_sessions: 1, window: 60s, block_for: 30s}\n"
)


def serve(*args: str, tmp_path: Path, mode: bool = False) -> subprocess.CompletedProcess[str]:
    """Run `waitroom serve ARGS` to its end (each case here stops before serving)."""
    return subprocess.run(
        [
            WAITROOM,
            "serve",
            *(["--mode", "reverse:http://127.0.0.1:9"] if mode else []),
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            "0",
            "--set",
            f"confdir={tmp_path}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def serving(upstream: Upstream, tmp_path: Path, config: str, extra: list[str]) -> Mitmdump:
    """`waitroom serve` with this config in front of `upstream` (not yet ready)."""
    path = tmp_path / "waitroom.yaml"
    path.write_text(config)
    return Mitmdump(upstream.url, tmp_path, path, env={"WAITROOM_SECRET": SECRET}, extra=extra, entry="serve")


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--set", "nosuch=1"], "unknown option(s): nosuch"),
        (["--set", "body_size_limit=lots"], "body_size_limit"),
        (["--set", "connection_strategy=sometimes"], "connection_strategy: must be one of eager, lazy"),
        (["--set", "waitroom_header_timeout=0"], "waitroom_header_timeout: must be from 1 to 600"),
        (["--set", "waitroom_config=/nonexistent/waitroom.yaml"], "/nonexistent/waitroom.yaml: cannot read"),
    ],
    ids=["unknown-flag", "unknown-option", "bad-size", "bad-choice", "out-of-bounds", "missing-config"],
)
def test_a_refused_start_is_one_line_and_status_1(tmp_path: Path, args: list[str], words: str) -> None:
    result = serve(*args, tmp_path=tmp_path)
    assert result.returncode == 1, result
    out = lines(result)
    assert len(out) == 1, out
    assert words in out[0], out
    assert "Traceback" not in result.stderr


def test_a_config_that_does_not_validate_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rooms:\n  - {name: shop, new_sessions: 3, window: soon}\n")
    result = serve("--set", f"waitroom_config={bad}", tmp_path=tmp_path)
    assert result.returncode == 1
    out = lines(result)
    assert len(out) == 1, out
    assert "rooms[0].window: invalid duration 'soon'" in out[0]


def test_without_a_mode_it_refuses_to_start(tmp_path: Path) -> None:
    """Without --mode reverse:URL the proxy would answer every visitor with the wait page, forever."""
    result = serve(tmp_path=tmp_path)
    assert result.returncode == 1, result
    (line,) = lines(result)
    assert "waitroom serve: --mode reverse:URL is required" in line


def test_version_names_waitroom_then_mitmproxy(tmp_path: Path) -> None:
    result = serve("--version", tmp_path=tmp_path)
    assert result.returncode == 0, result
    first, second = result.stdout.splitlines()[:2]
    assert first == version_line()
    assert second.startswith("Mitmproxy: ")


def test_help_lists_what_it_accepts(tmp_path: Path) -> None:
    result = serve("--help", tmp_path=tmp_path)
    assert result.returncode == 0, result  # mitmproxy's run would make it 1 (see serve._HelpShown)
    for flag in (
        "--mode",
        "--listen-host",
        "--listen-port",
        "--set",
        "--scripts, -s",
        "-q",
        "--flow-detail",
        "--no-waitroom",
    ):
        assert flag in result.stdout, flag


def test_options_are_the_lean_masters_and_the_wait_rooms(tmp_path: Path) -> None:
    """Every option the loaded addons define is there (the wait room's, mitmproxy's core, TLS,
    block, the dumper's); none of the addons serve leaves out, whose options mitmdump has."""
    result = serve("--options", tmp_path=tmp_path)
    assert result.returncode == 0, result
    assert "\nconnection_strategy: lazy\n" in result.stdout  # the default under serve, as --options says
    assert serve_module.ServeMaster.__init__  # pins the private attribute it sets: mitmproxy < 13
    assert "_default" in optmanager._Option.__slots__
    names = {line.split(":")[0] for line in result.stdout.splitlines() if line and not line[0].isspace()}
    names.discard("#")
    for name in ("waitroom_config", "waitroom_header_timeout", "block_global", "keep_host_header"):
        assert name in names, name
    for name in ("body_size_limit", "connection_strategy", "certs", "flow_detail", "tcp_timeout"):
        assert name in names, name
    for left_out in (
        "server_replay",
        "client_replay",
        "save_stream_file",
        "anticache",
        "map_remote",
        "rfile",
    ):
        assert left_out not in names, left_out


def test_the_counter_alone_runs_without_the_wait_room(tmp_path: Path) -> None:
    """`--no-waitroom -s addons/counter.py`: the image's counter mode."""
    proxy = Mitmdump("http://127.0.0.1:9", tmp_path, None, scripts=["addons/counter.py"], entry="serve")
    with running(proxy):
        proxy.wait_ready()
        with httpx.Client(base_url=proxy.url, timeout=10) as c:
            assert c.put("/a").status_code == 200
            assert c.get("/").json() == {"total": 1}
        assert "waitroom:" not in proxy.log_text()


def test_flows_are_logged_like_mitmdump_and_users_scripts_load(tmp_path: Path) -> None:
    """--flow-detail 1 prints a line per flow (mitmproxy's dumper); a user's own `-s` addon runs
    beside the wait room, after it."""
    script = tmp_path / "stamp.py"
    script.write_text(
        "from mitmproxy import http\n\n\n"
        "def response(flow: http.HTTPFlow) -> None:\n"
        "    flow.response.headers['X-Stamp'] = 'mine'\n"
    )
    upstream = Upstream()
    proxy = serving(upstream, tmp_path, CONFIG, ["-s", str(script), "--flow-detail", "1"])
    with running(proxy, upstream):
        proxy.wait_ready()
        with httpx.Client(base_url=proxy.url, timeout=10) as c:
            first = c.get("/shop/item")
            waiting = httpx.get(proxy.url + "/shop/item", headers={"Accept": "application/json"}, timeout=10)
        assert first.status_code == 200
        assert first.headers["X-Stamp"] == "mine"
        assert waiting.status_code == 503
        assert waiting.headers["X-Stamp"] == "mine"
        assert "GET http://127.0.0.1" in proxy.log_text()
        assert "<< 200 OK" in proxy.log_text()


@pytest.mark.parametrize("quiet", [False, True], ids=["logged", "quiet"])
def test_sigterm_drains_to_status_0(tmp_path: Path, quiet: bool) -> None:
    """As mitmdump: SIGTERM starts the wait room's drain, and the exit status is 0; -q prints neither
    flows nor the drain's info lines."""
    upstream = Upstream()
    proxy = serving(upstream, tmp_path, CONFIG + "admin: {drain: 5s}\n", ["-q"] if quiet else [])
    with running(proxy, upstream):
        proxy.wait_ready()
        assert httpx.get(proxy.url + "/other", timeout=10).status_code == 200
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.wait_exit(30) == 0
        log = proxy.log_text()
    if quiet:  # (the config's line comes before -q is applied, as in mitmdump)
        assert "GET http://" not in log, log
        assert "SIGTERM" not in log, log
    else:
        assert "GET http://" in log, log
        assert "waitroom: drained; exiting" in log, log


BOUNDS_LINE = "waitroom: client connections: at most 64 open, request headers within 30s and 65536 bytes"
"""What either entry point starts with under `ulimit -n 256`: the defaults the wait room declares
(waitroom_max_connections 0 = half the open-file limit less a reserve, the header timeout and size)."""


def _low_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def _start(command: list[str], tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    log = open(tmp_path / f"{port}.log", "wb")  # noqa: SIM115 - the process holds it
    return subprocess.Popen(
        [
            *command,
            "--mode",
            "reverse:http://127.0.0.1:9",
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(port),
            "--set",
            f"confdir={tmp_path}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        preexec_fn=_low_file_limit,
    )


def test_serve_applies_every_default_the_wait_room_declares(tmp_path: Path) -> None:
    """Issue 27's N1: mitmproxy calls an addon added in code only for the options that were set,
    so under `waitroom serve` the connection limit was never applied (thousands of "Too many open
    files" tracebacks under a connection flood). With no options at all, serve now starts with the
    same bounds as mitmdump, and holds them."""
    ports = {"serve": free_port(), "mitmdump": free_port()}
    procs = {
        "serve": _start([WAITROOM, "serve"], tmp_path, ports["serve"]),
        "mitmdump": _start([MITMDUMP, "-s", "addons/waitroom.py"], tmp_path, ports["mitmdump"]),
    }
    try:
        for name, port in ports.items():
            wait_for(
                lambda p=port: BOUNDS_LINE in (tmp_path / f"{p}.log").read_text(), 30, f"{name}'s bounds"
            )
        port = ports["serve"]
        # The connection limit: 64 held open, the next ones closed at once.
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(70)]
        try:
            closed: set[socket.socket] = set()
            deadline = time.monotonic() + 10
            while len(closed) < 70 - 64 and time.monotonic() < deadline:
                open_ = [s for s in held if s not in closed]
                readable, _, _ = select.select(open_, [], [], max(0.0, deadline - time.monotonic()))
                closed.update(s for s in readable if s.recv(1) == b"")
            assert len(closed) == 70 - 64  # the others wait for their headers (30 s)
        finally:
            for s in held:
                s.close()
        # The header size: a header section over 65536 bytes is answered 431.
        big = httpx.get(f"http://127.0.0.1:{port}/", headers={"X-Big": "a" * 70_000}, timeout=10)
        assert big.status_code == 431
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=20)
