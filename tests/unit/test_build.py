"""build.compile_config: what `waitroom check` runs, without mitmproxy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from waitroom.build import compile_config
from waitroom.config.fields import ConfigError
from waitroom.config.schema import DEFAULT_CONFIG

SHIPPED = {"en", "de", "fr", "es", "it", "pt", "nl", "pl", "ja", "zh"}


def test_the_shipped_config_compiles() -> None:
    config, pages, verifier = compile_config(DEFAULT_CONFIG)
    # Each room: its wait page and its closed page; every shipped language offered.
    assert set(pages.wait) == set(pages.closed) == {room.name for room in config.rooms}
    assert set(pages.catalog.offered) == SHIPPED
    assert pages.catalog.warnings == ()
    assert (verifier is None) == (config.jwt is None)


def test_strings_dir_adds_and_overrides_languages_and_rooms_may_force_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    strings = tmp_path / "strings"
    strings.mkdir()
    (strings / "sv.json").write_text(
        '{"_meta": {"name": "Svenska", "plural": "one_other"}, "wait.heading": "Du är i väntrummet",'
        ' "next_try": {"one": "Nytt försök om {n} sekund.", "other": "Nytt försök om {n} sekunder."}}',
        encoding="utf-8",
    )
    (strings / "de.json").write_text('{"wait.heading": "Willkommen im Warteraum"}', encoding="utf-8")
    (strings / "README.txt").write_text("not a strings file: ignored")
    path = tmp_path / "c.yaml"
    path.write_text(
        "pages: {strings_dir: strings, default_language: de}\n"
        "rooms:\n"
        "  - {name: a, match: {path_prefix: /a}, new_sessions: 1, language: sv, title: {sv: Rea, en: Sale}}\n"
        "  - {name: b, match: {path_prefix: /b}, new_sessions: 1}\n"
    )
    _, pages, _ = compile_config(path)
    catalog = pages.catalog
    assert set(catalog.offered) == SHIPPED | {"sv"}
    assert catalog.default == "de"
    assert pages.strings("a", "en").tag == "sv"  # the room's language, whatever the visitor's
    assert pages.strings("b", "en-GB,en;q=0.9").tag == "en"
    assert pages.strings("b", "xx").tag == "de"  # the default
    assert catalog.languages["de"].text("wait.heading") == "Willkommen im Warteraum"
    assert catalog.languages["de"].text("closed.heading") == "Diese Veranstaltung ist beendet"  # kept
    sv = catalog.languages["sv"]
    assert sv.text("wait.heading") == "Du är i väntrummet"
    assert sv.text("next_try", 2) == "Nytt försök om 2 sekunder."
    assert sv.text("closed.heading") == "Diese Veranstaltung ist beendet"  # missing: the default's
    assert any("sv.json: no strings for" in w and "(the de ones are used)" in w for w in catalog.warnings)
    assert "sv.json: no strings for" in caplog.text  # what `waitroom check` shows


@pytest.mark.parametrize(
    ("pages", "room", "message"),
    [
        ("{}", "language: xx", r"rooms\[0\]\.language: no strings for 'xx'"),
        ("{default_language: xx}", "", r"pages: default language 'xx' has no strings"),
        ("{languages: [de, tlh]}", "", r"pages: pages.languages: no strings for 'tlh'"),
        ("{strings_dir: missing}", "", r"pages: .*missing: cannot read"),
        ("{}", "title: ' '", r"rooms\[0\]\.title: must be 1 to 120 characters"),
        ("{}", 'title: {de: "a\\u0007b"}', r"rooms\[0\]\.title: de: must be plain text on one line"),
        ("{}", "template: t.html", r"rooms\[0\]\.template: unknown string \{\{ text:wait.heeding"),
    ],
)
def test_pages_config_errors_name_the_field(tmp_path: Path, pages: str, room: str, message: str) -> None:
    (tmp_path / "t.html").write_text("<h1>{{ text:wait.heeding }}</h1>")
    path = tmp_path / "c.yaml"
    extra = f", {room}" if room else ""
    path.write_text(f"pages: {pages}\nrooms: [{{name: a, new_sessions: 1{extra}}}]\n")
    with pytest.raises(ConfigError, match=message):
        compile_config(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"wait.heding": "x"}', "unknown key 'wait.heding'; did you mean wait.heading?"),
        ('{"wait.heading": "{n} here"}', r"placeholder \{n\} is not allowed here \(allowed: \{title\}\)"),
        ('{"next_try": "in {n} s"}', "a counted string is an object of plural forms"),
        ('{"next_try": {"one": "x", "few": "y", "other": "z"}}', r"'few' is not a plural form of this"),
        ('{"_meta": {"plural": "klingon"}}', "unknown rule 'klingon'"),
        ("[1]", "must hold a JSON object"),
        ("{", "not a JSON file"),
    ],
)
def test_a_bad_strings_file_is_a_config_error(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "strings").mkdir()
    (tmp_path / "strings" / "en.json").write_text(content, encoding="utf-8")
    path = tmp_path / "c.yaml"
    path.write_text("pages: {strings_dir: strings}\n")
    with pytest.raises(ConfigError, match=message):
        compile_config(path)


def test_a_jwt_key_needs_a_jwt_section(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "rate_limits: [{name: api, match: {path_prefix: /api}, key: 'jwt:sub', limit: 5, per: 1s}]\n"
    )
    with pytest.raises(ConfigError, match=r"rate_limits\[0\]\.key: jwt:sub needs a `jwt:` section"):
        compile_config(path)


def test_the_check_command_does_not_import_mitmproxy() -> None:
    code = "import sys, waitroom.cli; sys.exit('mitmproxy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
