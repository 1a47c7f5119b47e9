"""store.on_error.OnError: which `store.on_error` policy decides when the store fails."""

from __future__ import annotations

import pytest

from waitroom.config.store import StoreConfig, StoreErrorPolicy
from waitroom.store.base import StoreError
from waitroom.store.memory import MemoryStore
from waitroom.store.on_error import OnError, share


def _on_error(policy: str, live: int | None = None) -> OnError:
    config = StoreConfig(url="redis://localhost", on_error=policy, replicas=3)
    return OnError(config, lambda: 100.0, lambda: live)


@pytest.mark.parametrize(
    ("policy", "live", "replicas"),
    [("open", None, 3), ("closed", None, 3), ("local", None, 3), ("local", 5, 5)],
)
def test_the_policy_and_the_replicas_it_divides_by(policy: str, live: int | None, replicas: int) -> None:
    failed = _on_error(policy, live).failed(StoreError("down", maybe_done=True), "test")
    assert failed.policy is StoreErrorPolicy(policy)
    assert failed.maybe_done
    assert failed.replicas == replicas


def test_the_local_store_is_made_once_at_first_use() -> None:
    on_error = _on_error("local")
    assert on_error.local is None
    store = on_error.local_store()
    assert isinstance(store, MemoryStore)
    assert on_error.local_store() is store


@pytest.mark.parametrize(("limit", "replicas", "each"), [(10, 3, 3), (2, 5, 1), (0, 4, 1)])
def test_a_replicas_share_is_never_zero(limit: int, replicas: int, each: int) -> None:
    assert share(limit, replicas) == each
