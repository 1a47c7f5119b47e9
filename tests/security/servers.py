"""Real upstreams for the adversarial suite: nginx and a Werkzeug app, each saying which route
served a request, so a test asserts on what the upstream did, not on the proxy's view.

Both mark a page inside the room `/shop` with ROOM and anything else with OUT; nginx also has a
`shop.example` virtual host, which answers VHOST-SHOP. Loopback only; every wait is bounded.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tests.support import free_port, port_open, stop_process, wait_for


class Nginx:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if binary is None:
            raise RuntimeError("nginx is not installed: run `make system-deps` (apt-get install nginx)")
        self.port = free_port()
        root = workdir / f"nginx-{self.port}"
        root.mkdir(parents=True)
        echo = "uri=$uri raw=$request_uri host=$host"
        conf = root / "nginx.conf"
        conf.write_text(
            f"""
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {root}/body; proxy_temp_path {root}/proxy; fastcgi_temp_path {root}/fcgi;
  uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;
  default_type text/plain;
  server {{
    listen 127.0.0.1:{self.port} default_server;
    server_name _;
    location ~ ^/shop(/|$) {{ return 200 "nginx ROOM {echo}\\n"; }}
    location / {{ return 200 "nginx OUT {echo}\\n"; }}
  }}
  server {{
    listen 127.0.0.1:{self.port};
    server_name shop.example;
    location / {{ return 200 "nginx VHOST-SHOP {echo}\\n"; }}
  }}
}}
"""
        )
        self._log = open(root / "out.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [binary, "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(root / 'error.log').read_text(errors='replace')}")
            return port_open(self.port)

        wait_for(up, 15, f"nginx on :{self.port}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


class WerkzeugApp:
    """Flask's routing without Flask: `/shop` and `/shop/<path>` are the room's pages."""

    def __init__(self) -> None:
        urls = Map(
            [
                Rule("/shop", endpoint="ROOM"),
                Rule("/shop/<path:rest>", endpoint="ROOM"),
                Rule("/", endpoint="OUT"),
                Rule("/<path:rest>", endpoint="OUT"),
            ]
        )

        def app(environ: dict[str, Any], start_response: Any) -> Any:
            request = Request(environ)
            try:
                endpoint, _ = urls.bind_to_environ(environ).match()
            except HTTPException as e:
                return e(environ, start_response)
            body = f"werkzeug {endpoint} path={request.path} raw={environ.get('RAW_URI', '')}\n"
            return Response(body)(environ, start_response)

        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def exchange(port: int, raw: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes (no client-side normalisation of the target); read one answer until the
    server closes or Content-Length is met. (status, headers lower-cased, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        if not data:
            return 0, {}, b""
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "-1"))
        while length < 0 or len(body) < length:
            try:
                chunk = conn.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            body += chunk
        return status, headers, body


def get(
    port: int, target: str | bytes, host: str | bytes = "x", extra: bytes = b"", version: bytes = b"HTTP/1.1"
) -> tuple[int, dict[str, str], bytes]:
    target_bytes = target.encode("latin-1") if isinstance(target, str) else target
    host_bytes = host.encode() if isinstance(host, str) else host
    host_line = b"Host: " + host_bytes + b"\r\n" if host_bytes else b""
    raw = b"GET " + target_bytes + b" " + version + b"\r\n" + host_line + extra + b"Connection: close\r\n\r\n"
    return exchange(port, raw)
