"""What the config models share: their strict base, the one-line ConfigError, and the field
types written the same way everywhere (durations, path prefixes, hosts, names)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

from waitroom.config.durations import parse_duration
from waitroom.web.target import canonical_prefix

Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written in the file as ``500ms``, ``60s``, ``30m``, ``2h`` or a number of seconds."""

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
"""Room and rule names end up in cookie names, Redis keys and metric labels: keep them plain."""


class ConfigError(Exception):
    """A config that cannot be used. `str()` is one line naming the field and the problem (the first
    one, and how many more there are); `problems` lists every one, a line each (`waitroom check`
    prints them all)."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems) or (message,)

    @classmethod
    def of(cls, problems: Sequence[str], path: object = None) -> ConfigError:
        """One error for several problems: the first names itself, the rest are counted (`waitroom
        check FILE` lists them). With `path`, every problem is prefixed with it."""
        lines = [f"{path}: {p}" for p in problems] if path is not None else list(problems)
        more = len(lines) - 1
        message = lines[0]
        if more:
            message += f" (and {more} more" + (f": waitroom check {path})" if path is not None else ")")
        return cls(message, lines)


class StrictModel(BaseModel):
    # Attribute docstrings become the fields' descriptions: docs/config.md is generated from them
    # (python -m waitroom.config.reference, `make docs`).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _path_prefix(value: str) -> str:
    """Prefixes are compared with the canonical decoded path (target.py), so one that is not in
    that form (`/a/../shop`, `//shop`, `/%73hop`) could never match: refused, naming the fix."""
    if not value.startswith("/"):
        raise ValueError(f"must start with '/' (got {short_repr(value)})")
    if "?" in value or "#" in value:
        raise ValueError(f"must be a path without query or fragment (got {short_repr(value)})")
    return canonical_prefix(value)


PathPrefix = Annotated[str, BeforeValidator(lambda v: _path_prefix(str(v)))]


def _host(value: str | None) -> str | None:
    if value is None:
        return None
    host = str(value).strip().lower().rstrip(".")
    if not host or any(c in host for c in "/ ?#@"):
        raise ValueError(f"must be a host name such as shop.example.com (got {value!r})")
    return host


Host = Annotated[str | None, BeforeValidator(_host)]


class Match(StrictModel):
    path_prefix: PathPrefix = "/"
    """The paths covered, in canonical form (`/shop`, not `//shop`, `/%73hop` or `/a/../shop`: refused,
    naming the form to write)."""
    host: Host = None
    """Only this host (needs mitmdump's `keep_host_header`)."""
