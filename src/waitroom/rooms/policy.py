"""The store's view of a room: what each replica asks the store to enforce.

With `replicas` > 1 (the `local` failure policy divides the limits among the replicas) each one gets
its share of the room's limits.
"""

from __future__ import annotations

import math

from waitroom.config.schema import RoomConfig
from waitroom.store.base import QueuePolicy, RoomPolicy
from waitroom.store.on_error import share


def room_policy(room: RoomConfig, replicas: int = 1, ttl: float = 0.0) -> RoomPolicy:
    """The store's view of a room; with `replicas` > 1 each one gets its share of the limits.
    `ttl`: sessions idle this long no longer count against max_active (active.active_ttl)."""
    return RoomPolicy(
        name=room.name,
        new_sessions=share(room.new_sessions, replicas),
        window=room.window,
        block_for=room.block_for,
        max_active=share(room.max_active, replicas) if room.max_active else 0,
        ttl=ttl,
        places_per_ip=room.places_per_ip or 0,
    )


def queue_policy(
    room: RoomConfig, replicas: int = 1, *, hold: bool = False, ttl: float = 0.0, seed: str = ""
) -> QueuePolicy:
    """The store's view of a `fifo` room; with `replicas` > 1 each one gets its share of the
    limits. `ttl`: the session ttl (for max_active); `seed`: the event's (see event_seed)."""
    return QueuePolicy(
        name=room.name,
        new_sessions=share(room.new_sessions, replicas),
        window=room.window,
        abandon_after=room.abandon_after_seconds,
        grace=room.grace_seconds,
        hold=hold,
        max_active=share(room.max_active, replicas) if room.max_active else 0,
        ttl=ttl,
        opens_at=room.opens_at.timestamp() if room.opens_at else 0.0,
        seed=seed,
        tickets_per_ip=room.tickets_per_ip or 0,
        places_per_ip=room.places_per_ip or 0,
        # One address, one draw at an opening unless the operator allows more.
        draws_per_ip=(room.draws_per_ip or 1) if room.places_per_ip else 0,
        retry_after=room.retry_after_seconds,
        max_retry_after=max(room.retry_after_seconds, math.floor(room.max_retry_after_seconds)),
    )
