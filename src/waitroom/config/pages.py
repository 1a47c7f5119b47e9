"""The `pages:` section: the languages of the pages visitors see, and a folder of strings files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from waitroom.config.fields import StrictModel, short_repr
from waitroom.web.negotiation import TAG


def _tag(value: str) -> str:
    if not TAG.fullmatch(value):
        raise ValueError(f"must be a language tag such as en, de or pt-BR (got {short_repr(value)})")
    return value


LanguageTag = Annotated[str, AfterValidator(_tag)]


class PagesConfig(StrictModel):
    strings_dir: Path | None = None
    """A folder of strings files, `<language>.json` (relative to the config file): each adds a
    language or overrides built-in strings key by key."""
    default_language: LanguageTag = "en"
    """The language of visitors whose `Accept-Language` names none that the pages speak."""
    languages: list[LanguageTag] | None = None
    """Offer only these languages (default: every built-in one and every file in `strings_dir`)."""
