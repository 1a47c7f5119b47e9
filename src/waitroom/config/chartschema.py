"""The Helm chart's values schema for `config.rooms`, `config.rate_limits` and `config.bypass`,
generated from the config models, so that `helm template`/`helm lint` (and editors) refuse early
what the proxy refuses: `python -m waitroom.config.chartschema --write` (`make docs`) rewrites
those parts of charts/waitroom/values.schema.json; `--check` (the test suite) says whether it is
current. The rest of the schema is written by hand.

A JSON schema cannot say everything the models say (`grace` ≥ 1.5 × `retry_after` on duration
strings, `closes_at` after `opens_at`, a template file that must exist): the chart's
pre-install/pre-upgrade hook runs `waitroom check` on the rendered config for those, with the
proxy's own code. The schema is the fast half; it never refuses what the proxy accepts.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import AwareDatetime, BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from waitroom.config import fields
from waitroom.config.durations import parse_duration
from waitroom.config.rules import RateLimitConfig
from waitroom.config.schema import FIFO_ONLY, RoomConfig

ROOT = Path(__file__).resolve().parents[3]
"""The checkout this module is in: a tool for developers, who run it from one (`make docs`)."""
SCHEMA = ROOT / "charts" / "waitroom" / "values.schema.json"

_SEGMENT = r"[^/?#.][^/?#]*|\.[^/?#.][^/?#]*|\.\.[^/?#]+"
PATH_PREFIX = {
    "description": "A path prefix in canonical form: starts with /, no empty, . or .. segment, no ? or #",
    "type": "string",
    # RE2 (Helm's validator has no lookahead): segments that are neither empty, `.` nor `..`.
    "pattern": rf"^(/({_SEGMENT}))+/?$|^/$",
}
ISO_TIME = {
    "type": "string",
    "description": "ISO 8601 with a zone, e.g. 2026-12-01T10:00:00+01:00",
    "pattern": r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$",
}
HOST = {"type": "string", "minLength": 1, "pattern": r"^[^/ ?#@]+$"}


def _validator_of(annotated: Any) -> Any:
    return typing.get_args(annotated)[1].func


_PATH_PREFIX_CHECK = _validator_of(fields.PathPrefix)
_HOST_CHECK = _validator_of(fields.Host)


def generated() -> dict[str, Any]:
    """The generated parts, by their JSON pointer in values.schema.json."""
    return {
        "/definitions/pathPrefix": PATH_PREFIX,
        "/properties/config/properties/rooms": {"type": "array", "items": _room()},
        "/properties/config/properties/rate_limits": {"type": "array", "items": _model(RateLimitConfig)},
        "/properties/config/properties/bypass": {
            "type": "array",
            "items": {"$ref": "#/definitions/pathPrefix"},
        },
    }


def _room() -> dict[str, Any]:
    schema = _model(RoomConfig)
    # The model's `queue: fifo` rule for FIFO_ONLY fields, as an if/then (a null value is no value).
    given = [{"required": [name], "properties": {name: {"not": {"type": "null"}}}} for name in FIFO_ONLY]
    schema["if"] = {"anyOf": given}
    schema["then"] = {
        "required": ["queue"],
        "properties": {"queue": {"const": "fifo"}},
        "description": f"{', '.join(FIFO_ONLY)} need queue: fifo",
    }
    return schema


def _model(model: type[BaseModel]) -> dict[str, Any]:
    properties = {name: _field(info) for name, info in model.model_fields.items()}
    required = [name for name, info in model.model_fields.items() if info.is_required()]
    schema: dict[str, Any] = {"type": "object"}
    if required:
        schema["required"] = required
    schema["properties"] = properties
    schema["additionalProperties"] = False
    return schema


def _field(info: FieldInfo) -> dict[str, Any]:
    schema = _type(info.annotation, list(info.metadata))
    if info.description:
        schema = {"description": info.description.split("\n\n")[0].replace("\n", " "), **schema}
    if info.default not in (PydanticUndefined, None) and isinstance(info.default, str | int | float | bool):
        schema.setdefault("default", info.default)
    return schema


def _type(annotation: Any, metadata: list[Any]) -> dict[str, Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *more = typing.get_args(annotation)
        return _type(inner, [*metadata, *more])
    checks = [m.func for m in metadata if hasattr(m, "func")]
    if parse_duration in checks:
        return {"$ref": "#/definitions/duration"}
    if _PATH_PREFIX_CHECK in checks:
        return {"$ref": "#/definitions/pathPrefix"}
    if _HOST_CHECK in checks:
        return {"anyOf": [HOST, {"type": "null"}]}
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        options = [_type(m, metadata) for m in members if m is not type(None)]
        if type(None) in members:
            options.append({"type": "null"})
        return options[0] if len(options) == 1 else {"anyOf": options}
    if origin is Literal:
        return {"enum": list(typing.get_args(annotation))}
    if origin is list:
        (item,) = typing.get_args(annotation)
        return {"type": "array", "items": _type(item, [])}
    if origin is dict:
        _, value = typing.get_args(annotation)
        return {"type": "object", "additionalProperties": _type(value, [])}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model(annotation)
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return _bounded({"type": "integer"}, metadata)
    if annotation is float:
        return _bounded({"type": "number"}, metadata)
    if annotation is str:
        patterns = [m.pattern for m in metadata if getattr(m, "pattern", None)]
        return {"type": "string", **({"pattern": patterns[0]} if patterns else {})}
    if annotation is Path:
        return {"type": "string"}
    if annotation in (datetime, AwareDatetime):
        return dict(ISO_TIME)
    raise TypeError(f"no JSON schema for {annotation!r}: teach waitroom.config.chartschema")


def _bounded(schema: dict[str, Any], metadata: list[Any]) -> dict[str, Any]:
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            schema["minimum"] = m.ge
        elif isinstance(m, annotated_types.Le):
            schema["maximum"] = m.le
        elif isinstance(m, annotated_types.Gt):
            schema["exclusiveMinimum"] = m.gt
        elif isinstance(m, annotated_types.Lt):
            schema["exclusiveMaximum"] = m.lt
    return schema


def render(current: dict[str, Any]) -> dict[str, Any]:
    """`current` (the chart's schema) with the generated parts replaced."""
    schema: dict[str, Any] = json.loads(json.dumps(current))
    for pointer, part in generated().items():
        *path, last = pointer.strip("/").split("/")
        node = schema
        for key in path:
            node = node.setdefault(key, {})
        node[last] = part
    return schema


def text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    current = SCHEMA.read_text(encoding="utf-8")
    wanted = text(render(json.loads(current)))
    if "--check" in args:
        if current != wanted:
            print(f"{SCHEMA} is not current: run `make docs`", file=sys.stderr)
            return 1
        return 0
    if "--write" not in args:
        sys.stdout.write(wanted)
        return 0
    if current != wanted:
        SCHEMA.write_text(wanted, encoding="utf-8")
        print(f"wrote {SCHEMA}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
