"""Every room setting passes the chart's values schema and reaches the proxy's config: a fair queue
with a cap, a scheduled sale, a per-address ticket limit and proof of work, as values.yaml
documents them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kube.helm import render, render_error
from tests.kube.test_chart import proxy_config

EVENT = """
upstream: http://shop.shop.svc.cluster.local:8080
config:
  rooms:
    - name: tickets
      match: {path_prefix: /tickets}
      queue: fifo
      new_sessions: 100
      window: 60s
      retry_after: 5s
      abandon_after: 30s
      grace: 10s
      max_active: 500
      opens_at: "2026-12-01T10:00:00+01:00"
      closes_at: "2026-12-01T18:00:00+01:00"
      after_close: page
      closed_status: 410
      tickets_per_ip: 20
      proof_of_work: {difficulty: 18, ttl: 20s}
"""


def test_a_scheduled_fifo_room_with_a_cap_renders_and_loads(tmp_path: Path) -> None:
    values = tmp_path / "event-values.yaml"
    values.write_text(EVENT)
    config = proxy_config(render(str(values)), tmp_path)
    (room,) = config.rooms
    assert (room.queue, room.max_active, room.tickets_per_ip) == ("fifo", 500, 20)
    assert room.proof_of_work is not None
    assert (room.proof_of_work.difficulty, room.proof_ttl_seconds) == (18, 20)
    assert room.opens_at is not None
    assert room.opens_at.isoformat() == "2026-12-01T10:00:00+01:00"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("      queue: lifo\n", "queue"),
        ('      opens_at: "tomorrow"\n', "opens_at"),
        ("      max_active: 0\n", "max_active"),
        ("      proof_of_work: {difficulty: 40}\n", "difficulty"),
    ],
)
def test_the_schema_refuses_bad_room_settings(tmp_path: Path, line: str, message: str) -> None:
    values = tmp_path / "bad-values.yaml"
    head = "upstream: http://shop:8080\nconfig:\n  rooms:\n    - name: t\n      new_sessions: 1\n"
    values.write_text(head + line)
    assert message in render_error(str(values))
