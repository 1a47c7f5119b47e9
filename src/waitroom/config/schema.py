"""The config file: its top level, rooms and sessions, and loading it.

Each field's docstring is its line in docs/config.md (generated: `make docs`). Unknown keys are
errors (a typo must not silently turn a protection off), and every error names its field.
"""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import AwareDatetime, Field, ValidationError, field_validator, model_validator

from waitroom.config.fields import (
    NAME_PATTERN,
    ConfigError,
    Duration,
    Match,
    PathPrefix,
    StrictModel,
    short_repr,
)
from waitroom.config.ops import AdminConfig, ClusterConfig, DecisionLogConfig
from waitroom.config.pages import LanguageTag, PagesConfig
from waitroom.config.rules import ClientIPConfig, JWTConfig, RateLimitConfig
from waitroom.config.store import (
    StoreConfig,
)
from waitroom.config.yamlfile import all_errors, read_yaml

DEFAULT_CONFIG = Path(str(resources.files("waitroom.config").joinpath("waitroom.yaml")))
"""The shipped example config (package data; `config/waitroom.yaml` in a checkout links to it), used
when the `waitroom_config` option is empty. pip installs packages as files, so it is a real path."""

DEFAULT_MAX_RETRY_AFTER = 60.0
"""Seconds: a `fifo` room's longest poll interval unless it sets `max_retry_after` (Cloudflare's
waiting room asks for 20 s; a minute keeps a far-back visitor's page alive and costs 1/60 request per
second)."""
FIFO_ONLY = ("opens_at", "tickets_per_ip", "draws_per_ip", "proof_of_work", "max_retry_after")
"""Room fields that need `queue: fifo` (the chart's schema says so too: config/chartschema.py)."""
EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_EVENT = datetime(2999, 12, 31, tzinfo=UTC)
"""The range of `opens_at` and `closes_at`."""

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


MIN_PROOF_TTL = 5.0
"""Seconds a visitor has at least to solve a challenge and send the proof."""
DEFAULT_PROOF_TTL = 30.0


class ProofOfWorkConfig(StrictModel):
    difficulty: int = Field(16, ge=1, le=24)
    """Leading zero bits a solution's SHA-256 needs: 2^difficulty hashes on average (16: 65,536,
    a few tenths of a second in a desktop browser or a mid-range phone, a second or more on an old
    phone; each +1 doubles it)."""
    ttl: Duration | None = Field(None, le=600)
    """How long a challenge may be solved and used: at least 5s, at most the room's `window` (the
    place a proof took must still be in the window's log whenever the proof could be sent again)."""

    @field_validator("ttl")
    @classmethod
    def _ttl_range(cls, seconds: float | None) -> float | None:
        if seconds is not None and seconds < MIN_PROOF_TTL:
            raise ValueError(f"must be at least {MIN_PROOF_TTL:g}s")
        return seconds


MAX_TITLE = 120


def _title_text(text: str, where: str) -> str:
    text = text.strip()
    if not text or len(text) > MAX_TITLE:
        raise ValueError(f"{where}must be 1 to {MAX_TITLE} characters")
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise ValueError(f"{where}must be plain text on one line")
    return text


