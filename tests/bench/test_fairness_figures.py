"""bench/fairness.py's order figure, on made-up stories: the one exception to the order through an
outage (docs/stores.md) is taken only where a visitor's story shows it, and judged all the same
against those let in after the outage."""

from __future__ import annotations

from bench.fairness import Visitor, figures


def visitor(ticket: int, *story: tuple[float, str, int | None]) -> Visitor:
    """Polls (sent, answer, position) on replica 0, each answered at once; the last one "in"."""
    v = Visitor(ticket, abandons=False, arrived=story[0][0], ticket=ticket)
    v.story = [(sent, 0.0, 0, answer, position, ticket) for sent, answer, position in story]
    v.asked = v.admitted = story[-1][0]
    return v


OUTAGE = (10.0, 12.0)


def test_a_ticket_called_unheard_of_before_an_outage_is_owed_its_order_after_it() -> None:
    # 2 was called just before the outage, and let in during it by a replica that knew; 1's polls
    # through it reached replicas that did not, and it got in at its first poll after it.
    crowd = [
        visitor(1, (9.5, "waiting", 3), (10.5, "waiting", None), (11.5, "waiting", None), (12.4, "in", 0)),
        visitor(2, (9.6, "waiting", 4), (10.6, "in", 0)),
        visitor(3, (9.7, "waiting", 5), (12.5, "in", 0)),
    ]
    assert figures(crowd)["worst_order_inversion_s"] > 1.5  # without the outage: 1.8 s after 2
    excused = figures(crowd, OUTAGE)
    assert excused["judged_after_outage"] == 1
    assert excused["worst_order_inversion_s"] == 0.0  # in before 3, the first let in after it


def test_the_exception_is_no_excuse_for_a_replica_that_heard_the_store_and_said_wait() -> None:
    crowd = [  # 1's first poll after the outage was answered by the store ("wait", a position)
        visitor(1, (9.5, "waiting", 3), (12.1, "waiting", 0), (13.2, "in", 0)),
        visitor(2, (9.6, "waiting", 4), (12.2, "in", 0)),
    ]
    result = figures(crowd, OUTAGE)
    assert result["judged_after_outage"] == 0
    assert result["worst_order_inversion_s"] > 0.9


def test_a_replica_still_deaf_a_moment_after_the_outage_is_part_of_it() -> None:
    crowd = [  # 1's first poll after the outage reached a replica that had not heard Redis yet
        visitor(1, (9.5, "waiting", 3), (11.5, "waiting", None), (12.1, "waiting", None), (13.0, "in", 0)),
        visitor(2, (9.6, "waiting", 4), (10.6, "in", 0)),
        visitor(3, (9.7, "waiting", 5), (12.2, "in", 0)),
    ]
    result = figures(crowd, OUTAGE)
    assert result["judged_after_outage"] == 1
    assert round(result["worst_order_inversion_s"], 3) == 0.8  # against 3, in at 12.2


def test_the_poll_that_gets_in_may_be_sent_before_the_end_and_answered_after_it() -> None:
    crowd = [  # 1's poll at 11.8 waited for the store to come back and got in at 12.3
        visitor(1, (9.5, "waiting", 3), (10.5, "waiting", None), (11.8, "in", 0)),
        visitor(2, (9.6, "waiting", 4), (10.6, "in", 0)),
    ]
    crowd[0].admitted = 12.3
    result = figures(crowd, OUTAGE)
    assert result["judged_after_outage"] == 1
    assert result["worst_order_inversion_s"] == 0.0
