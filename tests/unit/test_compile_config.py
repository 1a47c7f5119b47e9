"""config.compile_config: what `waitroom check` runs, without mitmproxy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from waitroom.config import DEFAULT_CONFIG, ConfigError, compile_config


def test_the_shipped_config_compiles() -> None:
    config, templates, verifier = compile_config(DEFAULT_CONFIG)
    # Each room: its wait page, and its closed page (keyed `name:closed`).
    assert set(templates) == {n for room in config.rooms for n in (room.name, f"{room.name}:closed")}
    assert (verifier is None) == (config.jwt is None)


def test_a_jwt_key_needs_a_jwt_section(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "rate_limits: [{name: api, match: {path_prefix: /api}, key: 'jwt:sub', limit: 5, per: 1s}]\n"
    )
    with pytest.raises(ConfigError, match=r"rate_limits\[0\]\.key: jwt:sub needs a `jwt:` section"):
        compile_config(path)


def test_the_check_command_does_not_import_mitmproxy() -> None:
    code = "import sys, waitroom.cli; sys.exit('mitmproxy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
