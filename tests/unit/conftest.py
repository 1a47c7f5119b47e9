from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.adminport import FakeClock, Proxy, write_config


@pytest.fixture
async def admin_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Proxy]:
    """A runtime loaded from adminport.CONFIG on the embedded store, with a clock that stands still."""
    monkeypatch.setenv("WAITROOM_SECRET", "unit-test-secret-0123456789")
    proxy = Proxy(write_config(tmp_path), FakeClock())
    yield proxy
    await proxy.runtime.close()
