"""sim/visitors.py: the page's polling (read from the page itself), a browser's cookie jar, and
plans that no config changes."""

from __future__ import annotations

import math
import re
from importlib import resources

import pytest

from waitroom.sim import visitors
from waitroom.sim.visitors import (
    Behaviour,
    BehaviourError,
    CookieJar,
    draw_plan,
    page_poll_delay,
    parse_pages,
    parse_patience,
    parse_share,
)

SCRIPT = (resources.files("waitroom.web") / "pages" / "client.js").read_text()
ANSWERS = (resources.files("waitroom.web") / "answers.py").read_text()


def test_poll_schedule_is_the_pages() -> None:
    """The constants come from the wait page's script (pages/client.js, `schedule` and `trouble`):
    if the page changes how it polls, this fails until the simulator polls the same way."""
    assert "seconds = Math.max(1, seconds);" in SCRIPT
    schedule = re.search(r"seconds - spread \+ spread \* \(([\d.]+) \+ random\(\) \* ([\d.]+)\)", SCRIPT)
    assert schedule is not None
    assert (float(schedule[1]), float(schedule[2])) == (visitors.JITTER_LOW, visitors.JITTER_SPAN)
    trouble = re.search(
        r"schedule\(Math\.min\((\d+), data\.retry_after \* Math\.pow\(2, Math\.min\(failures, (\d+)\)\)\)\)",
        SCRIPT,
    )
    assert trouble is not None
    assert (float(trouble[1]), int(trouble[2])) == (visitors.TROUBLE_CAP, visitors.TROUBLE_DOUBLINGS)
    assert "schedule(body.retry_after || data.retry_after)" in SCRIPT  # after a wait answer: its retry_after
    assert 'http-equiv="refresh" content="{retry_after}"' in ANSWERS  # no script: the page refreshes
    assert page_poll_delay(5, 0, 0.0) == pytest.approx(3.5)
    assert page_poll_delay(5, 0, 1.0) == pytest.approx(6.5)
    assert page_poll_delay(0, 0, 0.5) == pytest.approx(1.0)  # at least a second
    assert page_poll_delay(5, 1, 0.5) == pytest.approx(10.0)
    assert page_poll_delay(5, 9, 0.5) == pytest.approx(80.0)  # at most 2^4 times
    assert page_poll_delay(30, 9, 0.5) == pytest.approx(120.0)  # and at most 120 s
    # A fifo ticket told 60 s, in a room whose head polls every 5 s: never later than 61.5 s.
    assert page_poll_delay(60, 0, 1.0, head=5) == pytest.approx(61.5)
    assert page_poll_delay(60, 0, 0.0, head=5) == pytest.approx(58.5)


def test_cookie_jar_is_a_browsers() -> None:
    jar = CookieJar()
    jar.set("a", "one", 10, now=100)
    jar.set("b", "two", 10, now=100)
    jar.set("a", "three", 10, now=105)  # a new cookie replaces the old of its name
    assert list(jar.values("a", 106)) == ["three"]
    assert jar.header(106) == "a=three; b=two"
    assert list(jar.values("b", 110)) == []  # expired at 110
    jar.set("a", "", 0, now=107)  # Max-Age=0 deletes
    assert list(jar.values("a", 107)) == []
    assert jar.header(107) == ""


def test_a_visitors_draws_do_not_depend_on_the_config() -> None:
    """The plan is the visitor's: the same whatever the config (and its poll jitter comes from a seed
    of its own), so that --against compares configs, not luck."""
    behaviour = Behaviour(patience=parse_patience("30%:1m-2m"), release=0.5, no_js=0.1)
    plans = [draw_plan(behaviour, 7, i) for i in range(2000)]
    assert plans == [draw_plan(behaviour, 7, i) for i in range(2000)]
    assert plans != [draw_plan(behaviour, 8, i) for i in range(2000)]
    impatient = [p.patience for p in plans if math.isfinite(p.patience)]
    assert 500 < len(impatient) < 700
    assert all(60 <= p <= 120 for p in impatient)
    assert 850 < sum(p.release for p in plans) < 1150
    assert 120 < sum(p.no_js for p in plans) < 280
    pages = [len(p.pauses) + 1 for p in plans]
    assert 4.5 < sum(pages) / len(pages) < 5.5
    assert min(pages) == 1
    stays = [sum(p.pauses) for p in plans if p.pauses]
    assert max(stays) <= 3 * behaviour.time_on_site + 1e-6
    assert 0.8 * 300 < sum(stays) / len(stays) < 1.1 * 300
    uniform = Behaviour(pages=(3, 4), pages_uniform=True)
    assert {len(draw_plan(uniform, 1, i).pauses) + 1 for i in range(200)} == {3, 4}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: parse_share("150%", "--release"), "between 0% and 100%"),
        (lambda: parse_share("lots", "--no-js"), "not a share"),
        (lambda: parse_pages("0"), "between 1 and 10000"),
        (lambda: parse_pages("5-3"), "whole numbers"),
        (lambda: parse_pages("many"), "N or A-B"),
        (lambda: parse_patience("20%"), "SHARE:DURATION"),
        (lambda: parse_patience("60%:1m,50%:2m"), "more than 100%"),
        (lambda: parse_patience("20%:5m-1m"), "ends before it starts"),
        (lambda: parse_patience("20%:soon"), "invalid duration"),
    ],
)
def test_behaviour_options_are_checked(call: object, message: str) -> None:
    with pytest.raises(BehaviourError, match=message):
        call()  # type: ignore[operator]
