"""The browser suite finds Debian's chromium, and says how to install it when it cannot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.browser.helpers import CHROMIUM_ENV, ChromiumMissing, find_chromium


def test_a_missing_chromium_fails_with_the_command_that_installs_it(tmp_path: Path) -> None:
    with pytest.raises(ChromiumMissing, match=r"run `make system-deps` \(it runs apt-get install chromium\)"):
        find_chromium({CHROMIUM_ENV: str(tmp_path / "no-chromium-here")})


def test_debian_chromium_is_there() -> None:
    """Not a skip when it is missing: this fails, with the message above."""
    found = find_chromium({})
    assert Path(found).is_file()
    assert os.access(found, os.X_OK)
