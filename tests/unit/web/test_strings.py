"""web/strings.py: the shipped languages are complete, plurals follow each language's rule, and a
room's title is chosen per language."""

from __future__ import annotations

import json

import pytest

from waitroom.web.strings import BUILT_IN, KEYS, PLURAL_RULES, Catalog, title_in

SHIPPED = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "ja", "zh")


@pytest.mark.parametrize("tag", SHIPPED)
def test_every_shipped_language_says_everything_in_its_own_words(tag: str) -> None:
    own = json.loads((BUILT_IN / f"{tag}.json").read_text(encoding="utf-8"))
    assert set(own) - {"_meta"} == set(KEYS)  # complete: nothing falls back to another language
    assert set(own["_meta"]) == {"name", "plural", "dir"}
    if tag != "en":  # translated, not English left in place (names and punctuation aside)
        english = json.loads((BUILT_IN / "en.json").read_text(encoding="utf-8"))
        same = [k for k in KEYS if own[k] == english[k]]
        assert same == [], f"{tag}: still English: {same}"
    strings = Catalog.load().languages[tag]
    for key in KEYS:  # every string renders, every placeholder filled
        text = strings.text(key, 3, title="Shop", time="10:00", clock="1:00")
        assert text.strip()
        assert "{" not in text, (tag, key, text)


def test_the_shipped_catalog_loads_without_warnings() -> None:
    catalog = Catalog.load()
    assert catalog.offered[0] == "en"
    assert set(catalog.offered) == set(SHIPPED)
    assert catalog.warnings == ()


@pytest.mark.parametrize(
    ("rule", "categories"),
    [
        # n:               0        1      2        5        12       22       25       101
        ("one_other", ["other", "one", "other", "other", "other", "other", "other", "other"]),
        ("zero_one_other", ["one", "one", "other", "other", "other", "other", "other", "other"]),
        ("polish", ["many", "one", "few", "many", "many", "few", "many", "many"]),
        ("east_slavic", ["many", "one", "few", "many", "many", "few", "many", "one"]),
        ("czech", ["other", "one", "few", "other", "other", "other", "other", "other"]),
        ("none", ["other"] * 8),
    ],
)
def test_plural_rules(rule: str, categories: list[str]) -> None:
    choose, forms = PLURAL_RULES[rule]
    got = [choose(n) for n in (0, 1, 2, 5, 12, 22, 25, 101)]
    assert got == categories
    assert set(got) <= forms
    assert "other" in forms


def test_counted_strings_agree_in_number() -> None:
    languages = Catalog.load().languages
    assert [languages["en"].text("next_try", n) for n in (1, 2)] == [
        "Next try in 1 second.",
        "Next try in 2 seconds.",
    ]
    assert [languages["pl"].text("next_try", n) for n in (1, 3, 5, 22)] == [
        "Następna próba za 1 sekundę.",
        "Następna próba za 3 sekundy.",
        "Następna próba za 5 sekund.",
        "Następna próba za 22 sekundy.",
    ]
    assert languages["fr"].text("eta.minutes", 1) == "Votre attente : environ 1 minute."
    assert languages["ja"].text("eta.minutes", 5) == "待ち時間：約5分"


def test_a_title_per_language() -> None:
    titles = {"en": "Summer sale", "de": "Sommerschlussverkauf", "pt-BR": "Liquidação"}
    assert title_in(None, "shop", "de", "en") == "shop"
    assert title_in("Sale", "shop", "de", "en") == "Sale"
    assert title_in(titles, "shop", "de", "en") == "Sommerschlussverkauf"
    assert title_in(titles, "shop", "pt", "en") == "Summer sale"  # pt-BR is not pt: the default's
    assert title_in(titles, "shop", "ja", "fr") == "Summer sale"  # neither: the first given
    assert title_in({"pt": "Liquidação"}, "shop", "pt", "en") == "Liquidação"
