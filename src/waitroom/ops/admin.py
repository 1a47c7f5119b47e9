"""The admin port: /healthz, /readyz, /metrics and the token-protected admin API.

It runs on mitmproxy's own event loop (tornado, which mitmproxy already depends on), never on the
proxied port. The admin API is off unless the environment variable named by `admin.token_env`
(default WAITROOM_ADMIN_TOKEN) holds a token; callers send `Authorization: Bearer <token>`, checked
in constant time. Changes go to the store, so every replica sharing it obeys them (see overrides.py),
and each one is logged — without the token.

    GET   /healthz                          200 while the process runs
    GET   /readyz                           200 when the config is loaded and not draining, else 503;
                                            reports the store's health and the failure policy in force,
                                            the version, the config's sha256 and a refused reload
    GET   /metrics                          Prometheus text format
    GET   /admin/status                     rooms and rules with live state
    GET   /admin/rooms[/NAME]               rooms with live state
    POST  /admin/rooms/NAME/ACTION          open | queue-all | normal | unblock | close | reset
                                            (reset: {"knobs": [...]} for some only)
    PATCH /admin/rooms/NAME                 {"max_active": 500, "retry_after": "10s", ...}: any knob of
                                            config.overrides.ROOM_KNOBS, judged with the whole room
    GET   /admin/rules[/NAME]               rate-limit rules with their knobs in force
    PATCH /admin/rules/NAME                 {"limit": 20, "shadow": true}: RULE_KNOBS
    POST  /admin/rules/NAME/reset           back to the config's values ({"knobs": [...]}: some)
"""

from __future__ import annotations

import asyncio
import logging

from tornado.httpserver import HTTPServer
from tornado.web import Application, RequestHandler

from waitroom.ops.handlers import (
    MAX_BODY,
    Healthz,
    Metrics,
    NotFound,
    Readyz,
    Room,
    RoomAction,
    Rooms,
    Rule,
    RuleAction,
    Rules,
    Status,
)
from waitroom.ops.views import Operated

log = logging.getLogger(__name__)


def application(operated: Operated, token: str | None) -> Application:
    """The admin port's routes; AdminServer serves them (the tests serve them on a socket of their own)."""
    settings = {"operated": operated, "token": token}
    return Application(
        [
            (r"/healthz", Healthz, settings),
            (r"/readyz", Readyz, settings),
            (r"/metrics", Metrics, settings),
            (r"/admin/status", Status, settings),
            (r"/admin/rooms", Rooms, settings),
            (r"/admin/rooms/([^/]+)", Room, settings),
            (r"/admin/rooms/([^/]+)/([^/]+)", RoomAction, settings),
            (r"/admin/rules", Rules, settings),
            (r"/admin/rules/([^/]+)", Rule, settings),
            (r"/admin/rules/([^/]+)/([^/]+)", RuleAction, settings),
        ],
        log_function=_log_request,
        default_handler_class=NotFound,
        default_handler_args=settings,
    )


class AdminServer:
    def __init__(self, operated: Operated, token: str | None) -> None:
        self.operated = operated
        self.token = token
        self._server: HTTPServer | None = None

    def start(self, host: str, port: int) -> None:
        self._server = HTTPServer(application(self.operated, self.token), max_body_size=MAX_BODY * 64)
        self._server.listen(port, host)
        log.info(
            "waitroom: admin port on http://%s:%d (admin API %s)", host, port, "on" if self.token else "off"
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            await asyncio.wait_for(self._server.close_all_connections(), 5)
            self._server = None


def _log_request(handler: RequestHandler) -> None:
    # Probes and scrapes arrive every few seconds: only failures are worth a line.
    if handler.get_status() >= 500:
        log.warning(
            "waitroom admin: %s %s → %d", handler.request.method, handler.request.path, handler.get_status()
        )
