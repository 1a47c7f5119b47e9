"""The config file: pydantic models, YAML loading, and errors that fit on one line.

Every section of the file that docs/design.md names is declared here; each field's docstring is its
line in docs/config.md (generated: `make docs`). Unknown keys are errors (a typo must
not silently turn a protection off), and every error names the field it is about.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self
from urllib.parse import quote, urlsplit, urlunsplit

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from waitroom.durations import parse_duration
from waitroom.target import canonical_prefix

if TYPE_CHECKING:
    from waitroom.claims import ClaimVerifier
    from waitroom.responses import Template

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "waitroom.yaml"
"""The shipped example config; used when the `waitroom_config` option is empty."""

Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written in the file as ``500ms``, ``60s``, ``30m``, ``2h`` or a number of seconds."""

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
"""Room and rule names end up in cookie names, Redis keys and metric labels: keep them plain."""

_COOKIE_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")  # an RFC 6265 token


class ConfigError(Exception):
    """A config that cannot be used. `str()` is one line naming the field and the problem."""


class _Model(BaseModel):
    # Attribute docstrings become the fields' descriptions: docs/config.md is generated from them
    # (python -m waitroom.configdoc, `make docs`).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


MAX_CONFIG_BYTES = 1024 * 1024
"""A config file is a few KB; a larger one is refused before it is parsed."""


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _path_prefix(value: str) -> str:
    """Prefixes are compared with the canonical decoded path (target.py), so one that is not in
    that form (`/a/../shop`, `//shop`, `/%73hop`) could never match: refused, naming the fix."""
    if not value.startswith("/"):
        raise ValueError(f"must start with '/' (got {_short(value)})")
    if "?" in value or "#" in value:
        raise ValueError(f"must be a path without query or fragment (got {_short(value)})")
    return canonical_prefix(value)


PathPrefix = Annotated[str, BeforeValidator(lambda v: _path_prefix(str(v)))]


def _host(value: str | None) -> str | None:
    if value is None:
        return None
    host = str(value).strip().lower().rstrip(".")
    if not host or any(c in host for c in "/ ?#@"):
        raise ValueError(f"must be a host name such as shop.example.com (got {value!r})")
    return host


Host = Annotated[str | None, BeforeValidator(_host)]


