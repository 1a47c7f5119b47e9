"""The mitmproxy addon: options, config (re)loading, and the request/response hooks.

Everything that decides lives in `decide`; everything that answers lives in `responses`. This class
only translates between mitmproxy flows and those plain values.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from mitmproxy import ctx, exceptions, http

from waitroom import config as config_module
from waitroom.claims import ClaimVerifier
from waitroom.config import Config, ConfigError, StoreConfig, load_config
from waitroom.decide import Decider, Decision, Outcome, cookie_name
from waitroom.identity import client_is_https
from waitroom.limits import LimitDecision, LimitOutcome, RateLimiter, RequestFacts
from waitroom.responses import (
    DEFAULT_TEMPLATE,
    POLL_HEADER,
    Answer,
    Template,
    TemplateError,
    admitted_poll_answer,
    limited_answer,
    rate_limit_headers,
    set_cookie,
    wait_answer,
)
from waitroom.routing import normalize_host, normalize_path
from waitroom.sessions import SecretError, SessionCodec, keys_from_environment
from waitroom.store import Clock, Store, open_store

log = logging.getLogger(__name__)

METADATA_KEY = "waitroom"
"""flow.metadata[METADATA_KEY]: the decision, for logs, flow files and replay."""
_SET_COOKIE_KEY = "waitroom.set_cookie"
_EXTRA_HEADERS_KEY = "waitroom.response_headers"


@dataclass(frozen=True, slots=True)
class _Loaded:
    """Everything built from one config file; swapped whole, so a request sees one config."""

    path: Path
    config: Config
    decider: Decider
    limiter: RateLimiter
    templates: dict[str, Template]


class WaitRoom:
    def __init__(
        self,
        default_config: Path = config_module.DEFAULT_CONFIG,
        clock: Clock = time.time,
    ) -> None:
        self.default_config = default_config
        self.clock = clock
        self.loaded: _Loaded | None = None
        self._store: Store | None = None
        self._store_config: StoreConfig | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._ephemeral_key: bytes | None = None
        self._running = False

    def load(self, loader: object) -> None:
        loader.add_option(  # type: ignore[attr-defined]
            "waitroom_config",
            str,
            "",
            """
            Path of the waitroom config file (YAML): rooms, bypass prefixes, session cookie, store.
            Empty means the shipped config/waitroom.yaml. A file that does not validate stops the
            start with one line naming the field; at run time it is refused and the running config
            stays.
            """,
        )

    def configure(self, updated: set[str]) -> None:
        if not updated & {"waitroom_config", "keep_host_header", "mode"}:
            return
        path = Path(ctx.options.waitroom_config or self.default_config).expanduser()
        try:
            self.loaded = self._build(path)
        except ConfigError as e:
            message = f"waitroom: {e}"
            if self._running:
                raise exceptions.OptionsError(message) from None  # mitmproxy keeps the old value
            # At start an exception would print a traceback; one error line makes mitmproxy's
            # errorcheck stop the process with exit status 1 instead.
            log.error(message)
            return
        config = self.loaded.config
        log.info(
            "waitroom: %s: %d room(s), store %s",
            path,
            len(config.rooms),
            config.store.url.split("@")[-1],  # never log credentials
        )

    def running(self) -> None:
        self._running = True

    async def done(self) -> None:
        if self._store is not None:
            await self._store.close()

    def _build(self, path: Path) -> _Loaded:
        config = load_config(path)
        templates = {}
        for i, room in enumerate(config.rooms):
            try:
                templates[room.name] = Template.load(room.template or DEFAULT_TEMPLATE)
            except TemplateError as e:
                raise ConfigError(f"{path}: rooms[{i}].template: {e}") from None
        self._check_host_matching(path, config)
        codec = SessionCodec(self._signing_keys(path, config), config.session.ttl)
        verifier = ClaimVerifier(config.jwt) if config.jwt is not None else None
        self._check_rate_limits(path, config, verifier)
        store = self._store_for(config)
        return _Loaded(
            path,
            config,
            Decider(config, store, codec, self.clock),
            RateLimiter(config, store, verifier, self.clock),
            templates,
        )

    def _check_rate_limits(self, path: Path, config: Config, verifier: ClaimVerifier | None) -> None:
        for i, rule in enumerate(config.rate_limits):
            for field_name, key in (("key", rule.key), ("fallback", rule.fallback)):
                if key is not None and key.startswith("jwt:") and verifier is None:
                    raise ConfigError(f"{path}: rate_limits[{i}].{field_name}: {key} needs a `jwt:` section")

    def _check_host_matching(self, path: Path, config: Config) -> None:
        reverse = any(str(mode).startswith("reverse:") for mode in ctx.options.mode)
        if not reverse or getattr(ctx.options, "keep_host_header", False):
            return
        for i, room in enumerate(config.rooms):
            if room.match.host is not None:
                raise ConfigError(
                    f"{path}: rooms[{i}].match.host: in reverse mode mitmproxy replaces the Host "
                    "header with the upstream's; add --set keep_host_header=true"
                )

    def _signing_keys(self, path: Path, config: Config) -> list[bytes]:
        try:
            keys = keys_from_environment()
        except SecretError as e:
            raise ConfigError(str(e)) from None
        if keys is not None:
            return keys
        if not config.store.url.startswith("memory://"):
            raise ConfigError(
                f"{path}: store.url: a shared store means several replicas, which must share one "
                "signing key: set WAITROOM_SECRET (e.g. `openssl rand -hex 32`)"
            )
        if self._ephemeral_key is None:
            log.warning(
                "waitroom: WAITROOM_SECRET is not set; using a random key, so sessions end "
                "when this process stops"
            )
            self._ephemeral_key = secrets.token_bytes(32)
        return [self._ephemeral_key]

    def _store_for(self, config: Config) -> Store:
        # Keep the store across reloads that do not change it: the embedded one holds the windows.
        wanted = config.store
        if self._store is not None and self._store_config is not None:
            same = (
                wanted.url == self._store_config.url
                if wanted.url.startswith("memory://")
                else wanted == self._store_config
            )
            if same:
                return self._store
            self._close_later(self._store)
        self._store = open_store(wanted, self.clock)
        self._store_config = wanted
        return self._store

    def _close_later(self, store: Store) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (offline tools): nothing is connected to close
            return
        task = loop.create_task(store.close())
        self._closing.add(task)  # keep a reference until it is done
        task.add_done_callback(self._closing.discard)

    # --- hooks on the request path -------------------------------------------------------

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        loaded = self.loaded
        if loaded is None:  # only between a failed start and the exit it causes
            flow.response = http.Response.make(503, b"waitroom is not configured\n")
            return
        req = flow.request
        host, path = normalize_host(req.host_header or req.host), normalize_path(req.path)
        try:
            if loaded.decider.router.bypassed(path):
                return
            if loaded.limiter.rules:
                limit = await loaded.limiter.decide(
                    RequestFacts(host, path, req.method, _peer(flow), req.headers.get)
                )
                if self._limit(flow, limit):
                    return  # refused or rerouted: no room admission is spent on it
            if req.method == "OPTIONS":
                return  # CORS preflights carry no cookies: queueing them would break the real request
            decision = await loaded.decider.decide(host, path, req.cookies.get_all)
        except Exception:  # a bug must not become a traceback for the visitor or a hang
            log.exception("waitroom: decision failed; forwarding %s %s", req.method, req.path)
            return
        self._act(flow, loaded, decision)

    def _limit(self, flow: http.HTTPFlow, limit: LimitDecision) -> bool:
        """Apply a rate-limit decision; True when the request is answered or sent elsewhere."""
        if limit.outcome is LimitOutcome.NONE:
            return False
        rule, result = limit.rule, limit.result
        flow.metadata.setdefault(METADATA_KEY, {})["rate_limit"] = {
            "outcome": limit.outcome.value,
            "rule": rule.name if rule else None,
            "shadow_limited": list(limit.shadow_limited),
        }
        if limit.shadow_limited:
            log.info(
                "waitroom: shadow rate limit %s would refuse %s",
                ",".join(limit.shadow_limited),
                flow.request.path,
            )
        if rule is None or result is None:
            return False
        if limit.outcome is LimitOutcome.LIMITED:
            flow.response = _response(
                limited_answer(rule=rule.name, limit=rule.limit, per=rule.per, retry_after=limit.retry_after)
            )
            return True
        if limit.outcome is LimitOutcome.REROUTED and limit.upstream:
            _reroute(flow, limit.upstream)
            return True
        headers = rate_limit_headers(rule.name, rule.limit, rule.per, result.remaining, result.reset_after)
        flow.metadata[_EXTRA_HEADERS_KEY] = list(headers.items())
        return False

    def _act(self, flow: http.HTTPFlow, loaded: _Loaded, decision: Decision) -> None:
        room = decision.room
        if room is None:
            return
        flow.metadata[METADATA_KEY] = {"room": room.name, "outcome": decision.outcome.value}
        req = flow.request
        if decision.cookie is not None:
            secure = {"true": True, "false": False}.get(loaded.config.session.secure)
            if secure is None:
                secure = client_is_https(
                    loaded.config.client_ip,
                    tls=flow.client_conn.tls_established,
                    forwarded_proto=req.headers.get("X-Forwarded-Proto"),
                )
            flow.metadata[_SET_COOKIE_KEY] = set_cookie(
                cookie_name(loaded.config, room), decision.cookie, loaded.decider.codec.ttl, secure
            )
        if decision.outcome is Outcome.WAITING:
            answer = wait_answer(
                template=loaded.templates[room.name],
                room=room.name,
                status=room.status,
                retry_after=room.retry_after_seconds,
                blocked_for=decision.blocked_for,
                accept=req.headers.get("Accept", ""),
            )
            flow.response = _response(answer)
        elif req.method == "GET" and POLL_HEADER in req.headers:
            # The wait page asking whether it may come in: answer here, the upstream never sees it.
            flow.response = _response(admitted_poll_answer(room.name))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        cookie = flow.metadata.pop(_SET_COOKIE_KEY, None)
        extra = flow.metadata.pop(_EXTRA_HEADERS_KEY, ())
        if flow.response is None:
            return
        if cookie is not None:
            flow.response.headers.add("Set-Cookie", cookie)
        for name, value in extra:
            flow.response.headers[name] = value


def _reroute(flow: http.HTTPFlow, upstream: str) -> None:
    """Send the request to another upstream (`action: upstream:URL`), keeping its path and query;
    a path in URL is put in front of it. The Host header follows unless keep_host_header is set."""
    target = urlsplit(upstream)
    req = flow.request
    original_host = req.host_header
    req.scheme = target.scheme
    req.host = target.hostname or req.host
    req.port = target.port or (443 if target.scheme == "https" else 80)
    if target.path not in ("", "/"):
        req.path = target.path.rstrip("/") + req.path
    if getattr(ctx.options, "keep_host_header", False) and original_host is not None:
        req.host_header = original_host


def _response(answer: Answer) -> http.Response:
    return http.Response.make(answer.status, answer.body, answer.headers)


def _peer(flow: http.HTTPFlow) -> str:
    peer = flow.client_conn.peername
    return str(peer[0]) if peer else ""
