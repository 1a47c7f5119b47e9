"""sim/report.py, charts.py and figures.py: a report that loads nothing and runs nothing, charts
that parse, the figures' definitions, and --against side by side."""

from __future__ import annotations

import asyncio
import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from waitroom.sim.charts import Line, line_chart, nice_ticks, scatter_chart, thin
from waitroom.sim.crowd import parse_crowd
from waitroom.sim.figures import eta_accuracy, most_in_window, order_inversion, percentile
from waitroom.sim.report import as_json, html_report, human, summary_text
from waitroom.sim.run import Options, Run, simulate
from waitroom.sim.visitors import Behaviour, parse_patience

CANDIDATE = """
session: {ttl: 1m}
rooms:
  - {name: shop, match: {path_prefix: /shop}, queue: fifo, new_sessions: 30, window: 5s, retry_after: 1s,
     max_active: 200}
rate_limits:
  - {name: api, match: {path_prefix: /api}, limit: 3, per: 1m}
"""


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("report")
    candidate = folder / "a <candidate>.yaml"  # a name to escape
    candidate.write_text(CANDIDATE)
    current = folder / "current.yaml"
    current.write_text(CANDIDATE.replace("new_sessions: 30", "new_sessions: 15"))
    options = Options(
        candidate,
        crowd=parse_crowd("400 over 20s"),
        behaviour=Behaviour(patience=parse_patience("20%:20s-1m"), time_on_site=30),
        against=current,
    )
    return asyncio.run(simulate(options))


def test_html_is_self_contained(compared: Run) -> None:
    page = html_report(compared)
    assert "http:" not in page
    assert "https:" not in page
    assert "//" not in page.replace("<!--", "")
    assert "<script" not in page.lower()
    assert not re.search(r"\b(src|href)=", page)
    assert "Content-Security-Policy" in page
    assert "default-src 'none'" in page
    assert "a &lt;candidate&gt;.yaml" in page
    assert "<candidate>" not in page
    assert page.count("<figure>") == 6
    assert len(page.encode()) < 400_000


def test_every_svg_parses(compared: Run) -> None:
    page = html_report(compared)
    svgs = re.findall(r"<svg.*?</svg>", page, flags=re.S)
    assert len(svgs) == 6
    for svg in svgs:
        root = ET.fromstring(svg)
        assert root.get("role") == "img"
        assert root.get("aria-label")
        assert root.findall(".//path") or root.findall(".//circle")


def test_against_columns(compared: Run) -> None:
    text = summary_text(compared, "r.html")
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("room shop"))
    assert (
        lines[head] == "room shop: candidate fifo 30/5s, max_active 200; current fifo 15/5s, max_active 200"
    )
    assert lines[head + 1].split() == ["candidate", "current", "Δ"]
    admitted = next(line for line in text.splitlines() if line.strip().startswith("most a minute"))
    candidate, current = (int(x.replace(",", "")) for x in admitted.split()[3:5])
    assert candidate <= 360
    assert current <= 180
    assert candidate > current
    assert "guarantees held" in text
    assert text.endswith("report: r.html")
    data = as_json(compared)
    json.dumps(data, allow_nan=False)
    assert data["against"]["config"] == "current.yaml"
    assert data["rooms"]["shop"]["guarantees"]["held"]
    assert data["against"]["rooms"]["shop"]["guarantees"]["held"]
    assert data["rooms"]["shop"]["guarantees"]["most_in_window"] <= 30
    assert data["rules"] == {"api": {}}
    page = html_report(compared)
    assert "<th>current.yaml</th><th>Δ</th>" in page
    assert "admitted (current.yaml)" in page


def test_percentiles_windows_and_inversions() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 90), percentile(values, 99)) == (50, 90, 99)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    assert most_in_window([0, 1, 2, 5, 5.5, 6], 5.0) == (4, 5.5)  # (t − 5, t]: 0 is out at 5
    assert most_in_window([0, 5, 10], 5.0) == (1, 0)
    assert order_inversion([(1, 10.0), (2, 11.0), (3, 12.0)]) == 0
    assert order_inversion([(1, 14.0), (2, 11.0), (3, 12.0)]) == 3.0  # #1 came in 3 s after #2
    assert [human(x) for x in (3.25, 42, 600, 1450, 3840, 36000)] == [
        "3.2s",
        "42s",
        "10m",
        "24m10s",
        "1h04m",
        "10h00m",
    ]


def test_the_estimates_are_judged_against_the_waits_that_followed() -> None:
    # (shown, waited): told 30 s for 10 (over twice), 4 s for 10 (under half), 10 for 10, and a
    # 2 s wait, too short to judge (under min_wait).
    judged = eta_accuracy([(30.0, 10.0), (4.0, 10.0), (10.0, 10.0), (9.0, 2.0)], min_wait=3.0)
    assert (judged["over_twice"], judged["under_half"]) == (1, 1)
    assert judged["median_error"] == 0.6
    assert judged["within_20_percent"] == 1 / 3
    assert (judged["worst_under_estimate"], judged["worst_over_estimate"]) == (6.0, 20.0)
    assert eta_accuracy([], 3.0) == {
        "median_error": None,
        "within_20_percent": None,
        "over_twice": 0,
        "under_half": 0,
        "worst_under_estimate": None,
        "worst_over_estimate": None,
    }


def test_charts_stay_small_and_honest() -> None:
    xs = [i / 10 for i in range(100_000)]
    points = thin(xs, [math.sin(x) for x in xs])
    assert len(points) <= 2000
    assert max(y for _, y in points) == pytest.approx(1.0, abs=1e-3)  # the extremes survive
    assert nice_ticks(0, 47) == [0, 10, 20, 30, 40, 50]
    svg = line_chart("t <x>", "x", "y", [Line("a & b", [0, 1], [1, None])], marks=[(2.0, "cap")])
    assert "t &lt;x&gt;" in svg
    assert "a &amp; b" in svg
    ET.fromstring(svg)
    ET.fromstring(scatter_chart("s", "x", "y", [("g", "c1", [])]))


def test_report_file_and_json_from_the_command(tmp_path: Path) -> None:
    from waitroom.sim import cli

    config = tmp_path / "c.yaml"
    config.write_text(CANDIDATE)
    out = tmp_path / "r.html"
    status = cli.main(
        [
            "--config",
            str(config),
            "--crowd",
            "50 over 5s",
            "--report",
            str(out),
            "--json",
            str(tmp_path / "r.json"),
            "-q",
        ]
    )
    assert status == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert json.loads((tmp_path / "r.json").read_text())["visitors"] == 50
