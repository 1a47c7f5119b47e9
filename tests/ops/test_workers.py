"""`waitroom serve --workers N` (workers.py): real supervisors, real workers, a real redis-server.

One set of two workers is started once and asked everything in order: both workers accept on the
one port, the admin port adds their metrics up, a killed worker is restarted (and logged) while its
counts stay in the sums, and SIGTERM drains every worker before the supervisor exits 0. The rest
are the refusals and the arithmetic of `auto`, without processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import SECRET
from tests.support import Mitmdump, RedisServer, Upstream, free_port, wait_for
from waitroom import serve, workers

TOKEN = "admin-token-0123456789"
CONNECTIONS = 16
"""Connections held open at once: the chance that the kernel gives every one to the same worker
of two is 2**-15."""


def _config(redis_url: str | None, admin_port: int) -> str:
    store = f'store: {{url: "{redis_url}", timeout: 1s}}\n' if redis_url else ""
    return (
        f"{store}admin: {{port: {admin_port}, shutdown_delay: 0s, drain: 2s}}\n"
        "rooms:\n  - {name: shop, match: {path_prefix: /}, new_sessions: 100000, window: 1m}\n"
    )


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _sample(metrics: str, name: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sorted(int(p) for p in found)


def _established_on(port: int) -> dict[str, int]:
    """Socket inode → the local port, for this machine's established IPv4 TCP connections."""
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and fields[3] == "01":  # ESTABLISHED
            found[fields[9]] = local_port
    return found


