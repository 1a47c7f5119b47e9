"""What the pages say, in the visitor's language: one strings file per language.

The built-in files are package data (`web/strings/<tag>.json`); `pages.strings_dir` adds languages
or overrides built-in strings key by key. A file is a flat JSON object: a key → a string, or for a
counted string (marked `n` in KEYS) → its plural forms, e.g. `{"one": "…{n} second", "other": "…{n}
seconds"}`. `_meta` names the language, its plural rule (PLURAL_RULES) and its direction. Strings
are plain text: pages escape them, so a translation can never add markup. Placeholders are `{n}`,
`{title}`, `{time}` and `{clock}`, each allowed only where KEYS says.

The plural rules are CLDR's cardinal rules for whole numbers, written twice: here and in the page's
script (pages/client.js), which must agree (a browser test compares them).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import NamedTuple

from waitroom.web.negotiation import TAG, lookup, negotiate_language

BUILT_IN = resources.files("waitroom.web") / "strings"
MAX_FILE_BYTES = 64 * 1024
FALLBACK = "en"
"""The language every other falls back to, key by key, after the configured default."""


class Key(NamedTuple):
    placeholders: frozenset[str]
    counted: bool = False
    """Its value is a set of plural forms, chosen by `{n}`."""


def _key(*placeholders: str, counted: bool = False) -> Key:
    return Key(frozenset(placeholders) | ({"n"} if counted else set()), counted)


KEYS: dict[str, Key] = {
    "title.wait": _key("title"),
    "title.closed": _key("title"),
    "wait.heading": _key("title"),
    "wait.blocked": _key("title"),
    "wait.line": _key("title"),
    "wait.capacity": _key("title"),
    "wait.paused": _key("title"),
    "wait.degraded": _key("title"),
    "wait.challenge": _key("title"),
    "wait.keep_open": _key("title"),
    "prequeue.heading": _key("title", "time"),
    "prequeue.heading_day": _key("title", "time"),
    "prequeue.body": _key("title"),
    "prequeue.countdown": _key("clock"),
    "prequeue.opening": _key(),
    "prequeue.after": _key(counted=True),
    "place.position": _key("n"),
    "block.no_line": _key(),
    "block.soon": _key(),
    "block.minutes": _key(counted=True),
    "block.hours": _key(counted=True),
    "eta.soon": _key(),
    "eta.minutes": _key(counted=True),
    "eta.hours": _key(counted=True),
    "eta.unknown": _key(),
    "eta.paused": _key(),
    "eta.closing": _key(),
    "status.waiting": _key(),
    "status.prequeue": _key(),
    "status.checking": _key(),
    "status.still": _key(),
    "status.trouble": _key(),
    "status.entering": _key(),
    "status.solving": _key(),
    "next_try": _key(counted=True),
    "noscript": _key(counted=True),
    "challenge.noscript": _key(),
    "footer": _key("title"),
    "closed.heading": _key("title"),
    "closed.body": _key("title"),
    "refused.heading": _key(),
    "refused.rate": _key(),
    "refused.tickets": _key("title"),
    "refused.post": _key(),
    "refused.wait": _key(counted=True),
    "refused.ready": _key(),
    "refused.back": _key(),
    "error.heading": _key(),
    "error.bad_request": _key(),
    "error.too_large": _key(),
    "error.unavailable": _key(),
}
"""Every string a page says, and the placeholders each may hold."""


def _one_other(n: int) -> str:
    return "one" if n == 1 else "other"


def _zero_one_other(n: int) -> str:
    return "one" if n in (0, 1) else "other"


def _few(n: int) -> bool:
    return 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14


def _polish(n: int) -> str:
    return "one" if n == 1 else "few" if _few(n) else "many"


def _east_slavic(n: int) -> str:
    return "one" if n % 10 == 1 and n % 100 != 11 else "few" if _few(n) else "many"


def _czech(n: int) -> str:
    return "one" if n == 1 else "few" if 2 <= n <= 4 else "other"


def _none(n: int) -> str:
    return "other"


PLURAL_RULES: dict[str, tuple[Callable[[int], str], frozenset[str]]] = {
    "one_other": (_one_other, frozenset({"one", "other"})),  # en, de, nl, it, es, sv, …
    "zero_one_other": (_zero_one_other, frozenset({"one", "other"})),  # fr, pt (0 and 1 are "one")
    "polish": (_polish, frozenset({"one", "few", "many", "other"})),
    "east_slavic": (_east_slavic, frozenset({"one", "few", "many", "other"})),  # ru, uk, be
    "czech": (_czech, frozenset({"one", "few", "other"})),  # cs, sk
    "none": (_none, frozenset({"other"})),  # ja, zh, ko, …: one form
}
"""Each rule: the category of a whole number, and the forms a counted string must give (`other`
always)."""

_PLACEHOLDER = re.compile(r"\{([A-Za-z_]+)\}")

Text = str | dict[str, str]


def title_in(title: str | Mapping[str, str] | None, name: str, language: str, default: str) -> str:
    """A room's title for a page in `language`: its own, the default language's, or the first one
    given; the room's name when it has no title."""
    if title is None:
        return name
    if isinstance(title, str):
        return title
    spelled = {tag.lower(): tag for tag in title}
    found = lookup(language, spelled) or lookup(default, spelled)
    return title[found] if found is not None else next(iter(title.values()))