class StoreErrorPolicy(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    LOCAL = "local"


class BreakerConfig(_Model):
    failures: int = Field(3, ge=1, le=1000)
    """Consecutive store failures that open the circuit."""
    cool_down: Duration = Field(5.0, le=3600)
    """How long an open circuit skips the store before a probe (a `PING`) asks it again."""


LiveReplicas = Callable[[], int | None]
"""The ready replicas that cluster discovery counted right now, or None when it does not know
(what StoreConfig.local_replicas takes; the decisions ask it when the store fails)."""


def unknown_replicas() -> int | None:
    return None


class StoreConfig(_Model):
    url: str = "memory://"
    """Where state lives: `memory://`, `redis://`, `rediss://`, `redis+sentinel://`, `redis+cluster://`."""
    timeout: Duration = Field(0.25, le=10)
    """How long Redis may take to answer one call, from when it is sent, on a proxy free to read the
    answer (store/guard.py judges that). Past it the store is failing and `on_error` decides."""
    max_wait: Duration = Field(2.0, le=60)
    """The most a request waits for the store in all, including time the proxy's own event loop was
    too busy to read the answer, and time it queued before asking. Past it the proxy is saturated
    and the request is shed (wait answer, or the rule's refusal), never admitted."""
    on_error: StoreErrorPolicy = StoreErrorPolicy.LOCAL
    """What decides when the store fails."""
    key_prefix: str = Field("waitroom", pattern=r"^[A-Za-z0-9_:.-]{1,64}$")
    """Prefix of every Redis key, so several deployments can share one Redis."""
    replicas: int = Field(1, ge=1, le=10_000)
    """How many proxy replicas share the store; `on_error: local` divides limits by it (with
    `cluster.discover_replicas`, only until the live count is known)."""
    breaker: BreakerConfig = BreakerConfig()
    password_env: str = Field("WAITROOM_REDIS_PASSWORD", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Environment variable holding the Redis password for a `url` that carries none, so that the
    config file (a ConfigMap) holds no secret."""

    def url_with_password(self, environ: Mapping[str, str] = os.environ) -> str:
        """`url`, with the password from `password_env` when it is set and the URL has no credentials."""
        password = environ.get(self.password_env)
        parts = urlsplit(self.url)
        if not password or self.url.startswith("memory://") or "@" in parts.netloc:
            return self.url
        return urlunsplit(parts._replace(netloc=f":{quote(password, safe='')}@{parts.netloc}"))

    def local_replicas(self, live: int | None) -> int:
        """What `on_error: local` divides limits by: the ready replicas that cluster discovery
        counted when it knows them (see kube.py), else the fixed `replicas`; never less than 1."""
        return max(1, live) if live else self.replicas

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        schemes = ("memory://", "redis://", "rediss://", "redis+sentinel://", "redis+cluster://")
        if not url.startswith(schemes):
            raise ValueError(f"unsupported store URL {url!r} (use one of: {', '.join(schemes)})")
        return url

    @field_validator("timeout", "max_wait")
    @classmethod
    def _positive_timeout(cls, seconds: float) -> float:
        if seconds <= 0:
            raise ValueError("must be greater than 0")
        return seconds


class SessionConfig(_Model):
    cookie: str = "waitroom"
    """Cookie name prefix: the cookie for room `shop` is called `<cookie>_shop`."""
    ttl: Duration = Field(1800.0, le=30 * 86400)
    """Idle time after which a session ends; each use renews it (at most one Set-Cookie per ttl/2)."""
    secure: Literal["auto", "true", "false"] = "auto"
    """The cookie's `Secure` flag; `auto`: when the visitor's side is https."""

    @field_validator("secure", mode="before")
    @classmethod
    def _bool_words(cls, value: object) -> object:
        return str(value).lower() if isinstance(value, bool) else value

    @field_validator("cookie")
    @classmethod
    def _cookie_token(cls, name: str) -> str:
        if not _COOKIE_NAME.fullmatch(name):  # fullmatch: `$` would let a trailing newline in
            raise ValueError(
                f"not a valid cookie name (RFC 6265 token, at most 64 characters): {_short(name)}"
            )
        return name

    @field_validator("ttl")
    @classmethod
    def _ttl_range(cls, seconds: float) -> float:
        if seconds < 1:
            raise ValueError("must be at least 1s")
        return seconds


class ClientIPConfig(_Model):
    trusted_proxies: int = Field(0, ge=0, le=16)
    """How many X-Forwarded-For hops were added by proxies we trust (1 behind the Istio gateway)."""
    header: str | None = None
    """A header set by a trusted proxy that holds the client address, e.g. X-Envoy-External-Address."""


class Match(_Model):
    path_prefix: PathPrefix = "/"
    """The paths covered, in canonical form (`/shop`, not `//shop`, `/%73hop` or `/a/../shop`: refused,
    naming the form to write)."""
    host: Host = None
    """Only this host (needs mitmdump's `keep_host_header`)."""


class RoomConfig(_Model):
    name: str = Field(pattern=NAME_PATTERN)
    """Letters, digits, `_` and `-`; used in cookie names and store keys."""
    match: Match = Match()
    new_sessions: int = Field(ge=1, le=10_000_000)
    """New visitors admitted per window (at least 1)."""
    window: Duration = Field(60.0, le=86400)
    """The rolling window (at least 1s)."""
    block_for: Duration = Field(60.0, le=86400)
    """How long the room stays blocked once a visitor finds the window full (`0`: no block, the window
    alone decides)."""
    retry_after: Duration = Field(10.0, le=3600)
    """`Retry-After` of the wait answer and the page's retry interval (whole seconds, at least 1s)."""
    status: int = Field(503, ge=200, le=599)
    """Status of the wait answer."""
    template: Path | None = None
    """A custom wait-page template, relative to the config file."""
    queue: Literal["block", "fifo"] = "block"
    """The order in which waiting visitors get in. `block` (the default, as in earlier versions): a
    full window blocks the room for `block_for`, and whoever asks first after a place frees up gets
    it; waiting costs no store call during the block, the cheapest answer to a flood. `fifo`: a
    visitor who cannot enter at once gets a ticket and places are given in ticket order, with a
    position and an estimated wait on the page; each poll of a waiting visitor is one store call.
    `block_for` does not apply to `fifo` (the line itself holds newcomers back)."""
    abandon_after: Duration | None = Field(None, le=86400)
    """`fifo`: a ticket whose holder has not polled for this long is dropped and the line moves on
    (default: 4 × `retry_after`, at least 10s). At least 1.5 × `retry_after`, since the page polls
    up to 1.3 × `retry_after` apart."""
    grace: Duration | None = Field(None, le=86400)
    """`fifo`: how long a visitor whose turn has come keeps the place before it goes to the next in
    line (default: 2 × `retry_after`, at least 5s). At least 1.5 × `retry_after`."""

    max_active: int | None = Field(None, ge=1, le=10_000_000)
    """At most this many sessions active in the room at once, across replicas (none: no cap). A
    session is active from its admission until it has been idle for `session.ttl` or is released;
    a new visitor needs a place under the cap as well as the rate."""
    opens_at: AwareDatetime | None = None
    """A scheduled opening (ISO 8601 with a zone, e.g. `2026-12-01T10:00:00+01:00`; `queue: fifo`
    only). Before it every visitor gets the pre-queue page and a ticket; at the opening the pre-queue
    is put in a random order, the same on every replica, then newcomers join the end."""
    closes_at: AwareDatetime | None = None
    """The end of the event (ISO 8601 with a zone): after it, new visitors get the closed answer
    (or pass, see `after_close`); visitors with a session keep it."""
    after_close: Literal["page", "pass"] = "page"
    """After `closes_at`: `page`, the closed answer (`closed_status`); `pass`, the room no longer
    applies."""
    closed_status: int = Field(410, ge=200, le=599)
    """Status of the closed answer."""
    closed_template: Path | None = None
    """A custom closed page (same placeholders as `template`), relative to the config file."""
    tickets_per_ip: int | None = Field(None, ge=1, le=1_000_000)
    """`fifo`: at most this many new tickets per client IP (see `client_ip`) per minute; more get
    `429`. Off by default: many people may share one address behind a NAT."""

    @field_validator("window", "retry_after")
    @classmethod
    def _at_least_a_second(cls, seconds: float) -> float:
        if seconds < 1:
            raise ValueError("must be at least 1s")
        return seconds

    @model_validator(mode="after")
    def _schedule(self) -> Self:
        if self.queue != "fifo":
            for name in ("opens_at", "tickets_per_ip"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} needs queue: fifo")
        if self.opens_at and self.closes_at and self.closes_at <= self.opens_at:
            raise ValueError("closes_at must be after opens_at")
        return self

    @model_validator(mode="after")
    def _polls_fit(self) -> Self:
        # A waiting page polls every retry_after ± 30 %: a shorter hold would drop visitors who do
        # everything right.
        for name in ("abandon_after", "grace"):
            value = getattr(self, name)
            if value is not None and value < 1.5 * self.retry_after:
                raise ValueError(
                    f"{name} ({value:g}s) must be at least 1.5 × retry_after ({1.5 * self.retry_after:g}s)"
                )
        return self

    @property
    def retry_after_seconds(self) -> int:
        """`Retry-After` carries whole seconds."""
        return max(1, math.ceil(self.retry_after))

    @property
    def abandon_after_seconds(self) -> float:
        return self.abandon_after if self.abandon_after is not None else max(10.0, 4 * self.retry_after)

    @property
    def grace_seconds(self) -> float:
        return self.grace if self.grace is not None else max(5.0, 2 * self.retry_after)


class RateLimitMatch(Match):
    methods: list[str] | None = None
    """Only these methods (a rule's `match` must match in all its fields)."""

    @field_validator("methods")
    @classmethod
    def _upper(cls, methods: list[str] | None) -> list[str] | None:
        return None if methods is None else [m.upper() for m in methods]


_KEY = r"^(ip|global|header:[A-Za-z0-9-]+|jwt:[A-Za-z0-9_.-]+)$"


class RateLimitConfig(_Model):
    """A rule: at most `limit` requests per `per` for each key, across all replicas sharing a store."""

    name: str = Field(pattern=NAME_PATTERN)
    """Letters, digits, `_` and `-`; shows in headers and logs."""
    match: RateLimitMatch = RateLimitMatch()
    key: str = Field("ip", pattern=_KEY)
    """What is counted: `ip`, `header:NAME`, `jwt:CLAIM` or `global`."""
    fallback: str | None = Field(None, pattern=_KEY)
    """The key to use when `key` has no value (header missing, JWT missing or invalid); without one,
    such requests are not counted by this rule."""
    limit: int = Field(ge=1, le=10_000_000)
    """At most `limit` requests per `per` for each key."""
    per: Duration = Field(1.0, le=86400)
    """The interval `limit` is counted over (at least 1ms)."""
    algorithm: Literal["sliding_window", "sliding_log", "gcra"] = "sliding_window"
    """How requests are counted."""
    burst: int | None = Field(None, ge=1, le=10_000_000)
    """`gcra` only: how many requests may come at once."""
    action: str = Field("reject", pattern=r"^(reject|delay|upstream:https?://\S+)$")
    """`reject` (429), `delay` (hold up to `max_delay`, then 429), or `upstream:URL` (send the request
    to another upstream)."""
    max_delay: Duration = 1.0
    """With `action: delay`, the longest a request is held before it is refused instead (at most 30s)."""
    shadow: bool = False
    """Count and log, never enforce: a dry run for a new rule."""

    @field_validator("per")
    @classmethod
    def _per_positive(cls, seconds: float) -> float:
        if seconds < 0.001:
            raise ValueError("must be at least 1ms")
        return seconds

    @field_validator("max_delay")
    @classmethod
    def _bounded_delay(cls, seconds: float) -> float:
        if seconds > 30:
            raise ValueError("must be at most 30s (a held request holds a connection)")
        return seconds


class JWTConfig(_Model):
    header: str = "Authorization"
    """The header holding the token, as `Bearer <token>`."""
    algorithms: list[Literal["HS256", "HS384", "HS512", "RS256", "ES256"]] = ["HS256"]
    """The algorithms a signature may use (`none` can never be allowed)."""
    secret_env: str | None = "WAITROOM_JWT_SECRET"
    """The environment variable holding the secret that HS* tokens are checked with."""
    public_key_file: Path | None = None
    """A PEM public key that RS*/ES* tokens are checked with."""
    jwks_file: Path | None = None
    """A JWKS file that RS*/ES* tokens are checked with (the key chosen by `kid`)."""
    audience: str | None = None
    """When set, the `aud` a token must carry."""
    issuer: str | None = None
    """When set, the `iss` a token must carry."""
    leeway: Duration = Field(30.0, le=3600)
    """Clock leeway for `exp` and `nbf`."""


class AdminConfig(_Model):
    host: str = "127.0.0.1"
    """Address of the admin port; 0.0.0.0 in a pod, so probes and Prometheus reach it."""
    port: int | None = Field(None, ge=1, le=65535)
    """The admin port (/metrics, /healthz, /readyz, /admin/...); none: no admin server."""
    token_env: str = Field("WAITROOM_ADMIN_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Environment variable holding the admin API's bearer token; unset or empty: the API is off."""
    shutdown_delay: Duration = Field(0.0, le=3600)
    """On SIGTERM: /readyz turns 503 at once and the proxy keeps serving this long, so load balancers
    that poll readiness stop sending; then it stops accepting. 0: the chart's preStop sleep does it."""
    drain: Duration = Field(10.0, le=3600)
    """After the shutdown delay: requests in flight get this long to finish, then the process exits."""


_DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
"""A Kubernetes object name of the DNS-1123 label kind: Services and namespaces."""


class ClusterConfig(_Model):
    """Cluster awareness (kube.py): nothing of it runs outside a Kubernetes pod."""

    discover_replicas: bool = False
    """In a Kubernetes pod, count the proxy's ready replicas from its Service's EndpointSlices;
    `on_error: local` divides limits by that live count instead of the fixed `store.replicas` (which
    stays the fallback). Outside a pod it does nothing."""
    service: str | None = Field(None, pattern=_DNS_LABEL)
    """The proxy's own Service, whose EndpointSlices are watched (required with `discover_replicas`)."""
    namespace: str | None = Field(None, pattern=_DNS_LABEL)
    """The Service's namespace; empty: the pod's own."""

    @model_validator(mode="after")
    def _service_named(self) -> Self:
        if self.discover_replicas and not self.service:
            raise ValueError("cluster.service: discover_replicas needs the name of the proxy's own Service")
        return self


class DecisionLogConfig(_Model):
    format: Literal["off", "json"] = "off"
    """With `json`, one JSON line per sampled decision on the log (never cookies, tokens or queries)."""
    sample: float = Field(0.01, gt=0, le=1)
    """The share of requests logged, one draw per request (its rule and room together), more than 0
    and at most 1 (waiting and limited answers included at the same rate)."""


class Config(_Model):
    store: StoreConfig = StoreConfig()
    session: SessionConfig = SessionConfig()
    client_ip: ClientIPConfig = ClientIPConfig()
    rooms: list[RoomConfig] = []
    """The wait rooms; a request goes to the room with the longest matching `match.path_prefix`."""
    bypass: list[PathPrefix] = []
    """Path prefixes that are never queued nor rate-limited (health checks, static assets)."""
    rate_limits: list[RateLimitConfig] = []
    """Rate-limit rules, decided before the room."""
    jwt: JWTConfig | None = None
    """How to verify tokens for `jwt:CLAIM` keys; a rule with such a key needs this section."""
    admin: AdminConfig = AdminConfig()
    decision_log: DecisionLogConfig = DecisionLogConfig()
    cluster: ClusterConfig = ClusterConfig()

    @model_validator(mode="after")
    def _unique_rooms(self) -> Self:
        names: set[str] = set()
        places: set[tuple[str | None, str]] = set()
        for i, room in enumerate(self.rooms):
            if room.name in names:
                raise ValueError(f"rooms[{i}].name: duplicate room name {room.name!r}")
            place = (room.match.host, room.match.path_prefix)
            if place in places:
                raise ValueError(
                    f"rooms[{i}].match: another room already covers "
                    f"host={room.match.host or '*'} path_prefix={room.match.path_prefix}"
                )
            names.add(room.name)
            places.add(place)
        return self


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-") or part in ("literal", "str", "int"):
            continue  # validator names pydantic adds for union members; not part of the file
        else:
            out += f".{part}" if out else part
    return out


def _one_line(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    message = first["msg"].removeprefix("Value error, ")[:300]
    where = _field_path(first["loc"])
    if message.startswith(("rooms[", "rate_limits[", "cluster.")):  # model-level errors name their field
        return message
    return f"{where}: {message}" if where else message


def parse_config(data: Any, *, base_dir: Path | None = None) -> Config:
    """Validate already-parsed YAML. Relative template paths are resolved against `base_dir`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the file must hold a mapping (store:, session:, rooms:, ...)")
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_one_line(e)) from None
    if base_dir is not None:
        rooms = [
            room.model_copy(
                update={
                    name: (base_dir / path).resolve()
                    for name in ("template", "closed_template")
                    if (path := getattr(room, name)) is not None and not path.is_absolute()
                }
            )
            for room in config.rooms
        ]
        config = config.model_copy(update={"rooms": rooms})
    return config


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: a few hundred bytes of nested `*alias` references expand to gigabytes
    (an alias bomb), and a waitroom config has no use for them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a waitroom config", event.start_mark
            )
        return super().compose_node(parent, index)


def load_config(path: Path) -> Config:
    """Read and validate a config file; every failure is a ConfigError naming the file."""
    try:
        raw = path.read_bytes()
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KB: not a waitroom config")
        text = raw.decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader that refuses aliases
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}: {problem}{where}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
    try:
        return parse_config(data, base_dir=path.parent)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def compile_config(path: Path) -> tuple[Config, dict[str, Template], ClaimVerifier | None]:
    """Everything a config file needs beyond its schema: its templates and JWT keys load, and
    `jwt:` keys have a `jwt:` section. ConfigError (one line) otherwise. `waitroom check` and the
    proxy's runtime both use this; it does not import mitmproxy."""
    from waitroom.claims import ClaimVerifier  # claims imports this module
    from waitroom.responses import CLOSED_TEMPLATE, DEFAULT_TEMPLATE, Template, TemplateError

    config = load_config(path)
    templates = {}
    for i, room in enumerate(config.rooms):
        try:
            templates[room.name] = Template.load(room.template or DEFAULT_TEMPLATE)
        except TemplateError as e:
            raise ConfigError(f"{path}: rooms[{i}].template: {e}") from None
        try:  # keyed `name:closed`: a room name holds no colon
            templates[f"{room.name}:closed"] = Template.load(room.closed_template or CLOSED_TEMPLATE)
        except TemplateError as e:
            raise ConfigError(f"{path}: rooms[{i}].closed_template: {e}") from None
    verifier = ClaimVerifier(config.jwt) if config.jwt is not None else None
    for i, rule in enumerate(config.rate_limits):
        for field_name, key in (("key", rule.key), ("fallback", rule.fallback)):
            if key is not None and key.startswith("jwt:") and verifier is None:
                raise ConfigError(f"{path}: rate_limits[{i}].{field_name}: {key} needs a `jwt:` section")
    return config, templates, verifier
