"""The running proxy as an operator sees it, on two `waitroom serve` replicas that share one Redis
and one config file (each with its own admin port through `--set waitroom_admin_port`): the version
and the config's hash in the startup line, /readyz and /metrics, and capacity changed at run time on
one replica obeyed by the other. (Refused reloads: test_operations.py, on both entry points.)"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import SECRET
from tests.support import REPO, Mitmdump, RedisServer, Upstream, free_port, running, wait_for
from waitroom import __version__

pytestmark = pytest.mark.e2e

TOKEN = "visibility-admin-token-0123456789"


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("waitroom")), *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env={**os.environ, "WAITROOM_ADMIN_TOKEN": TOKEN},
    )


def test_two_replicas_on_one_file_show_what_they_run_and_share_capacity_changes(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    upstream = Upstream()
    config = tmp_path / "waitroom.yaml"
    config.write_text(
        f"store: {{url: '{redis.url}', key_prefix: vis}}\n"
        "admin: {host: 127.0.0.1}\n"  # no port in the file: each replica sets its own
        "rooms:\n"
        "  - {name: shop, match: {path_prefix: /shop}, new_sessions: 100, window: 60s, retry_after: 2s}\n"
    )
    sha = hashlib.sha256(config.read_bytes()).hexdigest()
    env = {"WAITROOM_SECRET": SECRET, "WAITROOM_ADMIN_TOKEN": TOKEN}
    admin = {name: free_port() for name in ("a", "b")}
    replicas = {}
    for name, port in admin.items():
        workdir = tmp_path / name
        workdir.mkdir()
        extra = ["--set", f"waitroom_admin_port={port}"]
        replicas[name] = Mitmdump(upstream.url, workdir, config, env=env, extra=extra, entry="serve")
    a, b = replicas["a"], replicas["b"]
    url = {name: f"http://127.0.0.1:{port}" for name, port in admin.items()}
    with running(redis, upstream, a, b):
        for name, proxy in replicas.items():
            proxy.wait_ready()
            wait_for(lambda u=url[name]: _ready(u), 30, f"replica {name}'s admin port")

        # What runs: the startup line, /readyz, /metrics.
        assert f"waitroom {__version__}: {config} (sha256:{sha[:12]}): 1 room, 0 rate limits" in a.log_text()
        ready = httpx.get(url["a"] + "/readyz", timeout=10).json()
        assert (ready["version"], ready["config_sha256"], ready["config_reload"]) == (
            __version__,
            sha,
            {"state": "ok"},
        )
        metrics = httpx.get(url["b"] + "/metrics", timeout=10).text
        assert f'version="{__version__}"' in metrics
        assert f'waitroom_config_info{{sha256="{sha}"}} 1.0' in metrics
        assert "_created" not in metrics

        # A cap and a retry interval set on replica a, through the command line as documented...
        changed = _cli("room", "shop", "set", "max_active=1", "retry_after=7s", "--url", url["a"])
        assert changed.returncode == 0, changed.stderr
        assert "0/1 (config none)" in changed.stdout  # INSIDE: none inside yet, the cap, the file's
        assert "retry_after=7s (config 2s)" in changed.stdout
        # ... reach replica b within the overrides refresh.
        wait_for(
            lambda: (
                httpx.get(url["b"] + "/readyz", timeout=5).status_code == 200
                and _room(url["b"])["max_active"] == 1
            ),
            10,
            "replica b to take the cap",
        )
        first = httpx.get(b.url + "/shop/", timeout=10)
        assert first.status_code == 200  # the one place inside
        second = httpx.get(b.url + "/shop/", headers={"Accept": "application/json"}, timeout=10)
        assert second.status_code == 503  # the cap holds, though the window has room
        assert second.headers["Retry-After"] == "7"
        third = httpx.get(a.url + "/shop/", headers={"Accept": "application/json"}, timeout=10)
        assert third.status_code == 503  # on both replicas: the count is in Redis
        # An inverted event or a cap of 0: one clear 400, nothing changed.
        bad = _cli("room", "shop", "set", "max_active=0", "--url", url["b"])
        assert (bad.returncode, "max_active must be an integer from 1" in bad.stderr) == (1, True)
        lifted = _cli("room", "shop", "reset", "max_active", "--url", url["b"])
        assert lifted.returncode == 0, lifted.stderr
        wait_for(lambda: _room(url["a"])["max_active"] is None, 10, "replica a to lift the cap")
        assert _room(url["a"])["retry_after"] == "7s"  # the other knob stays


def _room(admin: str) -> dict[str, object]:
    answer = httpx.get(admin + "/admin/rooms/shop", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    room: dict[str, object] = answer.json()
    return room
