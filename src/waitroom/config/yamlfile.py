"""Reading a config file safely, and pydantic's errors as lines that name their field: the size
bound, UTF-8, YAML without aliases, every error of a file at once, and "did you mean" for a key
that is close to a known one. config.py validates what this reads."""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from waitroom.config.fields import ConfigError

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


def _line(where: str, message: str) -> str:
    message = message.removeprefix("Value error, ")[:300]
    if message.startswith(("rooms[", "rate_limits[", "cluster.")):  # model-level errors name their field
        return message
    return f"{where}: {message}" if where else message


def one_line(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    return _line(_field_path(first["loc"]), first["msg"])


SUGGEST_CUTOFF = 0.75
"""How close an unknown key must be to a known one to be suggested (difflib's ratio): `new_session`
→ `new_sessions`, `max_activ` → `max_active`; `colour` suggests nothing."""


def all_errors(error: ValidationError, root: type[BaseModel]) -> list[str]:
    """Every problem pydantic found, one line each, in the file's order. A key that is not known
    (`new_session`) is reported once, with the closest known key of its model (`did you mean
    new_sessions?`), and without the `Field required` of the key it was meant to be."""
    errors = error.errors(include_url=False)
    missing = {tuple(e["loc"]) for e in errors if e["type"] == "missing"}
    meant: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # the unknown key's loc → the missing key's loc
    suggestions: dict[tuple[Any, ...], str] = {}
    for e in errors:
        loc = tuple(e["loc"])
        if e["type"] != "extra_forbidden" or not isinstance(loc[-1], str):
            continue
        parent = loc[:-1]
        siblings = [m[-1] for m in missing if m[:-1] == parent and isinstance(m[-1], str)]
        close = difflib.get_close_matches(loc[-1], siblings, n=1, cutoff=SUGGEST_CUTOFF)
        if close:
            meant[loc] = (*parent, close[0])
            suggestions[loc] = close[0]
            continue
        known = sorted(_fields_at(root, parent))
        close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=SUGGEST_CUTOFF)
        if close:
            suggestions[loc] = close[0]
    replaced = {missing_loc: extra for extra, missing_loc in meant.items()}
    lines: list[str] = []
    seen: set[str] = set()
    for e in errors:
        loc = tuple(e["loc"])
        if loc in meant:
            continue  # reported where the key it was meant to be is missing
        if loc in replaced:
            loc = replaced[loc]
        where = _field_path(loc)
        if loc in suggestions:
            line = f"{where}: unknown key; did you mean {suggestions[loc]}?"
        elif e["type"] == "extra_forbidden":
            line = f"{where}: unknown key"
        else:
            line = _line(where, e["msg"])
        if where in seen:
            continue  # a union reports each of its members' errors for one value: the first says it
        seen.add(where)
        lines.append(line)
    return lines


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> set[str]:
    """The field names of the model found at `loc` below `model` (list indexes and optional
    values unwrapped); empty when no model is there."""
    annotation: Any = model
    for part in loc:
        annotation = _model_in(annotation)
        if annotation is None:
            return set()
        if isinstance(part, int):
            continue
        field = annotation.model_fields.get(part)
        if field is None:
            return set()
        annotation = field.annotation
    found = _model_in(annotation)
    return set(found.model_fields) if found is not None else set()


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds: itself, or inside `list[...]` or `X | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
