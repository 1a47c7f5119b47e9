"""`waitroom serve --workers N`: N proxy processes, one event loop each, on one listening port.

    waitroom serve --workers 2 --mode reverse:http://UPSTREAM --listen-port 8080 \
        --set waitroom_config=config/waitroom.yaml

A Python process runs one event loop on one core; a machine with more cores than one proxy can use
runs several. This module is the supervisor: it starts N `waitroom serve` workers (the same command,
without `--workers`), each binding the listening port with SO_REUSEPORT (the kernel spreads new
connections over them), restarts one that dies (logged, with a back-off so a crash loop does not
spin), forwards SIGTERM/SIGINT so every worker drains as one proxy does (drain.py), and exits when
they all have: status 0 when every worker exited 0, else 1.

The wait room's state is shared through the store, so more than one worker needs a shared store
(`store.url: redis://...`): the embedded store is one process's memory, and N workers each holding
a window of their own would admit N times the room's rate. That start is refused with one line.

The supervisor owns the admin port of the config (or of `--set waitroom_admin_port`): each worker
runs its own on a private loopback port, and the supervisor answers the one port for the set:
/healthz itself, /readyz from every worker's (503 once draining), /metrics from the workers'
prometheus-client multiprocess files (PROMETHEUS_MULTIPROC_DIR in a private temporary folder,
removed at exit) so counters add up across workers, restarted ones included, and the admin API by
handing the request to one worker: its changes go to the store, which every worker re-reads
(config/overrides.py). See docs/design.md ("Workers").
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("waitroom.workers")

WORKERS_FLAG = "--workers"
WORKER_ENV = "WAITROOM_WORKER"
"""Set in each worker's environment: its index (0 to N-1)."""
WORKERS_ENV = "WAITROOM_WORKERS"
"""Set in each worker's environment: how many workers the set has (a reload refuses the embedded
store when it is more than 1)."""
CPUS_ENV = "WAITROOM_CPUS"
"""`--workers auto` takes at most this many (the chart sets it from the container's CPU request)."""
FIRST_START = 60.0
"""Longest wait for the first worker's admin port before the others start anyway."""
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 10.0
"""A worker that ran this long before it died is restarted at once (its back-off starts over)."""
ASK_TIMEOUT = 5.0
"""Bound on the supervisor's calls to a worker's private admin port."""
INFO_FAMILIES = ("waitroom_build", "waitroom_config")
"""Info metrics are not kept in the multiprocess files: /metrics takes them from one worker."""


class WorkersError(Exception):
    """A start the supervisor refuses: one line, exit status 1."""


# --- how many -------------------------------------------------------------------------------------


def usable_cpus() -> int:
    """The cores this process may use: its CPU affinity, bounded by the cgroup's CPU quota (a
    container's limit, `docker run --cpus`) and by WAITROOM_CPUS (the chart's CPU request)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cpus = min(cpus, quota)
    wanted = os.environ.get(CPUS_ENV, "").strip()
    if wanted:
        with contextlib.suppress(ValueError):
            cpus = min(cpus, math.ceil(float(wanted)))
    return max(1, cpus)


def _cgroup_quota(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """cgroup v2's `QUOTA PERIOD` ("max 100000": none), rounded up to whole cores."""
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def parse_workers(value: str) -> int:
    if value == "auto":
        return usable_cpus()
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise WorkersError(f"--workers: a number of processes (1 or more) or `auto`; got {value!r}")
    return n


