"""fallback.StoreFallback: the one `store.on_error` for rooms and rules."""

from __future__ import annotations

import pytest

from waitroom.config import StoreConfig, StoreErrorPolicy
from waitroom.fallback import StoreFallback
from waitroom.store import MemoryStore, Overloaded, StoreError


async def _fails(maybe_done: bool = False) -> str:
    raise StoreError("down", maybe_done=maybe_done)


async def _local(store: MemoryStore, replicas: int) -> str:
    assert isinstance(store, MemoryStore)
    return f"local/{replicas}"


def _fallback(policy: str, live: int | None = None) -> StoreFallback:
    config = StoreConfig(url="redis://localhost", on_error=policy, replicas=3)
    return StoreFallback(config, lambda: 100.0, lambda: live)


async def _ask(fallback: StoreFallback, shared: object) -> object:
    return await fallback.ask(
        shared,  # type: ignore[arg-type]
        open_=lambda: "open",
        closed=lambda: "closed",
        local=_local,
        what="test",
    )


async def test_the_store_answers_when_it_can() -> None:
    async def ok() -> str:
        return "shared"

    answer = await _ask(_fallback("closed"), ok)
    assert (answer.value, answer.degraded, answer.maybe_done) == ("shared", None, False)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("policy", "live", "value"),
    [("open", None, "open"), ("closed", None, "closed"), ("local", None, "local/3"), ("local", 5, "local/5")],
)
async def test_the_policy_answers_when_the_store_fails(policy: str, live: int | None, value: str) -> None:
    fallback = _fallback(policy, live)
    answer = await _ask(fallback, lambda: _fails(maybe_done=True))
    assert answer.value == value  # type: ignore[attr-defined]
    assert answer.degraded is StoreErrorPolicy(policy)  # type: ignore[attr-defined]
    assert answer.maybe_done  # type: ignore[attr-defined]
    assert (fallback.local is not None) == (policy == "local")


async def test_overloaded_passes_up() -> None:
    async def busy() -> str:
        raise Overloaded("queue", sent=False)

    with pytest.raises(Overloaded):
        await _ask(_fallback("open"), busy)
