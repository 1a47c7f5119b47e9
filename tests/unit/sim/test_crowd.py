"""sim/crowd.py: the --crowd grammar, its draws, and one-line errors that say where."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from waitroom.sim.crowd import CrowdError, parse_crowd


@pytest.mark.parametrize(
    ("spec", "phases", "expected"),
    [
        ("50000 over 5m, then 200/min for 1h", ["50,000 over 5m", "200/min for 1h"], 62_000),
        (
            "1,000 at once; pause 30s, 2k over 10m front",
            ["1,000 at once", "pause 30s", "2,000 over 10m front"],
            3_000,
        ),
        ("10/s for 90s", ["600/min for 90s"], 900),
        ("3 over 1m ramp, 1_000 over 1h evenly", ["3 over 1m ramp", "1,000 over 1h"], 1_003),
        ("1M over 1d", ["1,000,000 over 1d"], 1_000_000),
        ("5 over 90", ["5 over 90s"], 5),
    ],
)
def test_crowd_grammar_reads_the_documented_examples(spec: str, phases: list[str], expected: int) -> None:
    crowd = parse_crowd(spec)
    assert [p.describe() for p in crowd.phases] == phases
    assert crowd.expected == expected


def test_phases_follow_each_other_and_keep_their_shape() -> None:
    crowd = parse_crowd("1000 at once, pause 1m, 2000 over 2m front, 600/min for 1m, 1000 over 1m ramp")
    times = crowd.times(random.Random(7))
    assert times == sorted(times)
    once = [t for t in times if t < 1]
    assert len(once) == 1000
    assert not [t for t in times if 1 <= t < 61]  # the pause
    front = [t for t in times if 61 <= t < 181]
    assert len(front) == 2000
    assert 1150 < sum(1 for t in front if t < 91) < 1450  # mean a quarter of the phase: 63% in it
    rate = [t for t in times if 181 <= t < 241]
    assert 500 < len(rate) < 700  # Poisson around 600
    ramp = [t for t in times if t >= 241]
    assert len(ramp) == 1000
    assert sum(1 for t in ramp if t >= 271) > 700  # rising: three quarters in the second half
    assert crowd.span == 301
    assert parse_crowd("1000 at once").times(random.Random(7)) == parse_crowd("1000 at once").times(
        random.Random(7)
    )


@pytest.mark.parametrize(
    ("spec", "column", "words"),
    [
        ("", 1, "empty"),
        ("50000 ovr 5m", 7, 'expected "over", "at once" or "/" after 50000'),
        ("5 over", 7, "expected a duration"),
        ("1.5 over 1m", 1, "not a whole number"),
        ("100 over 0s", 10, "more than 0"),
        ("20M over 1d", 1, "at most 10,000,000"),
        ("10/fortnight for 1m", 4, "unknown unit"),
        ("10 over 1m,", 12, "a number of visitors"),
        ("10 over 1m 20 over 1m", 12, 'expected "," or ";"'),
        ("10 over 8d", 1, "at most 7d"),
        ("10 at noon", 7, 'expected "at once"'),
        ("pause", 6, "a duration"),
        ("ten over 1m", 1, "a number of visitors"),
        ("10 over 1m @", 12, "unexpected '@'"),
    ],
)
def test_crowd_errors_are_one_line_with_a_column(spec: str, column: int, words: str) -> None:
    with pytest.raises(CrowdError) as caught:
        parse_crowd(spec)
    assert caught.value.column == column
    assert words in caught.value.message
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"column {column}: ")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_no_text_makes_the_parser_raise_anything_else(spec: str) -> None:
    try:
        crowd = parse_crowd(spec)
    except CrowdError:
        return
    assert crowd.expected <= 10_000_000
