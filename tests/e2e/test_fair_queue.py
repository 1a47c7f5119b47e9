"""A `fifo` room end to end: 4 real mitmdump replicas on one real Redis, 300 visitors arriving over
time and polling as the wait page does, some abandoning; and a visitor's answers one by one."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench import fairness
from tests.conftest import SECRET, StartProxy
from tests.support import RedisServer, Upstream, free_port

TOKEN = "fair-queue-admin-token-0123456789"

pytestmark = pytest.mark.e2e
ENV = {"WAITROOM_SECRET": SECRET}


@pytest.mark.timeout(240)
# Not `exact` (no CPU hogs of its own): two of its bounds are latency figures a saturated machine
# does not meet yet (see the end of the test). The line's order, its window and everyone getting in
# are also checked beside the hogs by tests/e2e/test_faults.py.
def test_300_visitors_on_4_replicas_get_in_in_ticket_order(
    start_proxy: StartProxy, upstream: Upstream, redis_server: RedisServer
) -> None:
    config = fairness.room_config(redis_server.url)
    proxies = [start_proxy(config, upstream.url, env=ENV) for _ in range(4)]
    crowd = asyncio.run(fairness.drive([p.url for p in proxies]))
    figures = fairness.figures(crowd)
    print(figures)  # the report's figures, for whoever reads the log

    # Every answer was right. On a saturated machine a proxy may accept a connection late (the
    # visitor's connect times out and it asks again, as the page does): counted apart, not an error.
    assert figures["errors"] == figures["error_kinds"].get("ConnectTimeout", 0), figures
    assert figures["stayed_not_admitted"] == 0, figures  # everyone who kept polling got in
    # No visitor is let in more than one poll interval after anyone holding a later ticket — of
    # those the store heard within the grace, as the line promises (docs/concepts.md, "The line"):
    # one whose own client (300 visitors on one event loop) stalled, or whose poll a saturated
    # proxy sat on, for longer may have had its call lapse while away. Those are counted apart
    # (unheard_past_grace), and the worst pair's every request is printed above.
    assert figures["order_measured_on"] >= 50, figures
    assert figures["worst_order_inversion_s"] <= figures["order_bound_s"], figures
    # Exactly new_sessions per window: never more, and every place taken while people wait ...
    assert figures["most_admissions_in_a_window"] == fairness.NEW_SESSIONS, figures
    assert figures["refill_bound_s"] < fairness.ABANDON_AFTER + fairness.POLL_MAX
    assert figures["eta_samples"] >= 100, figures
    # Two latency figures, not guarantees, that a saturated machine does not meet (docs/development.md,
    # "A busy machine"): a freed place taken within the grace and one poll (beside a busy worker: up
    # to 8.1 s against 4.55 s; the place is never lost, only taken later, as the proxies answer
    # late), and the wait shown at arrival within 20 % of the real one (median: 8 % beside two
    # CPU-bound processes, up to 45 % when another test's hogs and proxies share the machine: the
    # estimate counts a called visitor in at its next poll, and a starved proxy answers it late).
    # Each window's turn (2 s here, the bench's) is late by that delay, so the error is about the
    # delay over the window: 11 % alone, 29-46 % in make test; with a minute's window, ~2 %.
    # Recorded as expected failures once every guarantee above (order, window, everyone in) held.
    missed = [
        f"{name} {figures[name]} > {bound}"
        for name, bound in (
            ("worst_place_refill_s", figures["refill_bound_s"]),
            ("eta_median_abs_error", 0.2),
        )
        if figures[name] > bound
    ]
    if missed:
        pytest.xfail(f"on a busy machine: {'; '.join(missed)}")


def fifo_config(redis_url: str, new_sessions: int = 1) -> str:
    return f"""
store: {{url: "{redis_url}", timeout: 1s}}
rooms:
  - name: shop
    match: {{path_prefix: /}}
    queue: fifo
    new_sessions: {new_sessions}
    window: 60s
    retry_after: 2s
