"""Signed session cookies: the visitor's proof of admission, checked with no I/O.

A token is `base64url(payload) "." base64url(HMAC-SHA256(key, payload))` where the payload is
`v1|room|session id|issued at|expires at` (whole Unix seconds). Keys come from `WAITROOM_SECRET`,
comma-separated: the first signs, all verify, so a key can be rotated in without logging anyone out.
Whatever does not verify — tampered, expired, truncated, oversized, garbage, another room's — is the
same as no cookie: `verify` returns None and never raises.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from waitroom.config.schema import Config, RoomConfig

VERSION = "v1"
PENDING = "p1"
"""A *pending* token names a session whose admission the store may have recorded while its answer
was lost (a timeout after the question was sent). It admits nobody: the visitor's next request asks
the store again with that session id, and an admission that was recorded is found, not lost."""
TICKET = "q1"
"""A *ticket* holds a visitor's place in a `fifo` room's line: its session id (the member the store
keeps in the line) and its ticket number (in the payload's third field). It admits nobody: the
store says, on each ask, whether the ticket is still in the line and whether its turn has come.
A ticket the store no longer holds (dropped, used, from before a data loss) is no ticket."""
MARKED = "q2"
"""A ticket with a *mark* (two more payload fields): what the store last said of its place, for the
replicas' line views (rooms/line_view.py): uncalled tickets ahead of it (at least), and the line's
served counter then. It admits nobody either; a replica without a view ignores the mark."""
CALLED = "q3"
"""A ticket that also says which tickets the store had called (three more payload fields after the
mark's two, which are empty for a ticket without one): the line's epoch (when the store started
it: numbers count from there), and the `last_called` and `last_lapsed` marks the issuing replica
knew for it. Replicas learn the marks from one another through their visitors' tickets, so that
during a store outage each knows every call made before it (rooms/line.py, "Called before an
outage"). The signature makes the marks trustworthy; an old ticket only carries older marks."""
MAX_TOKEN_LENGTH = 512
"""Longer cookie values are not even decoded."""
MIN_KEY_LENGTH = 16


class SecretError(Exception):
    """The signing keys are missing or unusable."""


@dataclass(frozen=True, slots=True)
class Session:
    room: str
    session_id: str
    issued_at: int
    expires_at: int
    mark: tuple[int, int] | None = None
    """A marked ticket's (uncalled ahead, served then); None for every other token."""
    calls: tuple[int, int, int] | None = None
    """A CALLED ticket's (line epoch, last_called, last_lapsed); None for every other token."""


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # Base64 leaves unused bits in the last character: "…MA" and "…MB" can decode alike. Accept
    # only the canonical spelling, so that a token that differs in any character is refused.
    if _b64encode(raw) != text:
        raise ValueError("non-canonical base64")
    return raw


def new_session_id() -> str:
    """96 random bits; also the member recorded in the room's admission log."""
    return secrets.token_urlsafe(12)


class SessionIds:
    """Where new session ids come from: random, except that a flow replay hands over the ids its
    recording gave out (`recorded`), so that a replay decides on the ids its recorded cookies hold."""

    def __init__(self, fresh: Callable[[], str] = new_session_id) -> None:
        self.recorded: list[str] = []
        self.fresh = fresh
        """Where an id comes from when no recorded one is left: random; `waitroom simulate` numbers
        them, so that a run (and a scheduled opening's shuffle of its ids) can be reproduced."""

    def __call__(self) -> str:
        return self.recorded.pop(0) if self.recorded else self.fresh()


def token_session_id(token: str) -> str | None:
    """The session id a token of ours names, read without checking it: for replaying a recording."""
    try:
        fields = _b64decode(token.split(".", 1)[0]).decode().split("|")
    except (ValueError, binascii.Error):
        return None
    lengths = {VERSION: 5, PENDING: 5, TICKET: 5, MARKED: 7, CALLED: 10}
    return fields[2] if lengths.get(fields[0]) == len(fields) else None


def keys_from_secret(secret: str) -> list[bytes]:
    """Parse `WAITROOM_SECRET`: comma-separated keys, each at least 16 characters."""
    keys = [k.strip() for k in secret.split(",") if k.strip()]
    if not keys:
        raise SecretError("WAITROOM_SECRET is empty")
    for i, key in enumerate(keys):
        if len(key) < MIN_KEY_LENGTH:
            raise SecretError(
                f"WAITROOM_SECRET key #{i + 1} is too short "
                f"({len(key)} characters; use at least {MIN_KEY_LENGTH}, e.g. `openssl rand -hex 32`)"
            )
    # Derive a purpose-bound key so the same secret could sign something else without confusion.
    return [hmac.new(k.encode(), b"waitroom session cookie", hashlib.sha256).digest() for k in keys]


def keys_from_environment() -> list[bytes] | None:
    """The keys from `WAITROOM_SECRET`, or None when it is unset."""
    secret = os.environ.get("WAITROOM_SECRET")
    return None if secret is None else keys_from_secret(secret)


VERIFIED_CACHE_SIZE = 50_000
"""Genuine tokens remembered per process (about 200 bytes each)."""


class SessionCodec:
    def __init__(self, keys: list[bytes], ttl: float) -> None:
        if not keys:
            raise SecretError("at least one signing key is needed")
        self._keys = keys
        self._ttl = max(1, int(ttl))
        self._verified: dict[str, Session] = {}
        """Genuine tokens already checked: a returning visitor sends the same cookie on every
        request, and its HMAC need not be computed again. Only genuine tokens are kept, so
        garbage cannot fill it; it is per codec, so a key rotation (a new codec) starts afresh."""

    @property
    def ttl(self) -> int:
        return self._ttl

    def _sign(self, key: bytes, payload: bytes) -> bytes:
        return hmac.new(key, payload, hashlib.sha256).digest()

    def issue(self, room: str, session_id: str, now: float) -> tuple[Session, str]:
        return self.encode(Session(room, session_id, int(now), self._expiry(now)))

    def renew(self, session: Session, now: float) -> tuple[Session, str]:
        """Same session, new expiry: idle time restarts."""
        return self.encode(Session(session.room, session.session_id, session.issued_at, self._expiry(now)))

    def _expiry(self, now: float) -> int:
        """A whole second at least ttl away: a cookie issued at 100.9 with a 2 s ttl is good until
        103, not 102 (truncating made a short ttl up to a second shorter than configured)."""
        return math.ceil(now) + self._ttl

    def needs_renewal(self, session: Session, now: float) -> bool:
        """Renew once half the idle time is used, so an active visitor gets at most one
        Set-Cookie per ttl/2 instead of one on every response."""
        return session.expires_at - now < self._ttl / 2

    def issue_pending(self, room: str, session_id: str, now: float, ttl: float) -> str:
        issued = int(now)
        return self.encode(Session(room, session_id, issued, issued + max(1, int(ttl))), PENDING)[1]

    def pending(self, token: str | None, room: str, now: float) -> str | None:
        """The session id in a genuine, unexpired pending token for `room`; else None."""
        session = self._genuine(token, PENDING)
        if session is None or session.room != room or session.expires_at <= now:
            return None
        return session.session_id

    def derive(self, label: str) -> str:
        """A value every replica sharing the signing key computes alike, that no client can: an
        event's shuffle seed (queue.event_seed)."""
        return hmac.new(self._keys[0], label.encode(), hashlib.sha256).hexdigest()[:32]

    def purpose_keys(self, purpose: str) -> list[bytes]:
        """Keys for signing something else than cookies (proof-of-work challenges): one per signing
        key, in the same order (the first signs, all verify), bound to `purpose`."""
        return [hmac.new(key, purpose.encode(), hashlib.sha256).digest() for key in self._keys]

    def issue_ticket(
        self,
        room: str,
        session_id: str,
        number: int,
        expires_at: float,
        bind: str = "",
        mark: tuple[int, int] | None = None,
        calls: tuple[int, int, int] | None = None,
    ) -> str:
        """A ticket for `room`; `number` 0 when the store's answer was lost (the id is what counts).
        `bind`: the visitor's User-Agent, which the signature covers (the token does not carry it):
        the ticket is good only with the same one. `mark`: see MARKED; `calls`: see CALLED."""
        session = Session(room, session_id, number, int(expires_at), mark, calls)
        version = CALLED if calls is not None else MARKED if mark is not None else TICKET
        return self.encode(session, version, bind)[1]

    def ticket(self, token: str | None, room: str, now: float, bind: str = "") -> Session | None:
        """The ticket in a genuine, unexpired ticket token for `room`, issued with the same `bind`
        (`issued_at` holds its number); else None."""
        ticket = self._genuine(token, (TICKET, MARKED, CALLED), bind)
        if ticket is None or ticket.room != room or ticket.expires_at <= now:
            return None
        return ticket

    def encode(self, session: Session, version: str = VERSION, bind: str = "") -> tuple[Session, str]:
        parts = [version, session.room, session.session_id, str(session.issued_at), str(session.expires_at)]
        if session.mark is not None:
            parts += [str(session.mark[0]), str(session.mark[1])]
        elif version == CALLED:
            parts += ["", ""]
        if session.calls is not None:
            parts += [str(n) for n in session.calls]
        payload = "|".join(parts).encode()
        token = f"{_b64encode(payload)}.{_b64encode(self._sign(self._keys[0], _bound(payload, bind)))}"
        return session, token

    def verify(self, token: str | None, room: str, now: float) -> Session | None:
        """The session in `token` if it is genuine, for `room`, and not expired; else None."""
        session = self._verified.get(token) if token else None
        if session is None:
            session = self._genuine(token)
            if session is None:
                return None
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = session  # type: ignore[index]
        if session.room != room or session.expires_at <= now:
            return None
        return session

    def _genuine(
        self, token: str | None, want: str | tuple[str, ...] = VERSION, bind: str = ""
    ) -> Session | None:
        """The session a token carries if one of our keys signed it (expiry not checked)."""
        if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
            return None
        payload_text, signature_text = token.split(".")
        try:
            payload = _b64decode(payload_text)
            signature = _b64decode(signature_text)
        except (binascii.Error, ValueError):
            return None
        # Check every key, not just until one matches, so timing does not tell which key signed.
        genuine = False
        for key in self._keys:
            genuine |= hmac.compare_digest(self._sign(key, _bound(payload, bind)), signature)
        if not genuine:
            return None
        try:
            version, token_room, session_id, issued, expires, *extra = payload.decode().split("|")
            wanted = (want,) if isinstance(want, str) else want
            if version not in wanted or len(extra) != {MARKED: 2, CALLED: 5}.get(version, 0):
                return None
            mark = (int(extra[0]), int(extra[1])) if extra[:1] not in ([], [""]) else None
            calls = (int(extra[2]), int(extra[3]), int(extra[4])) if version == CALLED else None
            session = Session(token_room, session_id, int(issued), int(expires), mark, calls)
        except ValueError:  # also UnicodeDecodeError: a genuine key signed something else
            return None
        return session


def _bound(payload: bytes, bind: str) -> bytes:
    """What is signed: the payload, and what the token is bound to (never sent, recomputed)."""
    return payload + b"\n" + bind.encode("utf-8", "replace") if bind else payload


def cookie_name(config: Config, room: RoomConfig) -> str:
    """One cookie per room, so a visitor in two rooms keeps both sessions."""
    return f"{config.session.cookie}_{room.name}"
