"""What a config reload changed, as lines an operator reads in the log: keys with their old and new
values (`rooms[shop].max_active: none → 500`), rooms and rules keyed by name (so reordering them
changes nothing), durations as they are written (`30s`), and nothing secret: URLs lose their
credentials (`redis://***@host:6379`). Secrets themselves never are in the file (they come from
the environment); a file a value points to (a template) shows as `file changed`."""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from waitroom.config.durations import format_duration, parse_duration

MAX_LINES = 20
"""Changes listed one per line; past these, `and N more`."""

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s'\"]*@")
_PASSWORD_PARAM = re.compile(r"(?i)\b(password=)[^&\s'\"]*")


def redact(text: str) -> str:
    """`text` without the credentials a URL in it may carry (`user:pass@` and `password=`), for
    logs, /readyz and `waitroom status`."""
    return _PASSWORD_PARAM.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


def config_changes(
    old: BaseModel,
    new: BaseModel,
    changed_files: Mapping[str, bool] | None = None,
) -> list[str]:
    """Every change from `old` to `new`, one line each. `changed_files`: keys (as the lines name
    them, e.g. `rooms[shop].template`) whose file's contents changed though its path did not."""
    before: dict[str, str] = {}
    after: dict[str, str] = {}
    _flatten(old, "", before)
    _flatten(new, "", after)
    lines = []
    gone_items = _items(before) - _items(after)
    new_items = _items(after) - _items(before)
    for key in after:
        item = _item_of(key)
        if item in new_items:
            continue
        if key not in before:
            lines.append(f"{key}: (unset) → {after[key]}")
        elif before[key] != after[key]:
            lines.append(f"{key}: {before[key]} → {after[key]}")
    for key in before:
        item = _item_of(key)
        if key not in after and item not in gone_items:
            lines.append(f"{key}: {before[key]} → (unset)")
    lines += [f"{item}: added" for item in sorted(new_items)]
    lines += [f"{item}: removed" for item in sorted(gone_items)]
    for key, changed in (changed_files or {}).items():
        if changed and not any(line.startswith(f"{key}:") for line in lines):
            lines.append(f"{key}: file changed")
    return lines


def summarise(lines: list[str]) -> list[str]:
    """At most MAX_LINES of `lines`, then `and N more`."""
    if len(lines) <= MAX_LINES:
        return lines
    return [*lines[:MAX_LINES], f"and {len(lines) - MAX_LINES} more"]


_ITEM = re.compile(r"^([a-z_]+\[[^\]]+\])")


def _item_of(key: str) -> str | None:
    """`rooms[shop]` for `rooms[shop].max_active`; None for a key outside a named list."""
    found = _ITEM.match(key)
    return found[1] if found else None


def _items(flat: dict[str, str]) -> set[str]:
    return {item for key in flat if (item := _item_of(key)) is not None}


def _flatten(value: Any, prefix: str, out: dict[str, str], field: FieldInfo | None = None) -> None:
    if isinstance(value, BaseModel):
        for name, info in type(value).model_fields.items():
            _flatten(getattr(value, name), f"{prefix}.{name}" if prefix else name, out, info)
        return
    if isinstance(value, list) and not value and field is not None and _lists_models(field):
        return  # no rooms (rules) at all: each one that was there shows as removed
    if isinstance(value, list) and value and all(isinstance(v, BaseModel) and _name(v) for v in value):
        for item in value:
            _flatten(item, f"{prefix}[{_name(item)}]", out)
        return
    out[prefix] = _show(value, prefix, field)


def _lists_models(field: FieldInfo) -> bool:
    args = typing.get_args(field.annotation)
    return bool(args) and isinstance(args[0], type) and issubclass(args[0], BaseModel)


def _name(model: BaseModel) -> str | None:
    name = getattr(model, "name", None)
    return name if isinstance(name, str) else None


def _show(value: Any, key: str, field: FieldInfo | None) -> str:
    if value is None:
        return "none"
    if isinstance(value, float) and field is not None and _is_duration(field):
        return format_duration(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    if isinstance(value, str):
        return redact(value) if key.endswith("url") else value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return redact(json.dumps(_plain(value), separators=(",", ":")))


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _is_duration(field: FieldInfo) -> bool:
    """A field declared as `Duration` (or `Duration | None`)."""
    return _validates_duration(field.metadata) or _annotated_duration(field.annotation)


def _validates_duration(metadata: Any) -> bool:
    return any(getattr(m, "func", None) is parse_duration for m in metadata)


def _annotated_duration(annotation: Any) -> bool:
    if typing.get_origin(annotation) is typing.Annotated:
        return _validates_duration(annotation.__metadata__)
    return any(_annotated_duration(arg) for arg in typing.get_args(annotation))