"""


def test_a_visitor_sees_its_place_and_a_forged_ticket_is_no_ticket(
    start_proxy: StartProxy, upstream: Upstream, redis_server: RedisServer
) -> None:
    proxy = start_proxy(fifo_config(redis_server.url), upstream.url, env=ENV)
    json_ = {"Accept": "application/json"}
    first = httpx.Client(base_url=proxy.url, timeout=10)
    assert first.get("/").status_code == 200  # the window had a place
    waiting = [httpx.Client(base_url=proxy.url, timeout=10) for _ in range(3)]
    answers = [client.get("/", headers=json_) for client in waiting]
    assert [a.status_code for a in answers] == [503] * 3
    bodies = [a.json() for a in answers]
    assert [(b["position"], b["queue_length"]) for b in bodies] == [(0, 1), (1, 2), (2, 3)]
    assert all(b["status"] == "waiting" for b in bodies)
    # Each is told when to come back from its place: half the earliest its turn can come (the
    # window's one place frees in about 60 s, the next a window later), at most max_retry_after.
    assert [b["retry_after"] for b in bodies][:2] in ([29, 59], [29, 60], [30, 60])
    assert bodies[2]["retry_after"] == 60
    assert all(b["head_retry_after"] == 2 for b in bodies)
    assert 0 < bodies[0]["eta_seconds"] <= bodies[1]["eta_seconds"] <= bodies[2]["eta_seconds"]
    assert [a.headers["Retry-After"] for a in answers] == [str(b["retry_after"]) for b in bodies]
    # Asking again keeps the place.
    again = waiting[1].get("/", headers=json_).json()
    assert (again["position"], again["queue_length"]) == (1, 3)

    # The HTML page carries the same values for its script.
    page = waiting[2].get("/", headers={"Accept": "text/html"})
    assert page.status_code == 503
    assert '"position":2' in page.text
    assert '"queue_length":3' in page.text

    # A tampered ticket, another room's, or garbage: no ticket, the end of the line.
    cookie_name, ticket = next(iter(waiting[0].cookies.items()))
    tampered = ticket[:-2] + ("AA" if not ticket.endswith("AA") else "BB")
    for value in (tampered, "garbage", ticket.replace(".", "..")):
        stranger = httpx.Client(base_url=proxy.url, timeout=10, cookies={cookie_name: value})
        body = stranger.get("/", headers=json_).json()
        assert body["position"] >= 3, (value, body)
    # A ticket is bound to the browser it was given to (its User-Agent): moved to another, it is
    # no ticket.
    elsewhere = httpx.Client(
        base_url=proxy.url, timeout=10, cookies={cookie_name: ticket}, headers={"User-Agent": "another/1.0"}
    )
    assert elsewhere.get("/", headers=json_).json()["position"] >= 3
    # A copied ticket shares the one place (the line holds it once), it does not get two.
    twin = httpx.Client(base_url=proxy.url, timeout=10, cookies={cookie_name: ticket})
    assert twin.get("/", headers=json_).json()["position"] == 0
    assert waiting[0].get("/", headers=json_).json()["position"] == 0


def test_operators_see_the_line(
    start_proxy: StartProxy, upstream: Upstream, redis_server: RedisServer
) -> None:
    admin = free_port()
    config = fifo_config(redis_server.url) + f"admin: {{host: 127.0.0.1, port: {admin}}}\n"
    proxy = start_proxy(config, upstream.url, env={**ENV, "WAITROOM_ADMIN_TOKEN": TOKEN})
    assert httpx.get(f"{proxy.url}/", timeout=10).status_code == 200
    for _ in range(3):
        assert httpx.get(f"{proxy.url}/", timeout=10).status_code == 503
    base = f"http://127.0.0.1:{admin}"

    metrics = {
        (s.name, s.labels.get("room")): s.value
        for family in text_string_to_metric_families(httpx.get(f"{base}/metrics", timeout=10).text)
        for s in family.samples
    }
    assert metrics[("waitroom_queue_length", "shop")] == 3
    assert metrics[("waitroom_queue_oldest_wait_seconds", "shop")] >= 0
    assert metrics[("waitroom_queue_eta_seconds", "shop")] > 60  # a window, after three ahead
    assert metrics[("waitroom_room_admissions_per_minute", "shop")] == 1

    auth = {"Authorization": f"Bearer {TOKEN}"}
    status = httpx.get(f"{base}/admin/status", headers=auth, timeout=10).json()
    (room,) = status["rooms"]
    assert room["order"] == "fifo"
    assert room["queue"]["length"] == 3
    assert room["queue"]["eta_seconds"] > 60

    cli = subprocess.run(
        [str(Path(sys.executable).with_name("waitroom")), "--url", base, "status"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"WAITROOM_ADMIN_TOKEN": TOKEN},
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert "3 waiting, eta" in cli.stdout
