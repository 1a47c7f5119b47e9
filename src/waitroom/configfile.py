"""Reading a config file safely, and pydantic's errors as one line: the size bound, UTF-8, YAML
without aliases, and the field an error is about. config.py validates what this reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from waitroom.configfields import ConfigError

MAX_CONFIG_BYTES = 1024 * 1024
"""A config file is a few KB; a larger one is refused before it is parsed."""


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: a few hundred bytes of nested `*alias` references expand to gigabytes
    (an alias bomb), and a waitroom config has no use for them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a waitroom config", event.start_mark
            )
        return super().compose_node(parent, index)


def read_yaml(path: Path) -> Any:
    """The file's YAML, read within the size bound; every failure is a ConfigError naming the file."""
    try:
        raw = path.read_bytes()
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KB: not a waitroom config")
        text = raw.decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader that refuses aliases
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}: {problem}{where}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
    return data


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-") or part in ("literal", "str", "int"):
            continue  # validator names pydantic adds for union members; not part of the file
        else:
            out += f".{part}" if out else part
    return out


def one_line(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    message = first["msg"].removeprefix("Value error, ")[:300]
    where = _field_path(first["loc"])
    if message.startswith(("rooms[", "rate_limits[", "cluster.")):  # model-level errors name their field
        return message
    return f"{where}: {message}" if where else message