class StringsError(Exception):
    """A strings file that cannot be used; one line naming the file and the key."""


@dataclass(frozen=True, eq=False, slots=True)
class Strings:
    """One language's strings, complete (every key of KEYS). Compared by identity: one object per
    language and loaded config, so answers can be cached by it."""

    tag: str
    name: str
    plural: str
    direction: str
    texts: Mapping[str, Text]

    def category(self, n: int) -> str:
        return PLURAL_RULES[self.plural][0](n)

    def text(self, key: str, n: int | None = None, **values: str) -> str:
        """The string for `key` with its placeholders filled (a counted one chosen by `n`)."""
        raw = self.texts[key]
        if isinstance(raw, dict):
            count = n if n is not None else 0
            raw = raw.get(self.category(count)) or raw["other"]
        if n is not None:
            values["n"] = str(n)
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), raw)

    def pick(self, keys: Iterable[str]) -> dict[str, Text]:
        """The raw strings of `keys`, for the page's script."""
        return {key: self.texts[key] for key in keys}


@dataclass(frozen=True, eq=False, slots=True)
class Catalog:
    """Every language the pages can speak, and which of them are offered to visitors."""

    languages: Mapping[str, Strings]
    default: str
    offered: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    """What `waitroom check` should mention: keys a strings file lacks (they fall back)."""

    def for_visitor(self, accept_language: str, forced: str | None = None) -> Strings:
        """The strings for a request: the room's forced language, else the best of its
        `Accept-Language` among the offered ones, else the default."""
        if forced is not None:
            return self.languages[forced]
        return self.languages[negotiate_language(accept_language, self.offered, self.default)]

    def find(self, tag: str) -> str | None:
        """The language `tag` names (`pt-BR` finds `pt`), as the catalog spells it."""
        return lookup(tag, {t.lower(): t for t in self.languages})

    @classmethod
    def load(
        cls,
        strings_dir: Path | None = None,
        *,
        default: str = FALLBACK,
        offered: Iterable[str] | None = None,
    ) -> Catalog:
        """The built-in languages, then `strings_dir`'s files over them. StringsError names the
        file and key of the first problem."""
        files = dict(_built_in())
        if strings_dir is not None:
            try:
                paths = sorted(p for p in strings_dir.iterdir() if p.suffix == ".json")
            except OSError as e:
                raise StringsError(f"{strings_dir}: cannot read: {e.strerror or e}") from None
            for path in paths:
                tag = path.stem
                if not TAG.fullmatch(tag):
                    raise StringsError(f"{path}: the file name must be a language tag such as de or pt-BR")
                known = next((t for t in files if t.lower() == tag.lower()), None)
                own = _parse(path, _read(path), base=files.get(known) if known else None)
                if known is not None:
                    files[known] = _Parsed(
                        files[known].meta | own.meta, {**files[known].texts, **own.texts}, own.source
                    )
                else:
                    files[tag] = own
        found = {t.lower(): t for t in files}
        default_tag = found.get(default.lower())
        if default_tag is None:
            raise StringsError(
                f"default language {default!r} has no strings (known: {', '.join(sorted(files))})"
            )
        warnings = []
        languages: dict[str, Strings] = {}
        for tag in sorted(files, key=lambda t: (t != default_tag, t != FALLBACK, t)):
            parsed = files[tag]
            missing = [k for k in KEYS if k not in parsed.texts]
            # A missing key falls back to the default language's string, the default's to English.
            fallback = languages[default_tag].texts if tag != default_tag else files[FALLBACK].texts
            texts = {**{key: fallback[key] for key in missing}, **parsed.texts}
            if missing:
                more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                used = FALLBACK if tag == default_tag else default_tag
                listed = ", ".join(missing[:5])
                warnings.append(f"{parsed.source}: no strings for {listed}{more} (the {used} ones are used)")
            _check_plural_forms(parsed.source, parsed.texts, parsed.meta["plural"])
            meta = parsed.meta
            languages[tag] = Strings(tag, meta["name"], meta["plural"], meta["dir"], texts)
        if offered is None:
            offer = tuple(languages)
        else:
            offer = tuple(_find(found, tag, "pages.languages") for tag in offered)
            if default_tag not in offer:
                offer = (default_tag, *offer)
        return cls(languages, default_tag, offer, tuple(warnings))