def _sockets_of(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if match := re.fullmatch(r"socket:\[(\d+)\]", target):
            inodes.add(match.group(1))
    return inodes


def _private(pid: int, path: str) -> dict[str, object]:
    """One worker's own answer, from its private admin port (named on its command line)."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    port = next(a.split("=", 1)[1] for a in argv if a.startswith("waitroom_admin_port="))
    ask = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(ask, timeout=5) as answer:
        found: dict[str, object] = json.loads(answer.read())
        return found


def _max_active(pid: int) -> object:
    """The room's `max_active` as one worker sees it."""
    return _private(pid, "/admin/rooms/shop")["max_active"]


def _request(sock: socket.socket) -> int:
    sock.sendall(b"GET /x HTTP/1.1\r\nHost: shop.test\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(65536)
        assert chunk, "the proxy closed the connection"
        head += chunk
    return int(head.split(b" ", 2)[1])


@pytest.mark.e2e
def test_two_workers_share_a_port_add_up_restart_and_drain_together(
    tmp_path: Path, redis_server: RedisServer, upstream: Upstream
) -> None:
    admin = free_port()
    config = tmp_path / "waitroom.yaml"
    config.write_text(_config(redis_server.url, admin))
    proxy = Mitmdump(
        upstream.url,
        tmp_path,
        config,
        env={"WAITROOM_SECRET": SECRET, "WAITROOM_ADMIN_TOKEN": TOKEN},
        extra=["--workers", "2"],
        entry="serve",
    )
    try:
        wait_for(lambda: "2 workers on one port" in proxy.log_text(), 30, "two workers")
        proxy.wait_ready()
        first = _children(proxy.proc.pid)
        assert len(first) == 2, proxy.log_text()

        # Both workers accept on the one port: the connections held open are spread over both.
        connections = [
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5) for _ in range(CONNECTIONS)
        ]
        try:
            assert [_request(s) for s in connections] == [200] * CONNECTIONS
            established = _established_on(proxy.port)
            per_worker = Counter({pid: len(_sockets_of(pid) & established.keys()) for pid in first})
            assert sum(per_worker.values()) == CONNECTIONS
            assert all(per_worker[pid] > 0 for pid in first), per_worker
        finally:
            for s in connections:
                s.close()

        # One admin port for the set; its /metrics adds up the requests both workers decided.
        status, ready = _get(f"http://127.0.0.1:{admin}/readyz")
        assert status == 200
        assert '"workers"' in ready
        metrics = _get(f"http://127.0.0.1:{admin}/metrics")[1]
        assert _sample(metrics, "waitroom_room_requests_total") == CONNECTIONS
        assert _sample(metrics, "waitroom_workers") == 2
        assert _sample(metrics, "waitroom_ready") == 1  # livemin: every live worker is ready
        assert "waitroom_build_info{" in metrics

        # The admin API is handed to a worker; the change is in the store, which both re-read.
        patch = urllib.request.Request(
            f"http://127.0.0.1:{admin}/admin/rooms/shop",
            data=b'{"max_active": 7}',
            method="PATCH",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(patch, timeout=5) as answer:
            assert answer.status == 200
        # A config change reaches every worker too: each watches the file.
        config.write_text(
            _config(redis_server.url, admin).replace("new_sessions: 100000", "new_sessions: 90000")
        )
        sha256 = hashlib.sha256(config.read_bytes()).hexdigest()
        wait_for(lambda: all(_max_active(pid) == 7 for pid in first), 10, "the change on every worker")
        wait_for(
            lambda: all(_private(pid, "/readyz")["config_sha256"] == sha256 for pid in first), 10, "reload"
        )

        # A killed worker is restarted and logged; what it counted stays in the sums.
        os.kill(first[0], signal.SIGKILL)
        wait_for(
            lambda: "worker 0 restarted" in proxy.log_text() or "worker 1 restarted" in proxy.log_text(),
            30,
            "restart",
        )
        assert re.search(rf"worker \d \(pid {first[0]}\) was killed by SIGKILL", proxy.log_text())
        wait_for(lambda: len(_children(proxy.proc.pid)) == 2, 30, "two workers again")
        second = _children(proxy.proc.pid)
        assert first[0] not in second
        assert first[1] in second
        wait_for(lambda: _get(f"http://127.0.0.1:{admin}/readyz")[1].count('"ready": true') == 3, 30, "ready")
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
                assert _request(s) == 200
        metrics = _get(f"http://127.0.0.1:{admin}/metrics")[1]
        assert _sample(metrics, "waitroom_room_requests_total") == CONNECTIONS + 4
        assert _sample(metrics, "waitroom_worker_restarts_total") == 1

        # SIGTERM: every worker drains (the existing drain), then the supervisor exits 0.
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.wait_exit(30) == 0
        text = proxy.log_text()
        assert text.count("SIGTERM: not ready") == 2, text
        assert text.count("drained; exiting") == 2, text
        assert "every worker has exited\n" in text
        assert not any(Path(f"/proc/{pid}").exists() for pid in second)
    finally:
        proxy.stop()


def test_the_embedded_store_with_two_workers_is_refused_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "waitroom.yaml"
    config.write_text(_config(None, free_port()))
    args = ["--workers", "2", "--mode", "reverse:http://127.0.0.1:9", "--set", f"waitroom_config={config}"]
    assert serve.main(args) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"waitroom serve: {workers.embedded_store_refusal(config, 2)}\n"
    assert "store.url: --workers 2 needs a shared store" in err


def test_a_bad_workers_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert serve.main(["--workers", "none", "--mode", "reverse:http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err == "waitroom serve: --workers: a number of processes (1 or more) or `auto`; got 'none'\n"


def test_take_workers_leaves_the_rest_in_order() -> None:
    assert workers.take_workers(["-q", "--workers", "3", "--set", "a=1"]) == ("3", ["-q", "--set", "a=1"])
    assert workers.take_workers(["--workers=auto", "-p", "8080"]) == ("auto", ["-p", "8080"])
    assert workers.take_workers(["-p", "8080"]) == (None, ["-p", "8080"])


def test_auto_is_the_usable_cores_bounded_by_the_quota_and_the_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(workers.CPUS_ENV, raising=False)
    cores = len(os.sched_getaffinity(0))
    assert 1 <= workers.parse_workers("auto") <= cores
    monkeypatch.setenv(workers.CPUS_ENV, "0.5")  # the chart's CPU request, rounded up
    assert workers.parse_workers("auto") == 1
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert workers._cgroup_quota(cpu_max) == 2
    cpu_max.write_text("max 100000\n")
    assert workers._cgroup_quota(cpu_max) is None
    assert workers.parse_workers("3") == 3
    with pytest.raises(workers.WorkersError):
        workers.parse_workers("0")
