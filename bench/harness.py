"""Real processes for the benchmarks and the load test: free ports, nginx, redis-server, mitmdump,
HAProxy, the Redis latency relay, wrk with its output parsed, and the proxy's own metrics read from
its admin port. Loopback only; every wait and every load bounded in time."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on :{port} within {timeout:.0f}s")


def need(command: str) -> str:
    path = shutil.which(command) or (
        f"/usr/sbin/{command}" if Path(f"/usr/sbin/{command}").exists() else None
    )
    if path is None:
        raise SystemExit(f"{command} is not installed: run `make system-deps` (Debian package {command})")
    return path


@contextmanager
def process(
    args: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    port: int | None = None,
    what: str = "",
    *,
    graceful: bool = True,
) -> Iterator[subprocess.Popen[bytes]]:
    """`graceful`: stopped by SIGTERM (and waited for); else the process and every process it
    started are killed at once (a proxy whose figures are taken has nothing left to drain, and its
    drain waits a second for connections that may still come)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=not graceful
        )
        try:
            if port is not None:
                wait_for_port(port, proc, what or args[0])
            yield proc
        finally:
            if proc.poll() is None and not graceful:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


@contextmanager
def nginx(work: Path, body: str = "ok\n", access_log: Path | None = None) -> Iterator[int]:
    """A fast upstream: nginx answering every request with a small 200; with `access_log`, the
    arrival time of each request (epoch seconds, ms resolution) and its `X-Bench-Visit` header
    (`-` without one), one request per line."""
    port = free_port()
    root = work / f"nginx-{port}"
    root.mkdir(parents=True)
    conf = root / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  log_format arrival '$msec $http_x_bench_visit';
  access_log {f"{access_log} arrival" if access_log else "off"};
  client_body_temp_path {root}/body; proxy_temp_path {root}/proxy; fastcgi_temp_path {root}/fcgi;
  uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{ default_type text/plain; return 200 "{body.strip()}\\n"; }}
  }}
}}
"""
    )
    with process(
        [need("nginx"), "-c", str(conf), "-e", str(root / "error.log")], root / "out.log", port=port
    ):
        yield port


@contextmanager
def redis_server(work: Path) -> Iterator[int]:
    port = free_port()
    folder = work / f"redis-{port}"
    folder.mkdir(parents=True)
    args = [
        need("redis-server"),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    with process([*args, "--dir", str(folder)], folder / "redis.log", port=port, what="redis-server"):
        yield port


@contextmanager
def relay(target_port: int, delay_ms: int, work: Path) -> Iterator[int]:
    """Redis `delay_ms` away: bench/relay.py in front of 127.0.0.1:`target_port`; yields its port."""
    port = free_port()
    args = [sys.executable, "-m", "bench.relay", "--target", f"127.0.0.1:{target_port}"]
    args += ["--delay-ms", str(delay_ms), "--listen-port", str(port)]
    with process(args, work / f"relay-{port}.log", port=port, what="bench/relay.py"):
        yield port


WAITROOM_SCRIPT = "addons/waitroom.py"


def proxy_command(entry: str, scripts: list[str]) -> list[str]:
    """The command that starts a proxy with these `-s` scripts: `mitmdump`, or `waitroom serve`
    (the wait room built in; `--no-waitroom` when the scripts do not include it)."""
    if entry == "mitmdump":
        command = [str(BIN / "mitmdump")]
    elif entry == "serve":
        command = [str(BIN / "waitroom"), "serve"] + ([] if WAITROOM_SCRIPT in scripts else ["--no-waitroom"])
    else:
        raise ValueError(f"unknown entry point {entry!r}")
    for script in scripts:
        if not (entry == "serve" and script == WAITROOM_SCRIPT):
            command += ["-s", script]
    return command


@contextmanager
def mitmdump(
    work: Path,
    upstream_port: int,
    scripts: list[str],
    options: list[str],
    env: dict[str, str] | None = None,
    profile: Path | None = None,
    entry: str = "mitmdump",
) -> Iterator[int]:
    """A proxy in reverse mode with the documented flags, quiet (no per-flow output) as in production:
    mitmdump, or `waitroom serve` (entry); with `profile`, under cProfile (written there when it
    stops)."""
    port = free_port()
    prefix = [sys.executable, "-m", "cProfile", "-o", str(profile)] if profile else []
    args = [
        *prefix,
        *proxy_command(entry, scripts),
        "--mode",
        f"reverse:http://127.0.0.1:{upstream_port}",
        "--listen-host",
        "127.0.0.1",
        "--listen-port",
        str(port),
        "--set",
        "connection_strategy=lazy",
        "--set",
        f"confdir={work / 'mitmproxy'}",
        "-q",
    ]
    args += options
    # Under cProfile the profile is written at a graceful exit.
    with process(args, work / f"mitmdump-{port}.log", env=env, port=port, what=entry, graceful=bool(profile)):
        yield port


@dataclass
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    non_2xx: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"unexpected latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(
    url: str,
    seconds: float,
    *,
    connections: int = 16,
    threads: int = 1,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    work: Path,
) -> WrkResult:
    """Run wrk for `seconds` (bounded: killed after seconds + 30) and parse its summary."""
    script = work / f"wrk-{method}.lua"
    script.write_text(f'wrk.method = "{method}"\n')
    args = [
        need("wrk"),
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--latency",
    ]
    args += ["-s", str(script)]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run(
        [*args, url], capture_output=True, text=True, timeout=seconds + 30, check=True
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx_match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(requests, rps, p50, p99, errors, int(non_2xx_match.group(1)) if non_2xx_match else 0)


def scrape(admin: int | None) -> str:
    """The proxy's Prometheus metrics from its admin port ("" without one)."""
    return httpx.get(f"http://127.0.0.1:{admin}/metrics", timeout=10).text if admin else ""


def counter(text: str, name: str, only: str = "") -> float:
    """A Prometheus counter summed over its series whose line matches the regular expression `only`
    (0 when the proxy has no such counter)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith((f"{name}_total{{", f"{name}_total ")) and (not only or re.search(only, line)):
            total += float(line.rsplit(" ", 1)[1])
    return total


def histogram_count(text: str, name: str) -> float:
    """A Prometheus histogram's count of observations, summed over its series."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((f"{name}_count{{", f"{name}_count "))
    )


def gauge(text: str, name: str) -> float | None:
    """An unlabelled Prometheus gauge, or None when the proxy has none."""
    for line in text.splitlines():
        if line.startswith((f"{name} ", f"{name}{{")):
            return float(line.rsplit(" ", 1)[1])
    return None


def ready(admin: int, work: Path, timeout: float = 15) -> None:
    """The config loaded and the admin port answers: a proxy that refused its config exits instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{admin}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in work.glob("mitmdump-*.log"))
    raise SystemExit(f"bench: the proxy did not become ready:\n{logs}")
