"""docs/config.md's key table is generated from the config models and its options table from the
addons' load() (`make docs`): both must be current."""

from __future__ import annotations

from waitroom.config import reference
from waitroom.config.schema import Config


def test_config_reference_is_current() -> None:
    current = reference.DOC.read_text(encoding="utf-8")
    assert current == reference.render(current), "docs/config.md is not current: run `make docs`"


def test_every_field_is_described() -> None:
    keys = [key for key, _, meaning in reference.rows()]  # rows() raises on a field without a docstring
    assert "store.url" in keys
    assert "rooms[].new_sessions" in keys
    assert "rate_limits[].match.methods" in keys


def test_every_top_level_section_is_in_the_table() -> None:
    keys = {key.split(".")[0].removesuffix("[]") for key, _, _ in reference.rows()}
    assert keys == set(Config.model_fields)


def test_named_defaults_and_links_name_real_fields() -> None:
    keys = {key for key, _, _ in reference.rows()}
    assert set(reference.DEFAULT_TEXT) <= keys
    assert set(reference.SEE) <= keys


def test_defaults_are_written_as_in_the_file() -> None:
    table = dict((key, default) for key, default, _ in reference.rows())
    assert table["store.timeout"] == "`250ms`"
    assert table["session.ttl"] == "`30m`"
    assert table["rooms[].window"] == "`60s`"
    assert table["rooms[].name"] == "required"
    assert table["store.on_error"] == "`local`"
    assert table["cluster.discover_replicas"] == "`false`"


def test_check_mode_reports_a_stale_file(tmp_path, monkeypatch) -> None:
    stale = tmp_path / "config.md"
    stale.write_text(
        f"# x\n{reference.BEGIN}\n| old |\n{reference.END}\n"
        f"{reference.BEGIN_OPTIONS}\n| old |\n{reference.END_OPTIONS}\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(reference, "DOC", stale)
    assert reference.main(["--check"]) == 1
    assert reference.main([]) == 0
    assert reference.main(["--check"]) == 0
    assert "`store.url`" in stale.read_text(encoding="utf-8")
    assert "`waitroom_config`" in stale.read_text(encoding="utf-8")


def test_every_option_the_addons_declare_is_in_the_options_table() -> None:
    names = [name for name, _, _ in reference.option_rows()]
    assert {"waitroom_config", "waitroom_replay", "waitroom_max_connections", "counter_store"} <= set(names)
    assert len(names) == len(set(names))
    assert all(name.startswith(("waitroom_", "counter_")) for name in names)
    assert set(reference.OPTION_DEFAULT_TEXT) <= set(names)
    assert set(reference.OPTION_SEE) <= set(names)


def test_options_are_collected_from_an_entry_point_and_its_sub_addons(tmp_path) -> None:
    script = tmp_path / "entry.py"
    script.write_text(
        "class Part:\n"
        "    def load(self, loader):\n"
        "        loader.add_option('part_size', int, 3, 'How big.')\n"
        "class Whole:\n"
        "    def __init__(self):\n"
        "        self.addons = [Part()]\n"
        "    def load(self, loader):\n"
        "        loader.add_option('whole_on', bool, True, 'On or off.')\n"
        "addons = [Whole()]\n",
        encoding="utf-8",
    )
    assert reference.declared_options((script,)) == [
        ("whole_on", True, "On or off."),
        ("part_size", 3, "How big."),
    ]
