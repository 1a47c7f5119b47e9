"""The simulation's clock: virtual seconds since the epoch, moved only by the event loop."""

from __future__ import annotations


class VirtualClock:
    """Reads like `time.time`; `now` only moves forward (the stores' windows rely on it)."""

    __slots__ = ("now",)

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, to: float) -> None:
        if to > self.now:
            self.now = to
