"""The config file: pydantic models, YAML loading, and errors that fit on one line.

Every section of the file is declared here or, for the store, the rules and the operator's
sections, in storeconfig.py, ruleconfig.py and opsconfig.py (their shared field types in
configfields.py; reading the file safely and the one-line errors in configfile.py), and every name
is importable from here; each field's docstring is its line in docs/config.md (generated: `make
docs`). Unknown keys are errors (a typo must not silently turn a protection off), and every error
names the field it is about.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import AwareDatetime, Field, ValidationError, field_validator, model_validator

# The sections are declared beside what they configure; every name stays importable from here.
from waitroom.configfields import (
    NAME_PATTERN,
    ConfigError,
    Duration,
    Host,
    Match,
    PathPrefix,
    StrictModel,
    short_repr,
)
from waitroom.configfile import MAX_CONFIG_BYTES, one_line, read_yaml
from waitroom.opsconfig import AdminConfig, ClusterConfig, DecisionLogConfig
from waitroom.ruleconfig import ClientIPConfig, JWTConfig, RateLimitConfig, RateLimitMatch
from waitroom.storeconfig import (
    BreakerConfig,
    LiveReplicas,
    StoreConfig,
    StoreErrorPolicy,
    unknown_replicas,
)

if TYPE_CHECKING:
    from waitroom.claims import ClaimVerifier
    from waitroom.responses import Template

__all__ = [
    "DEFAULT_CONFIG",
    "MAX_CONFIG_BYTES",
    "NAME_PATTERN",
    "AdminConfig",
    "BreakerConfig",
    "ClientIPConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "DecisionLogConfig",
    "Duration",
    "Host",
    "JWTConfig",
    "LiveReplicas",
    "Match",
    "PathPrefix",
    "RateLimitConfig",
    "RateLimitMatch",
    "RoomConfig",
    "SessionConfig",
    "StoreConfig",
    "StoreErrorPolicy",
    "compile_config",
    "load_config",
    "parse_config",
    "unknown_replicas",
]

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "waitroom.yaml"
"""The shipped example config; used when the `waitroom_config` option is empty."""

_COOKIE_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")  # an RFC 6265 token


class SessionConfig(StrictModel):
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
                f"not a valid cookie name (RFC 6265 token, at most 64 characters): {short_repr(name)}"
            )
        return name

    @field_validator("ttl")
    @classmethod
    def _ttl_range(cls, seconds: float) -> float:
        if seconds < 1:
            raise ValueError("must be at least 1s")
        return seconds


class RoomConfig(StrictModel):
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


class Config(StrictModel):
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


def parse_config(data: Any, *, base_dir: Path | None = None) -> Config:
    """Validate already-parsed YAML. Relative template paths are resolved against `base_dir`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the file must hold a mapping (store:, session:, rooms:, ...)")
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(one_line(e)) from None
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


def load_config(path: Path) -> Config:
    """Read and validate a config file; every failure is a ConfigError naming the file."""
    data = read_yaml(path)
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
