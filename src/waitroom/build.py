"""A config file compiled: the schema validated, and what it names loaded (templates, strings, JWT
keys).

`waitroom check` and the proxy's runtime both use it; it does not import mitmproxy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from waitroom.config.fields import ConfigError
from waitroom.config.schema import Config, load_config
from waitroom.ratelimit.claims import ClaimVerifier
from waitroom.web.strings import Catalog, StringsError
from waitroom.web.template import (
    CLOSED_TEMPLATE,
    DEFAULT_TEMPLATE,
    REFUSED_TEMPLATE,
    Pages,
    Template,
    TemplateError,
)

log = logging.getLogger(__name__)


def compile_config(
    path: Path, environ: Mapping[str, str] | None = None
) -> tuple[Config, Pages, ClaimVerifier | None]:
    """Everything a config file needs beyond its schema: its templates, strings and JWT keys load,
    every language named has strings, and `jwt:` keys have a `jwt:` section. ConfigError otherwise,
    with every problem (`problems`; `str()` is the first, counting the rest). `waitroom check` and
    the proxy's runtime both use this; it does not import mitmproxy. `environ`: where secrets are
    read (the process's environment by default)."""
    config = load_config(path)
    pages, problems = _pages(config)
    for warning in pages.catalog.warnings if pages is not None else ():
        log.warning("waitroom: %s: pages: %s", path, warning)
    verifier = None
    if config.jwt is not None:
        try:
            verifier = ClaimVerifier(config.jwt, os.environ if environ is None else environ)
        except ConfigError as e:
            problems.extend(e.problems)
    for i, rule in enumerate(config.rate_limits):
        for field_name, key in (("key", rule.key), ("fallback", rule.fallback)):
            if key is not None and key.startswith("jwt:") and config.jwt is None:
                problems.append(f"rate_limits[{i}].{field_name}: {key} needs a `jwt:` section")
    if problems or pages is None:
        raise ConfigError.of(problems, path)
    return config, pages, verifier


def load_pages(path: Path, config: Config) -> Pages:
    """The rooms' templates and the strings of every language, checked against each other."""
    pages, problems = _pages(config)
    if problems or pages is None:
        raise ConfigError.of(problems, path)
    return pages


def _pages(config: Config) -> tuple[Pages | None, list[str]]:
    """The pages, or None, and every problem found in them (one line each, without the file)."""
    try:
        catalog = Catalog.load(
            config.pages.strings_dir, default=config.pages.default_language, offered=config.pages.languages
        )
    except StringsError as e:
        return None, [f"pages: {e}"]
    problems: list[str] = []
    wait: dict[str, Template] = {}
    closed: dict[str, Template] = {}
    forced: dict[str, str] = {}
    for i, room in enumerate(config.rooms):
        if room.language is not None:
            found = catalog.find(room.language)
            if found is None:
                problems.append(
                    f"rooms[{i}].language: no strings for {room.language!r} "
                    f"(known: {', '.join(sorted(catalog.languages))}; add a file to pages.strings_dir)"
                )
            else:
                forced[room.name] = found
        for field_name, given, default, into in (
            ("template", room.template, DEFAULT_TEMPLATE, wait),
            ("closed_template", room.closed_template, CLOSED_TEMPLATE, closed),
        ):
            try:
                into[room.name] = Template.load(given or default)
            except TemplateError as e:
                problems.append(f"rooms[{i}].{field_name}: {e}")
    if problems:
        return None, problems
    return Pages(catalog, wait, closed, Template.load(REFUSED_TEMPLATE), forced), []


def host_header_problem(config: Config) -> str | None:
    """A room that matches a host cannot work when mitmproxy puts the upstream's name in Host
    (reverse mode without keep_host_header): the proxy refuses such a file; `check` warns."""
    for i, room in enumerate(config.rooms):
        if room.match.host is not None:
            return (
                f"rooms[{i}].match.host: in reverse mode mitmproxy replaces the Host header with the "
                "upstream's; add --set keep_host_header=true"
            )
    return None


def config_warnings(config: Config, now: float, *, keep_host_header: bool = False) -> list[str]:
    """What is valid but almost certainly not meant: a schedule already past, and (unless the proxy
    keeps the Host header) a room matching a host, which `waitroom serve` refuses."""
    warnings = []
    if not keep_host_header and (problem := host_header_problem(config)) is not None:
        warnings.append(f"{problem} (the proxy refuses this file without it; `check --keep-host-header`)")
    for i, room in enumerate(config.rooms):
        if room.opens_at is not None and room.opens_at.timestamp() <= now:
            warnings.append(
                f"rooms[{i}].opens_at: {_when(room.opens_at)} is past: the room is open, no pre-queue"
            )
        if room.closes_at is not None and room.closes_at.timestamp() <= now:
            after = (
                "every new visitor gets the closed page"
                if room.after_close == "page"
                else "the room no longer applies (after_close: pass)"
            )
            warnings.append(f"rooms[{i}].closes_at: {_when(room.closes_at)} is past: {after}")
    return warnings


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def missing_secrets(config: Config, environ: Mapping[str, str]) -> list[str]:
    """Environment variables the config reads a secret from that are not set here: the proxy needs
    them, but a file checked elsewhere (a laptop, CI, the chart's hook) is not wrong for it."""
    jwt = config.jwt
    if jwt is None or not jwt.secret_env or jwt.secret_env in environ:
        return []
    if not any(a.startswith("HS") for a in jwt.algorithms) or jwt.public_key_file or jwt.jwks_file:
        return []
    return [jwt.secret_env]


def named_files(config: Config) -> list[Path]:
    """The files a config names (templates, JWT keys, and `pages.strings_dir`, a folder): the
    config watcher reloads when one of them changes too, so a ConfigMap that carries them with the
    config reloads as one."""
    files = [f for room in config.rooms for f in (room.template, room.closed_template) if f is not None]
    if config.pages.strings_dir is not None:
        files.append(config.pages.strings_dir)
    if config.jwt is not None:
        files += [f for f in (config.jwt.public_key_file, config.jwt.jwks_file) if f is not None]
    return files