class RoomConfig(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    """Letters, digits, `_` and `-`; used in cookie names and store keys. Visitors never see it
    when the room has a `title`."""
    title: str | dict[LanguageTag, str] | None = None
    """The room's name as visitors see it on its pages (plain text, at most 120 characters; the
    `name` by default), or one per language: `{en: Summer sale, de: Sommerschlussverkauf}`."""
    language: LanguageTag | None = None
    """The language of this room's pages for every visitor (default: each visitor's, from
    `Accept-Language`; see `pages`)."""
    match: Match = Match()
    new_sessions: int = Field(ge=1, le=10_000_000)
    """New visitors admitted per window (at least 1)."""
    window: Duration = Field(60.0, le=86400)
    """The rolling window (at least 1s)."""
    block_for: Duration = Field(60.0, le=86400)
    """How long the room stays blocked once a visitor finds the window full (`0`: no block, the window
    alone decides)."""
    retry_after: Duration = Field(10.0, le=3600)
    """`Retry-After` of the wait answer and the page's retry interval (whole seconds, at least 1s).
    In a `fifo` room it is the poll interval of the head of the line: a ticket further back is told
    a longer one, up to `max_retry_after`."""
    max_retry_after: Duration | None = Field(None, le=3600)
    """`fifo`: the longest poll interval a waiting visitor is told (default: 60s, never below
    `retry_after`; at least `retry_after`). Each wait answer says when to come back, from the
    visitor's place: half the time its turn could come at the earliest, between `retry_after` and
    this, so a visitor far back polls less often and still comes back before its turn."""
    status: int = Field(503, ge=200, le=599)
    """Status of the wait answer."""
    template: Path | None = None
    """A custom wait-page template, relative to the config file."""
    queue: Literal["block", "fifo"] = "block"
    """The order in which waiting visitors get in. `block` (the default): a
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
    `429`. Off by default: many people may share one address behind a NAT. A rate, not a holding:
    see `places_per_ip` for what one address may hold."""
    places_per_ip: int | None = Field(None, ge=1, le=10_000)
    """At most this many places one client address (see `client_ip`) holds in the room at once,
    across replicas: live tickets (in the line, also before the opening) and sessions inside (active,
    or in a room without `max_active` admitted within the `window`). Applied to every way in: a
    ticket, a direct entry, a pre-queue draw, a `block` room's admission; more get `429`. A place
    stops counting when its ticket leaves the line (left, abandoned, used), or its session is
    released or idle past `session.ttl`. Off by default: people behind one NAT share it."""
    draws_per_ip: int | None = Field(None, ge=1, le=10_000)
    """`fifo` with `opens_at` and `places_per_ip`: pre-queue tickets (draws in the opening's shuffle)
    one client address may hold before the opening (default with `places_per_ip`: 1); after the
    opening it may hold up to `places_per_ip` in all."""
    proof_of_work: ProofOfWorkConfig | None = None
    """`fifo`: before a visitor gets a ticket, a pre-queue draw or a direct entry into an empty
    line, their browser solves a small hash puzzle that the proxy checks without a store call; JSON
    clients get the challenge in the JSON answer. Off by default."""
    shadow: bool = False
    """Decide every request as the room would, enforce nothing: every request is forwarded
    untouched (no cookie, no page, no header) and the `waitroom_shadow_*` metrics, the decision log
    and `waitroom status` say what the room would have done. Its state lives apart from the live
    room's (store keys `{room:shadow:NAME}`); switched off (reload or admin API), the live room
    starts fresh. A proof of work is not asked for (it needs the client). See docs/sizing.md."""

    @field_validator("opens_at", "closes_at")
    @classmethod
    def _plausible_time(cls, moment: datetime | None) -> datetime | None:
        # Far-off years overflow Unix time on the way to the store (year 0001 in a zone east of
        # UTC is year 0), and no event is scheduled there.
        if moment is not None and not EARLIEST_EVENT <= moment <= LATEST_EVENT:
            raise ValueError(
                f"must be between {EARLIEST_EVENT:%Y-%m-%d} and {LATEST_EVENT:%Y-%m-%d} "
                f"(got {moment.isoformat()})"
            )
        return moment

    @field_validator("title")
    @classmethod
    def _plain_title(cls, title: str | dict[str, str] | None) -> str | dict[str, str] | None:
        if isinstance(title, str):
            return _title_text(title, "")
        if isinstance(title, dict):
            if not title:
                raise ValueError("needs at least one language")
            return {tag: _title_text(text, f"{tag}: ") for tag, text in title.items()}
        return title

    @field_validator("window", "retry_after")
    @classmethod
    def _at_least_a_second(cls, seconds: float) -> float:
        if seconds < 1:
            raise ValueError("must be at least 1s")
        return seconds

    @model_validator(mode="after")
    def _schedule(self) -> Self:
        if self.queue != "fifo":
            for name in FIFO_ONLY:
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} needs queue: fifo")
        if self.opens_at and self.closes_at and self.closes_at <= self.opens_at:
            raise ValueError("closes_at must be after opens_at")
        if self.draws_per_ip is not None and self.places_per_ip is None:
            raise ValueError("draws_per_ip needs places_per_ip")
        if self.draws_per_ip is not None and self.places_per_ip and self.draws_per_ip > self.places_per_ip:
            raise ValueError(
                f"draws_per_ip ({self.draws_per_ip}) must not be more than "
                f"places_per_ip ({self.places_per_ip})"
            )
        return self

    @model_validator(mode="after")
    def _proof_fits(self) -> Self:
        # A proof names one place (its id comes from the challenge). Once that place was used, the
        # window's log is what says so: a proof must not outlive it.
        proof = self.proof_of_work
        if proof is None:
            return self
        if self.window < MIN_PROOF_TTL:
            raise ValueError(f"proof_of_work needs a window of at least {MIN_PROOF_TTL:g}s")
        if proof.ttl is not None and proof.ttl > self.window:
            raise ValueError(
                f"proof_of_work.ttl ({proof.ttl:g}s) must not be longer than window ({self.window:g}s)"
            )
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
        if self.max_retry_after is not None and self.max_retry_after < self.retry_after:
            raise ValueError(
                f"max_retry_after ({self.max_retry_after:g}s) must be at least retry_after "
                f"({self.retry_after:g}s)"
            )
        return self

    @property
    def retry_after_seconds(self) -> int:
        """`Retry-After` carries whole seconds."""
        return max(1, math.ceil(self.retry_after))

    @property
    def max_retry_after_seconds(self) -> float:
        """The longest poll interval a waiting visitor of a `fifo` room is told."""
        if self.max_retry_after is not None:
            return self.max_retry_after
        return max(DEFAULT_MAX_RETRY_AFTER, self.retry_after)

    @property
    def abandon_after_seconds(self) -> float:
        return self.abandon_after if self.abandon_after is not None else max(10.0, 4 * self.retry_after)

    @property
    def grace_seconds(self) -> float:
        return self.grace if self.grace is not None else max(5.0, 2 * self.retry_after)

    @property
    def proof_ttl_seconds(self) -> float:
        """How long a proof-of-work challenge is good for (0 when the room has none)."""
        if self.proof_of_work is None:
            return 0.0
        ttl = self.proof_of_work.ttl
        return ttl if ttl is not None else min(DEFAULT_PROOF_TTL, self.window)


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
    pages: PagesConfig = PagesConfig()
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
        raise ConfigError.of(all_errors(e, Config)) from None
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
        pages = config.pages
        if pages.strings_dir is not None and not pages.strings_dir.is_absolute():
            pages = pages.model_copy(update={"strings_dir": (base_dir / pages.strings_dir).resolve()})
        config = config.model_copy(update={"rooms": rooms, "pages": pages})
    return config


def load_config(path: Path) -> Config:
    """Read and validate a config file; every failure is a ConfigError naming the file."""
    data = read_yaml(path)
    try:
        return parse_config(data, base_dir=path.parent)
    except ConfigError as e:
        raise ConfigError.of(e.problems, path) from None
