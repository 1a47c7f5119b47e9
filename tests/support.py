"""Real processes for the tests: a local upstream, mitmdump, redis-server (single and cluster).

Every wait is bounded and waits for an event (a port that answers, a PING), never a fixed sleep.
Redis servers run on free ports in their own folders; the machine's own Redis is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from waitroom.rooms.decider import Decider, Decision
from waitroom.web.request import RequestFacts, no_cookies

REPO = Path(__file__).resolve().parents[1]
MITMDUMP = str(Path(sys.executable).with_name("mitmdump"))
WAITROOM = str(Path(sys.executable).with_name("waitroom"))
WAITROOM_SCRIPT = "addons/waitroom.py"
ENTRY_POINTS = ("mitmdump", "serve")
"""How a proxy is started: `mitmdump -s addons/waitroom.py`, or `waitroom serve` (the lean master)."""


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    """Ask a process to stop, and kill it if it has not within 10 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    at: float


@dataclass
class Upstream:
    """A real HTTP server that answers 200 to everything and records what reached it; under
    /release it adds `Waitroom-Command: release`, as a service does when a visitor is done."""

    name: str = "upstream"
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    slow: float = 0.0
    """Requests under /slow take this long to answer: a slow service, for drain tests."""

    def __post_init__(self) -> None:
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with lock:
                    outer.seen.append(Seen(self.command, self.path, dict(self.headers), time.monotonic()))
                if self.path.startswith("/slow"):
                    time.sleep(outer.slow)  # the service's own work, not test synchronisation
                body = f"{outer.name} {self.command} {self.path}\n".encode()
                self.send_response(200)
                if self.path.startswith("/release"):  # the service says the visitor is done
                    self.send_header("Waitroom-Command", "release")
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Mitmdump:
    """A real proxy in reverse mode with the waitroom addon: mitmdump, or `waitroom serve` (entry),
    with the same options. Under serve, the wait room is built in (-s addons/waitroom.py is left
    out of the scripts), and a proxy without it runs `--no-waitroom`."""

    def __init__(
        self,
        upstream: str,
        workdir: Path,
        config: Path | None,
        *,
        env: dict[str, str] | None = None,
        extra: list[str] | None = None,
        scripts: list[str] | None = None,
        entry: str = "mitmdump",
    ) -> None:
        self.port = free_port()
        self.config_path = config
        self.entry = entry
        self.log_path = workdir / f"{entry}-{self.port}.log"
        scripts = scripts or [WAITROOM_SCRIPT]
        if entry == "serve":
            command = [WAITROOM, "serve"] + ([] if WAITROOM_SCRIPT in scripts else ["--no-waitroom"])
            scripts = [s for s in scripts if s != WAITROOM_SCRIPT]
        else:
            assert entry == "mitmdump", entry
            command = [MITMDUMP]
        args = [
            *command,
            "--mode",
            f"reverse:{upstream}",
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(self.port),
            "--set",
            "connection_strategy=lazy",
            "--set",
            f"confdir={workdir / 'mitmproxy'}",
        ]
        for script in scripts:
            args += ["-s", str(REPO / script)]
        if config is not None:
            args += ["--set", f"waitroom_config={config}"]
        args += extra or []
        full_env = {k: v for k, v in os.environ.items() if k != "WAITROOM_SECRET"}
        full_env.update(env or {})
        self.args = args
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        # A session of its own: stop() ends the proxy and any workers it started (`--workers`).
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env=full_env, cwd=REPO, start_new_session=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> Mitmdump:
        """Until the proxy serves: its port open, and (unless -q silenced it) its "listening at" line
        printed. mitmdump binds its port while it still loads its scripts, so an open port alone
        does not say the config was read (a test that rewrites it would race the first load)."""
        quiet = "-q" in self.args

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.entry} exited with {self.proc.returncode}:\n{self.log_text()}")
            return port_open(self.port) and (quiet or " listening at " in self.log_text())

        wait_for(ready, timeout, f"{self.entry} on :{self.port}")
        return self

    def wait_exit(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        """End the proxy now, and its workers: SIGKILL, no drain. A test over has nothing left to
        answer, and a drain waits a second for connections that may still come (addon/drain.py
        IDLE_GRACE): a second per proxy was a sixth of the suite. A test of the drain sends
        SIGTERM itself and waits for the exit (tests/ops/test_shutdown.py)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._log.close()


class RedisServer:
    """A real redis-server on a free port in its own folder; restartable on the same port."""

    def __init__(self, workdir: Path, *, extra: list[str] | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: run `make system-deps` (apt-get install redis-server)"
            )
        self.binary = binary
        self.port = free_port()
        self.dir = workdir / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.dir / "redis.log"),
            *self.extra,
        ]

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for(self._pings, 20, f"redis-server on :{self.port}")

    def _pings(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: {(self.dir / 'redis.log').read_text(errors='replace')}")
        with contextlib.suppress(redis.RedisError, OSError):
            return bool(self.client().ping())
        return self._answers_with_auth()

    def _answers_with_auth(self) -> bool:
        """A server started with --requirepass answers NOAUTH: up, but locked."""
        try:
            self.client().ping()
        except redis.AuthenticationError:
            return True
        except (redis.RedisError, OSError) as e:
            return "NOAUTH" in str(e) or "Authentication required" in str(e)
        return True

    def client(self, password: str | None = None) -> redis.Redis:
        # No retries: redis-py 6 retries failed connections with backoff by default, which turns
        # every probe of a server that is starting (or locked by a password) into seconds.
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=password,
            socket_timeout=2,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )

    def client_with(self, password: str) -> redis.Redis:
        return self.client(password)

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        stop_process(self.proc)


class RedisCluster:
    """Three masters joined with `redis-cli --cluster create`."""

    def __init__(self, workdir: Path) -> None:
        self.nodes: list[RedisServer] = []
        for _ in range(3):
            port = _cluster_port()
            node_dir = workdir / f"cluster-{port}"
            node_dir.mkdir(parents=True, exist_ok=True)
            server = RedisServer.__new__(RedisServer)
            server.binary = shutil.which("redis-server") or "redis-server"
            server.port, server.dir, server.proc = port, node_dir, None
            server.extra = ["--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf")]
            server.start()
            self.nodes.append(server)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *[f"127.0.0.1:{n.port}" for n in self.nodes],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_for(self._ok, 30, "cluster_state:ok", interval=0.1)

    def _ok(self) -> bool:
        return all(b"cluster_state:ok" in n.client().execute_command("CLUSTER", "INFO") for n in self.nodes)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 < 65536 and not port_open(port + 10000):
            with contextlib.suppress(OSError), socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
                return port
    raise RuntimeError("no free port pair for a cluster node")


@contextlib.contextmanager
def running(*things: Mitmdump | RedisServer | RedisCluster | Upstream) -> Iterator[None]:
    try:
        yield
    finally:
        for thing in things:
            if isinstance(thing, Upstream):
                thing.close()
            else:
                thing.stop()


class RedisSentinel:
    """A master, a replica and `sentinels` sentinels watching them as `mymaster` (a majority
    decides a failover)."""

    def __init__(self, workdir: Path, password: str | None = None, sentinels: int = 1) -> None:
        auth = ["--requirepass", password, "--masterauth", password] if password else []
        self.master = RedisServer(workdir, extra=auth)
        self.replica = RedisServer(workdir, extra=[*auth, "--replicaof", "127.0.0.1", str(self.master.port)])
        self.ports = [free_port() for _ in range(sentinels)]
        self.port = self.ports[0]
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs = []
        binary = shutil.which("redis-server") or "redis-server"
        for port in self.ports:
            home = workdir / f"sentinel-{port}"
            home.mkdir(parents=True, exist_ok=True)
            lines = [
                f"port {port}",
                "bind 127.0.0.1",
                f"dir {home}",
                f"sentinel monitor mymaster 127.0.0.1 {self.master.port} {sentinels // 2 + 1}",
                "sentinel down-after-milliseconds mymaster 1000",
                "sentinel failover-timeout mymaster 5000",
            ]
            if password:
                lines.append(f"sentinel auth-pass mymaster {password}")
            (home / "sentinel.conf").write_text("\n".join(lines) + "\n")
            log = open(home / "sentinel.log", "wb")  # noqa: SIM115 - closed in stop()
            self._logs.append(log)
            self.procs.append(
                subprocess.Popen(
                    [binary, str(home / "sentinel.conf"), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
                )
            )
        wait_for(lambda: self._master_port() == self.master.port, 20, "the sentinels to know their master")

    def _master_port(self) -> int | None:
        with contextlib.suppress(redis.RedisError, OSError):
            client = redis.Redis(
                host="127.0.0.1", port=self.port, socket_timeout=1, retry=Retry(NoBackoff(), 0)
            )
            host_port = client.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster")
            return int(host_port[1]) if host_port else None
        return None

    def url(self, password: str | None = None) -> str:
        auth = f":{password}@" if password else ""
        return f"redis+sentinel://{auth}" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + "/mymaster/0"

    def primary(self) -> RedisServer:
        """The data node the sentinels name as master now."""
        return self.replica if self._master_port() == self.replica.port else self.master

    def fail_over(self) -> None:
        """Kill the master; wait until the sentinels have promoted the replica."""
        self.master.kill()
        wait_for(
            lambda: self._master_port() == self.replica.port, 30, "the sentinels' failover", interval=0.2
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
        for log in self._logs:
            log.close()
        self.replica.stop()
        self.master.stop()


def flash_crowd(urls: list[str], visitors: int, path: str, timeout: float = 30) -> list[int]:
    """`visitors` new visitors at the same instant, spread over `urls`: every connection is opened
    first, then every request is sent at once; each visitor sends one request with no cookie.
    Returns each visitor's status code (0: no answer within `timeout`)."""
    return asyncio.run(_flash_crowd(urls, visitors, path, bound=timeout))


async def _flash_crowd(urls: list[str], visitors: int, path: str, *, bound: float) -> list[int]:
    async def connect(i: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        port = int(urls[i % len(urls)].rsplit(":", 1)[1])
        return await asyncio.open_connection("127.0.0.1", port)

    async def visit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        try:
            status_line = await reader.readline()
            return int(status_line.split()[1]) if status_line.startswith(b"HTTP/1.1 ") else 0
        except (OSError, ValueError, IndexError):
            return 0
        finally:
            writer.close()

    async with asyncio.timeout(bound):
        connections = await asyncio.gather(*(connect(i) for i in range(visitors)))
        request = f"GET {path} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n".encode()
        for _, writer in connections:
            writer.write(request)
        return list(await asyncio.gather(*(visit(r, w) for r, w in connections)))


class DelayRelay:
    """bench/relay.py in front of a port: Redis `delay_ms` of round trip away, on loopback."""

    def __init__(self, target_port: int, delay_ms: int) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.relay",
                "--target",
                f"127.0.0.1:{target_port}",
                "--delay-ms",
                str(delay_ms),
            ],
            stdout=subprocess.PIPE,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()  # "listening on PORT", or EOF if it failed
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"the relay did not start: {line!r}")
        self.port = int(line.split()[-1])

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        stop_process(self.proc)


async def visit(
    decider: Decider,
    path: str = "/",
    cookies: Callable[[str], Sequence[str]] | None = None,
    *,
    host: str = "h",
    user_agent: str = "",
) -> Decision:
    """One request to a room decider, classified as the gate does (no mitmproxy, no proxy)."""
    headers = {"user-agent": user_agent}
    facts = RequestFacts(
        host, path, "GET", "127.0.0.1", lambda name: headers.get(name.lower()), 0.0, cookies or no_cookies
    )
    return await decider.decide(facts, decider.router.route(host, path))
