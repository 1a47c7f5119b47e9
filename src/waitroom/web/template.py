"""The pages' templates: `{{ name }}` placeholders, checked when the config loads.

The shipped pages (pages/*.html) and custom ones (`rooms[].template`, `closed_template`) get the
same values; docs/concepts.md lists them. `{{ style }}` and `{{ script }}` expand to the shipped
stylesheet (pages/style.css) and page script (pages/client.js), so a custom page can look like the
built-in one and poll, count down and enter without a script of its own. `{{ text:KEY }}` is any
string of strings.KEYS that needs no more than the room's title, in the visitor's language.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from waitroom.web.strings import KEYS, Catalog, Strings

PAGES = resources.files("waitroom.web") / "pages"
"""The shipped pages, package data: found wherever the package is installed."""
DEFAULT_TEMPLATE = PAGES / "waitroom.html"
CLOSED_TEMPLATE = PAGES / "closed.html"
REFUSED_TEMPLATE = PAGES / "refused.html"
MAX_TEMPLATE_BYTES = 64 * 1024
TEMPLATE_VARIABLES = frozenset(
    {
        # numbers and data
        "retry_after",
        "status",
        "data",
        "position",
        "queue_length",
        "eta_seconds",
        "opens_in",
        # the visitor's language (text, HTML-escaped)
        "lang",
        "dir",
        "title",
        "room",
        "page_title",
        "heading",
        "message",
        "status_text",
        "place",
        "eta",
        "next_try",
        "noscript",
        "footer",
        # markup
        "refresh",
        "style",
        "script",
    }
)
TEXT_PREFIX = "text:"

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?::[A-Za-z0-9_.]+)?)\s*\}\}")


class TemplateError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Template:
    """A page split once into literal text and placeholder names, so rendering is a join."""

    parts: tuple[str, ...]
    names: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> Template:
        pieces = _PLACEHOLDER.split(text)
        literals, names = tuple(pieces[0::2]), tuple(pieces[1::2])
        for name in names:
            _check(name)
        return cls(literals, names)

    @classmethod
    def load(cls, path: Path | Traversable) -> Template:
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise TemplateError(f"cannot read {path}: {e.strerror or e}") from None
        if len(raw) > MAX_TEMPLATE_BYTES:
            raise TemplateError(f"{path} is {len(raw)} bytes; the limit is {MAX_TEMPLATE_BYTES}")
        try:
            return cls.parse(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise TemplateError(f"{path} is not UTF-8 text") from None

    @property
    def text_keys(self) -> frozenset[str]:
        """The strings keys the page names as `{{ text:KEY }}`."""
        return frozenset(n.removeprefix(TEXT_PREFIX) for n in self.names if n.startswith(TEXT_PREFIX))

    def render(self, values: Mapping[str, str]) -> str:
        out = [self.parts[0]]
        for name, literal in zip(self.names, self.parts[1:], strict=True):
            out.append(values[name])
            out.append(literal)
        return "".join(out)


def _check(name: str) -> None:
    if name.startswith(TEXT_PREFIX):
        key = name.removeprefix(TEXT_PREFIX)
        spec = KEYS.get(key)
        if spec is None:
            close = difflib.get_close_matches(key, KEYS, n=1, cutoff=0.6)
            hint = f"; did you mean text:{close[0]}?" if close else ""
            raise TemplateError(f"unknown string {{{{ {name} }}}}{hint}")
        if spec.placeholders - {"title"}:  # a count, a time, a position: only the page knows it
            raise TemplateError(
                f"{{{{ {name} }}}} depends on the wait (a number or a time); use the placeholders "
                "heading, place, eta, next_try or noscript"
            )
        return
    if name not in TEMPLATE_VARIABLES:
        close = difflib.get_close_matches(name, TEMPLATE_VARIABLES, n=1, cutoff=0.6)
        hint = f"did you mean {{{{ {close[0]} }}}}? " if close else ""
        raise TemplateError(
            f"unknown template variable {{{{ {name} }}}} ({hint}known: "
            f"{', '.join(sorted(TEMPLATE_VARIABLES))}, and text:KEY for a string)"
        )


@functools.cache
def builtin_style() -> str:
    """The shipped stylesheet, as a `<style>` element."""
    return f"<style>\n{(PAGES / 'style.css').read_text(encoding='utf-8').strip()}\n</style>"


@functools.cache
def builtin_script() -> str:
    """The shipped page script (polls, counts down, enters), as a `<script>` element: its comment
    lines and indentation left out, which every page would otherwise carry."""
    return _script("client.js")


@functools.cache
def proof_script() -> str:
    """The proof-of-work solver (pages/proof.js), as a `<script>` element: on the pages that carry
    a challenge only, before the page script, which calls it."""
    return _script("proof.js")


def _script(name: str) -> str:
    lines = (line.strip() for line in (PAGES / name).read_text(encoding="utf-8").splitlines())
    code = "\n".join(line for line in lines if line and not line.startswith("//"))
    return f"<script>\n{code}\n</script>"


@dataclass(frozen=True, eq=False, slots=True)
class Pages:
    """A config's pages: each room's wait and closed templates, the refusal page, and the strings
    of every language. Built once per config (build.py); compared by identity."""

    catalog: Catalog
    wait: Mapping[str, Template]
    """By room name."""
    closed: Mapping[str, Template]
    """By room name."""
    refused: Template
    forced: Mapping[str, str] = field(default_factory=dict)
    """Rooms whose pages speak one language (`rooms[].language`): room name → language."""

    def strings(self, room: str | None, accept_language: str) -> Strings:
        """The strings for a request: its room's language, else the visitor's (`Accept-Language`)."""
        return self.catalog.for_visitor(accept_language, self.forced.get(room) if room else None)