def take_workers(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """`--workers N` / `--workers=N` out of serve's arguments: (its value or None, the rest)."""
    rest: list[str] = []
    value: str | None = None
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == WORKERS_FLAG:
            if i + 1 >= len(args):
                raise WorkersError("--workers: expected a number or `auto`")
            value, i = args[i + 1], i + 2
            continue
        if arg.startswith(WORKERS_FLAG + "="):
            value = arg.partition("=")[2]
        else:
            rest.append(arg)
        i += 1
    return value, rest


# --- what the supervisor reads of the workers' command line -------------------------------------


@dataclass(frozen=True)
class Plan:
    """What the supervisor needs of the command: the config file and the public admin port."""

    argv: list[str]
    config_path: Path
    admin_host: str
    admin_port: int | None


def _set_options(argv: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == "--set" and i + 1 < len(argv) else None
        if value is None and arg.startswith("--set="):
            value = arg.partition("=")[2]
        if value is not None and "=" in value:
            name, _, setting = value.partition("=")
            found[name.strip()] = setting.strip()  # the last one wins, as in mitmproxy
    return found


def _listen_port(argv: Sequence[str]) -> str | None:
    port = None
    for i, arg in enumerate(argv):
        if arg in ("-p", "--listen-port") and i + 1 < len(argv):
            port = argv[i + 1]
        elif arg.startswith("--listen-port="):
            port = arg.partition("=")[2]
    return _set_options(argv).get("listen_port", port)


def plan(argv: Sequence[str], workers: int) -> Plan:
    """Check the command for a set of workers; raise WorkersError with one line if it cannot run."""
    from waitroom.config.fields import ConfigError
    from waitroom.config.schema import DEFAULT_CONFIG, load_config

    if "--no-waitroom" in argv:
        raise WorkersError(
            f"--workers {workers}: --no-waitroom runs the request counter, whose counts live in one "
            "process; run it with one worker"
        )
    if _listen_port(argv) == "0":
        raise WorkersError(f"--workers {workers}: the workers share one port: give --listen-port a number")
    options = _set_options(argv)
    path = Path(options.get("waitroom_config") or DEFAULT_CONFIG)
    try:
        config = load_config(path)
    except ConfigError as e:
        raise WorkersError(str(e).splitlines()[0]) from None
    except OSError as e:
        raise WorkersError(f"{path}: {e.strerror or e}") from None
    if config.store.url.startswith("memory://"):
        raise WorkersError(embedded_store_refusal(path, workers))
    port = config.admin.port
    if (given := options.get("waitroom_admin_port")) not in (None, "", "0"):
        try:
            port = int(given)
        except ValueError:
            raise WorkersError(f"waitroom_admin_port: a port number; got {given!r}") from None
        port = None if port < 0 else port
    host = options.get("waitroom_admin_host") or config.admin.host
    return Plan(list(argv), path, host, port)


def embedded_store_refusal(path: Path | str, workers: int) -> str:
    return (
        f"{path}: store.url: --workers {workers} needs a shared store (redis://...): the embedded store "
        "lives in one process, and each worker would admit the room's whole rate"
    )


# --- the workers ----------------------------------------------------------------------------------


def _death_signal() -> Callable[[], None] | None:
    """What the child runs before exec: SIGTERM (a drain) when the supervisor dies, whatever killed
    it (Linux's PR_SET_PDEATHSIG). libc is looked up here, in the parent: the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_it() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return set_it


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ended(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


@dataclass
class Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    admin_port: int = 0
    started_at: float = 0.0
    failures: int = 0
    """Deaths in a row, each soon after its start: the back-off grows with them."""
    exits: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None


class Supervisor:
    def __init__(self, plan: Plan, workers: int, *, python: str = sys.executable) -> None:
        self.plan = plan
        self.count = workers
        self.python = python
        self.workers = [Worker(i) for i in range(workers)]
        self.draining = False
        self.restarts = 0
        self._dir = Path(tempfile.mkdtemp(prefix="waitroom-workers-"))
        self.metrics_dir = self._dir / "metrics"
        self.metrics_dir.mkdir()
        self._stopped = asyncio.Event()
        self._admin: Any = None
        self._death_signal = _death_signal()

    # --- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._signal, sig)
        try:
            first = self.workers[0]
            await self._start(first)
            if not await self._up(first):
                code = await first.proc.wait() if first.proc is not None else 1
                return 0 if code == 0 and self.draining else (code if code > 0 else 1)
            if not self.draining:
                for worker in self.workers[1:]:
                    await self._start(worker)
                # Up means its admin port answers, which it opens after its listener: a worker that
                # fails here is restarted like any that dies.
                await asyncio.gather(*(self._up(w) for w in self.workers[1:]))
            self._serve_admin()
            log.info("waitroom: %d workers on one port (pids %s)", self.count, self._pids())
            await asyncio.gather(*(self._watch(w) for w in self.workers if w.proc is not None))
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if self._admin is not None:
                self._admin.stop()
            shutil.rmtree(self._dir, ignore_errors=True)
        ok = all(w.exits[-1] == 0 for w in self.workers if w.exits)
        log.info("waitroom: every worker has exited%s", "" if ok else " (some with an error)")
        return 0 if ok else 1

    def _pids(self) -> str:
        return ", ".join(str(w.pid) for w in self.workers if w.pid is not None)

    def _signal(self, sig: int) -> None:
        if not self.draining:
            log.info("waitroom: %s: every worker drains", signal.Signals(sig).name)
        self.draining = True
        self._stopped.set()
        for worker in self.workers:
            if worker.pid is not None and worker.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(sig)

    async def _start(self, worker: Worker) -> None:
        worker.admin_port = _free_port()
        env = dict(os.environ)
        env.update(
            {
                WORKER_ENV: str(worker.index),
                WORKERS_ENV: str(self.count),
                "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            }
        )
        argv = [
            *self.plan.argv,
            # The worker's own admin port, for the supervisor only; the last --set wins.
            "--set",
            "waitroom_admin_host=127.0.0.1",
            "--set",
            f"waitroom_admin_port={worker.admin_port}",
        ]
        worker.proc = await asyncio.create_subprocess_exec(
            self.python,
            "-c",
            "import sys; from waitroom.cli import main; sys.exit(main(['serve', *sys.argv[1:]]))",
            *argv,
            env=env,
            preexec_fn=self._death_signal,
        )
        worker.started_at = time.monotonic()
        if self.draining:  # SIGTERM came while it was being started: it drains with the others
            worker.proc.send_signal(signal.SIGTERM)

    async def _up(self, worker: Worker) -> bool:
        """Wait for a worker's admin port (its config loaded, its listener open); False if it
        exited first. The first worker starts alone: a start error (a bad config, a bad option)
        then shows once and stops the set, instead of N times and a restart loop."""
        assert worker.proc is not None
        deadline = time.monotonic() + FIRST_START
        while time.monotonic() < deadline and not self._stopped.is_set():
            if worker.proc.returncode is not None:
                return False
            if await self._ask(worker, "GET", "/healthz") is not None:
                return True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await worker.proc.wait()
        return not self._stopped.is_set() or worker.proc.returncode is None

    async def _watch(self, worker: Worker) -> None:
        """Wait for the worker to exit; restart it unless the set is draining."""
        while True:
            assert worker.proc is not None
            pid = worker.proc.pid
            code = await worker.proc.wait()
            worker.exits.append(code)
            _mark_dead(self.metrics_dir, pid)
            if self.draining:
                log.info("waitroom: worker %d (pid %d) %s", worker.index, pid, _ended(code))
                return
            lived = time.monotonic() - worker.started_at
            worker.failures = 0 if lived >= STABLE_AFTER else worker.failures + 1
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (worker.failures - 1)) if worker.failures else 0.0
            log.warning(
                "waitroom: worker %d (pid %d) %s after %.1fs; restarting it in %gs",
                worker.index,
                pid,
                _ended(code),
                lived,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopped.wait()
            if self.draining:
                return
            await self._start(worker)
            self.restarts += 1
            log.info("waitroom: worker %d restarted (pid %d)", worker.index, worker.pid or 0)

    # --- the workers' admin ports --------------------------------------------------------------

    async def _ask(
        self,
        worker: Worker,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes] | None:
        """One request to a worker's private admin port; None if it does not answer."""
        from tornado.httpclient import AsyncHTTPClient, HTTPClientError

        if worker.pid is None:
            return None
        client = AsyncHTTPClient()
        try:
            response = await client.fetch(
                f"http://127.0.0.1:{worker.admin_port}{path}",
                method=method,
                body=body if method in ("POST", "PATCH", "PUT") else None,
                headers=headers or {},
                request_timeout=ASK_TIMEOUT,
                connect_timeout=ASK_TIMEOUT,
                raise_error=False,
                allow_nonstandard_methods=True,
            )
        except (OSError, HTTPClientError, TimeoutError):
            return None
        if response.code == 599:  # tornado's own code for no answer
            return None
        return response.code, dict(response.headers.get_all()), response.body or b""

    async def readiness(self) -> tuple[int, dict[str, Any]]:
        answers = await asyncio.gather(*(self._ask(w, "GET", "/readyz") for w in self.workers))
        body: dict[str, Any] = {}
        states = []
        for worker, answer in zip(self.workers, answers, strict=True):
            ready = answer is not None and answer[0] == 200
            states.append({"worker": worker.index, "pid": worker.pid, "ready": ready})
            if answer is not None and (not body or ready):
                with contextlib.suppress(ValueError):
                    body = json.loads(answer[2])
        ready = not self.draining and any(s["ready"] for s in states)
        body = {**body, "ready": ready, "workers": states}
        if self.draining:
            body["draining"] = True
        return (200 if ready else 503), body

    async def metrics(self) -> bytes:
        """Every worker refreshes its live gauges (its own /metrics), then the multiprocess files
        are added up; the info metrics come from one worker's answer."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        answers = await asyncio.gather(*(self._ask(w, "GET", "/metrics") for w in self.workers))
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.metrics_dir))  # type: ignore[no-untyped-call]
        text = generate_latest(registry)
        info = next((_info_lines(a[2]) for a in answers if a is not None and a[0] == 200), b"")
        own = (
            "# HELP waitroom_workers Worker processes running now (waitroom serve --workers).\n"
            "# TYPE waitroom_workers gauge\n"
            f"waitroom_workers {sum(w.pid is not None for w in self.workers)}\n"
            "# HELP waitroom_worker_restarts_total Workers the supervisor restarted after they died.\n"
            "# TYPE waitroom_worker_restarts_total counter\n"
            f"waitroom_worker_restarts_total {self.restarts}\n"
        ).encode()
        return info + own + text

    async def forward(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """The admin API, handed to the first worker that answers: what it changes is in the store,
        which every worker re-reads (config/overrides.py)."""
        for worker in self.workers:
            answer = await self._ask(worker, method, path, body, headers)
            if answer is not None:
                return answer
        return 503, {"Content-Type": "application/json"}, b'{"error": "no worker answers"}\n'

    def _serve_admin(self) -> None:
        if self.plan.admin_port is None:
            return
        from tornado.httpserver import HTTPServer

        self._admin = HTTPServer(_application(self))
        try:
            self._admin.listen(self.plan.admin_port, self.plan.admin_host)
        except OSError as e:
            host, port = self.plan.admin_host, self.plan.admin_port
            log.error("waitroom: admin port %s:%d: %s", host, port, e.strerror)
            self._admin = None
            return
        log.info(
            "waitroom: admin port on http://%s:%d for %d workers",
            self.plan.admin_host,
            self.plan.admin_port,
            self.count,
        )


def _info_lines(text: bytes) -> bytes:
    """The lines of the info metrics (HELP, TYPE and samples) in a worker's /metrics text."""
    names = tuple(f"{name}_info" for name in INFO_FAMILIES)
    kept = []
    for line in text.splitlines(keepends=True):
        words = line.split()
        name = words[2] if line.startswith(b"#") and len(words) > 2 else line.split(b"{")[0].split(b" ")[0]
        if name.decode(errors="replace") in names:
            kept.append(line)
    return b"".join(kept)


def _mark_dead(path: Path, pid: int) -> None:
    """A dead worker's live gauges leave the sums (its counters stay: they are history)."""
    from prometheus_client.multiprocess import mark_process_dead

    with contextlib.suppress(OSError):
        mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


def _application(supervisor: Supervisor) -> Any:
    from tornado.web import Application, RequestHandler

    class Healthz(RequestHandler):
        def get(self) -> None:
            self.set_header("Content-Type", "text/plain")
            self.finish("ok\n")

    class Readyz(RequestHandler):
        async def get(self) -> None:
            status, body = await supervisor.readiness()
            self.set_status(status)
            self.set_header("Content-Type", "application/json")
            self.set_header("Cache-Control", "no-store")
            self.finish(json.dumps(body, indent=1) + "\n")

    class Metrics(RequestHandler):
        async def get(self) -> None:
            from prometheus_client import CONTENT_TYPE_LATEST

            self.set_header("Content-Type", CONTENT_TYPE_LATEST)
            self.finish(await supervisor.metrics())

    class Forward(RequestHandler):
        SUPPORTED_METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE")

        async def _forward(self) -> None:
            passed = ("authorization", "content-type")
            headers = {k: v for k, v in self.request.headers.get_all() if k.lower() in passed}
            status, answer_headers, body = await supervisor.forward(
                self.request.method or "GET", self.request.uri or "/", self.request.body, headers
            )
            self.set_status(status)
            for name in ("Content-Type", "WWW-Authenticate", "Cache-Control"):
                if name in answer_headers:
                    self.set_header(name, answer_headers[name])
            self.finish(body)

        get = post = patch = put = delete = _forward

    return Application(
        [(r"/healthz", Healthz), (r"/readyz", Readyz), (r"/metrics", Metrics), (r".*", Forward)],
        log_function=lambda handler: None,  # the workers log the admin API's changes
    )


# --- entry ----------------------------------------------------------------------------------------


def main(argv: Sequence[str], workers: int) -> int:
    """Run the set until SIGTERM/SIGINT; 1 (and one line) when it cannot start."""
    try:
        the_plan = plan(argv, workers)
    except WorkersError as e:
        print(f"waitroom serve: {e}", file=sys.stderr, flush=True)
        return 1
    # As mitmproxy's own lines, which the workers print to the same output.
    logging.basicConfig(
        level=logging.INFO,
        format="[%(asctime)s.%(msecs)03d] %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
    )
    return asyncio.run(Supervisor(the_plan, workers).run())


@contextlib.contextmanager
def as_worker() -> Iterator[None]:
    """Run one worker of the set. Every listener mitmproxy opens binds with SO_REUSEPORT, so the N
    workers bind the same port and the kernel spreads new connections over them: mitmproxy opens
    its listener with `asyncio.start_server(handler, host, port)` and takes no socket option, so the
    function is wrapped for the worker's lifetime (tests/ops/test_workers.py shows the connections
    spread over both workers). prometheus-client's multiprocess files cannot forget a labelled series
    (a room a reload removed keeps its last value until the worker restarts); it warns at each such
    removal, which the scrape makes, so the warning is silenced here and the limit documented."""
    original = asyncio.start_server

    async def start_server(*args: Any, **kwargs: Any) -> asyncio.Server:
        kwargs.setdefault("reuse_port", True)
        return await original(*args, **kwargs)

    asyncio.start_server = start_server
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Removal of labels has not been implemented", UserWarning)
            yield
    finally:
        asyncio.start_server = original
