from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.servers import Nginx, WerkzeugApp


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    server = Nginx(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def werkzeug_app() -> Iterator[WerkzeugApp]:
    app = WerkzeugApp()
    yield app
    app.stop()
