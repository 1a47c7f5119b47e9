"""Proof of work for a place in a `fifo` room (`rooms[].proof_of_work`; docs/security.md, "Proof
of work").

A visitor without a ticket gets a *challenge* instead of a place: a token this proxy signed, naming
the room, the time it was given and the difficulty, and bound to the visitor (its address key and
User-Agent enter the signature; the token does not carry them, each request's are used). The
visitor finds a nonce that makes SHA-256(SHA-256(token) || nonce) start with `difficulty` zero bits
(2^difficulty hashes on average) and asks again with the `Waitroom-Proof` header. Checking a proof
costs one HMAC per signing key and two SHA-256 of one block each: microseconds, no store call.

One proof, one place. The session id of the place a proof takes is the challenge's own random salt,
so every replica derives the same one, and a proof sent again names the same ticket (or the session
it became), never a second one. Once that place was used the proof is spent: the line answers a new
challenge (rooms/line.py). A proof is good for at most the room's `window` (config/schema.py), so
the window's log still remembers a used place whenever its proof could come back, and nothing is
kept per proof.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from enum import StrEnum
from typing import NamedTuple

from waitroom.config.schema import RoomConfig
from waitroom.web.wait import Challenge

VERSION = "w1"
KEY_PURPOSE = "waitroom proof of work"
"""What the signing keys are derived for (rooms.sessions.SessionCodec.purpose_keys)."""
MAX_PROOF_LENGTH = 300
"""A longer header is no proof: never parsed (a genuine one is under 140 characters)."""
FUTURE_SKEW_MS = 5_000
"""A challenge dated this far ahead of our clock still counts (replicas' clocks differ a little)."""
MAC_BYTES = 16


class Result(StrEnum):
    """What became of a request's proof (the `result` label of `waitroom_proofs_total`)."""

    CHALLENGED = "challenged"
    """None sent (or one not worth reading): a challenge is answered."""
    ACCEPTED = "accepted"
    INVALID = "invalid"
    """Not ours, another room's or another visitor's, malformed, or not enough work."""
    EXPIRED = "expired"
    """Older than the room's proof ttl, or easier than the room's difficulty now."""
    SPENT = "spent"
    """Its place was used already: one proof, one place."""


class Checked(NamedTuple):
    session_id: str | None
    """The place's session id when the proof holds."""
    result: Result


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def visitor_binding(address: str, user_agent: str) -> bytes:
    """What a challenge is bound to: the client's address key and its User-Agent."""
    return f"{address}\n{user_agent}".encode("utf-8", "replace")


def work_done(token: str, nonce: int, difficulty: int) -> bool:
    """SHA-256(SHA-256(token) || uint32_be(nonce)) has at least `difficulty` leading zero bits."""
    seed = hashlib.sha256(token.encode("ascii")).digest()
    digest = hashlib.sha256(seed + nonce.to_bytes(4, "big")).digest()
    return int.from_bytes(digest, "big") >> (256 - difficulty) == 0


class ProofOfWork:
    """Challenges and their proofs. `keys`: purpose-bound signing keys, the first signs and all
    verify (a rotation as for session cookies)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._keys = tuple(keys)

    def _mac(self, key: bytes, text: str, binding: bytes) -> bytes:
        return hmac.digest(key, text.encode("ascii") + b"\n" + binding, "sha256")[:MAC_BYTES]

    def challenge(self, room: RoomConfig, binding: bytes, now: float) -> Challenge:
        """A new challenge for a visitor of `room`, which has a proof of work (`binding`:
        visitor_binding)."""
        if room.proof_of_work is None:
            raise ValueError(f"room {room.name} has no proof_of_work")
        difficulty = room.proof_of_work.difficulty
        salt = _b64(secrets.token_bytes(12))
        text = f"{VERSION}.{room.name}.{int(now * 1000)}.{difficulty}.{salt}"
        token = f"{text}.{_b64(self._mac(self._keys[0], text, binding))}"
        return Challenge(token, difficulty, int(room.proof_ttl_seconds))

    def check(self, value: str | None, room: RoomConfig, binding: bytes, now: float) -> Checked:
        """The proof in a `Waitroom-Proof` header value (`<challenge>;<nonce>`), for `room` and this
        visitor, at `now`. Never raises: anything but a good proof is a result without an id."""
        if not value or len(value) > MAX_PROOF_LENGTH or room.proof_of_work is None:
            return Checked(None, Result.CHALLENGED)
        token, _, nonce_text = value.strip().rpartition(";")
        token, nonce_text = token.strip(), nonce_text.strip()
        parts = token.split(".")
        if len(parts) != 6 or not token.isascii() or not _digits(nonce_text, 10):
            return Checked(None, Result.INVALID)
        version, name, issued_text, difficulty_text, salt, mac_text = parts
        nonce = int(nonce_text)
        if (
            version != VERSION
            or name != room.name
            or not _digits(issued_text, 15)
            or not _digits(difficulty_text, 2)
            or len(salt) != 16
            or nonce >= 2**32
        ):
            return Checked(None, Result.INVALID)
        text = token.rpartition(".")[0]
        genuine = False
        for key in self._keys:  # every key, so that timing does not tell which one signed
            genuine |= hmac.compare_digest(_b64(self._mac(key, text, binding)), mac_text)
        if not genuine:
            return Checked(None, Result.INVALID)
        issued, difficulty = int(issued_text), int(difficulty_text)
        now_ms = int(now * 1000)
        if issued > now_ms + FUTURE_SKEW_MS:
            return Checked(None, Result.INVALID)
        if now_ms > issued + room.proof_ttl_seconds * 1000 or difficulty < room.proof_of_work.difficulty:
            return Checked(None, Result.EXPIRED)
        if not work_done(token, nonce, difficulty):
            return Checked(None, Result.INVALID)
        return Checked(salt, Result.ACCEPTED)


def _digits(text: str, most: int) -> bool:
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


def solve(token: str, difficulty: int) -> int:
    """The reference solver (what a JSON client does; docs/security.md): the first nonce that
    solves `token`. ValueError when none of the 2^32 does (at difficulty 24, one chance in e^256)."""
    base = hashlib.sha256(hashlib.sha256(token.encode("ascii")).digest())
    whole, rest = divmod(difficulty, 8)
    zeros, below = bytes(whole), 256 >> rest  # the byte after the zero bytes must be under this
    for nonce in range(2**32):
        h = base.copy()
        h.update(nonce.to_bytes(4, "big"))
        digest = h.digest()
        if digest[:whole] == zeros and digest[whole] < below:
            return nonce
    raise ValueError("no nonce solves this challenge: ask for a new one")