def _find(found: Mapping[str, str], tag: str, where: str) -> str:
    if tag.lower() in found:
        return found[tag.lower()]
    raise StringsError(f"{where}: no strings for {tag!r} (known: {', '.join(sorted(found.values()))})")


class _Parsed(NamedTuple):
    meta: dict[str, str]
    texts: dict[str, Text]
    source: str


def _read(path: Path | Traversable) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise StringsError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise StringsError(f"{path} is {len(raw)} bytes; the limit is {MAX_FILE_BYTES}")
    return raw


@functools.cache
def _built_in() -> tuple[tuple[str, _Parsed], ...]:
    shipped = sorted((f for f in BUILT_IN.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)
    return tuple((f.name.removesuffix(".json"), _parse(f, _read(f), base=None)) for f in shipped)


def _parse(path: Path | Traversable, raw: bytes, base: _Parsed | None) -> _Parsed:
    """One file, checked: known keys, the right shapes, allowed placeholders. `base`: the built-in
    language it overrides (its `_meta` is then optional)."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StringsError(f"{path}: not a JSON file in UTF-8: {e}") from None
    if not isinstance(data, dict):
        raise StringsError(f"{path}: must hold a JSON object of key → string")
    meta = _meta(path, data.pop("_meta", {}), base)
    rule_forms = PLURAL_RULES[meta["plural"]][1]
    texts: dict[str, Text] = {}
    for key, value in data.items():
        spec = KEYS.get(key)
        if spec is None:
            close = difflib.get_close_matches(key, KEYS, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise StringsError(f"{path}: unknown key {key!r}{hint}")
        texts[key] = _value(f"{path}: {key}", value, spec, rule_forms)
    return _Parsed(meta, texts, str(path))


def _meta(path: Path | Traversable, meta: object, base: _Parsed | None) -> dict[str, str]:
    if not isinstance(meta, dict):
        raise StringsError(f"{path}: _meta must be an object with name, plural and dir")
    unknown = set(meta) - {"name", "plural", "dir"}
    if unknown:
        raise StringsError(f"{path}: _meta: unknown key {sorted(unknown)[0]!r} (known: name, plural, dir)")
    merged = {**(base.meta if base else {"dir": "ltr"}), **meta}
    for name in ("name", "plural"):
        if not isinstance(merged.get(name), str) or not merged[name]:
            raise StringsError(f"{path}: _meta.{name} is required for a new language")
    if merged["plural"] not in PLURAL_RULES:
        raise StringsError(
            f"{path}: _meta.plural: unknown rule {merged['plural']!r} (known: {', '.join(PLURAL_RULES)})"
        )
    if merged["dir"] not in ("ltr", "rtl"):
        raise StringsError(f"{path}: _meta.dir must be ltr or rtl")
    return {k: str(v) for k, v in merged.items()}


def _value(where: str, value: object, spec: Key, forms: frozenset[str]) -> Text:
    if spec.counted:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise StringsError(
                f'{where}: a counted string is an object of plural forms, e.g. {{"one": …, "other": …}}'
            )
        extra = set(value) - forms
        if extra:
            known = ", ".join(sorted(forms))
            raise StringsError(
                f"{where}: {sorted(extra)[0]!r} is not a plural form of this language ({known})"
            )
        for form in value.values():
            _placeholders(where, form, spec)
        return dict(value)
    if not isinstance(value, str):
        raise StringsError(f"{where}: must be a string")
    _placeholders(where, value, spec)
    return value


def _placeholders(where: str, text: str, spec: Key) -> None:
    for name in _PLACEHOLDER.findall(text):
        if name not in spec.placeholders:
            allowed = ", ".join(f"{{{p}}}" for p in sorted(spec.placeholders)) or "none"
            raise StringsError(f"{where}: placeholder {{{name}}} is not allowed here (allowed: {allowed})")


def _check_plural_forms(source: str, texts: Mapping[str, Text], plural: str) -> None:
    forms = PLURAL_RULES[plural][1]
    for key, value in texts.items():
        if isinstance(value, dict) and not forms <= set(value):
            missing = ", ".join(sorted(forms - set(value)))
            raise StringsError(f"{source}: {key}: needs the plural forms {missing} (rule {plural})")
