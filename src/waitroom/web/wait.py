"""What a waiting visitor is told, as values: the state of the wait, the place in line, the estimate.

The rooms fill these in (rooms/line.py, rooms/decider.py; the estimate's model is theirs), and the
answers (answers.py) show them: the same values become the page's words in the visitor's language
(wording.py), the JSON answer and the page script's data.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

Basis = Literal["window", "capacity", "opening", "paused", "unknown", "degraded"]
"""What an estimate rests on: the window's rate, places freeing up under `max_active`, a scheduled
opening, an operator's hold, nothing known yet, or a store that did not answer."""


@dataclass(frozen=True, slots=True)
class Estimate:
    """How long a visitor will wait, or that no honest figure exists (`seconds` None): the page then
    says "we can't estimate your wait yet", never "less than a minute"."""

    seconds: int | None
    basis: Basis = "window"
    after_opening_max: int | None = None
    """Before a scheduled opening: seconds after it within which everyone now waiting is in."""
    past_closing: bool = False
    """The room closes (`closes_at`) before this wait would end: the page warns."""


UNKNOWN = Estimate(None, "unknown")
PAUSED = Estimate(None, "paused")
DEGRADED = Estimate(None, "degraded")


class WaitState(StrEnum):
    """Why the visitor waits: it decides the page's heading and message (JSON `state`)."""

    BLOCKED = "blocked"
    """A `block` room: the window is full; no line, whoever asks first after a place frees up."""
    LINE = "line"
    """A `fifo` room's line, moving at the window's rate."""
    CAPACITY = "capacity"
    """A `fifo` room held by `max_active`: places free up as others leave."""
    PREQUEUE = "prequeue"
    """Before a scheduled opening."""
    PAUSED = "paused"
    """An operator holds every new visitor (`queue-all`)."""
    DEGRADED = "degraded"
    """The store did not answer (or the proxy was too busy to ask): the page keeps trying."""
    CHALLENGE = "challenge"
    """A room with proof of work: the visitor's browser solves a puzzle before it gets a place."""


@dataclass(frozen=True, slots=True)
class Place:
    """A waiting visitor's place in a `fifo` room's line."""

    position: int
    """Live tickets ahead of the visitor (0: next in)."""
    queue_length: int
    estimate: Estimate
    opens_in: int | None = None
    """Before a scheduled opening: seconds until it (the pre-queue's order is drawn at the opening,
    so no position is shown before)."""
    opens_at: float | None = None
    """Before a scheduled opening: its time (epoch seconds), for the page's "opens at"."""


PROOF_HEADER = "Waitroom-Proof"
"""The request header that carries a solved challenge: `<challenge>;<nonce>`."""


@dataclass(frozen=True, slots=True)
class Challenge:
    """A proof-of-work challenge for a visitor who has no place yet (docs/security.md, "Proof of
    work"): find a `nonce` (0 to 2^32 - 1) such that SHA-256(SHA-256(token) || nonce as 4 bytes,
    big-endian) starts with `difficulty` zero bits, and ask again with the PROOF_HEADER."""

    token: str
    difficulty: int
    expires_in: int
    """Seconds the challenge may be solved and used."""

    def fields(self) -> dict[str, object]:
        """The JSON answer's `proof_of_work` object."""
        return {
            "challenge": self.token,
            "difficulty": self.difficulty,
            "expires_in": self.expires_in,
            "algorithm": "sha256(sha256(challenge) || uint32_be(nonce)) < 2^(256 - difficulty)",
            "header": PROOF_HEADER,
            "value": "<challenge>;<nonce>",
        }


def wait_state(
    place: Place | None, estimate: Estimate | None, challenge: Challenge | None = None
) -> WaitState:
    """The state a wait answer shows: `place` in a `fifo` room's line, `estimate` as given; a
    `challenge` to solve before anything else."""
    if challenge is not None:
        return WaitState.CHALLENGE
    basis = estimate.basis if estimate is not None else None
    if basis == "degraded":
        return WaitState.DEGRADED
    if basis == "paused":
        return WaitState.PAUSED
    if place is None:
        return WaitState.BLOCKED
    if place.opens_in is not None:
        return WaitState.PREQUEUE
    return WaitState.CAPACITY if basis == "capacity" else WaitState.LINE
