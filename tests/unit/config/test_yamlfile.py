"""config/yamlfile.py: reading the file, errors that name the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from waitroom.config.fields import ConfigError
from waitroom.config.schema import load_config
from waitroom.rooms.sessions import keys_from_secret

KEY_A = keys_from_secret("key-a-0123456789abcdef")

KEY_B = keys_from_secret("key-b-0123456789abcdef")

NOW = 1_800_000_000.0


def test_yaml_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("rooms:\n  - name: [\n")
    with pytest.raises(ConfigError, match=r"line \d+"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
