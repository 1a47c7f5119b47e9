"""metrics.py: the metric names, types and labels are a contract (dashboards, alerts, docs), so
docs/operations.md's table and the registry must list the same ones."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.metrics import MetricWrapperBase

from waitroom import __version__
from waitroom.metrics import Metrics

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def documented() -> dict[str, tuple[str, set[str]]]:
    """docs/operations.md's metrics table: name → (type, label names); values in parentheses skipped."""
    rows: dict[str, tuple[str, set[str]]] = {}
    for line in OPERATIONS.read_text().splitlines():
        row = re.match(r"\| `(waitroom_[a-z_]+)` \| (\w+) \| (.*?) \|", line)
        if row:
            labels = re.sub(r"\([^)]*\)", "", row[3])
            rows[row[1]] = (row[2], set(re.findall(r"`([a-z0-9_]+)`", labels)))
    return rows


def concern_metrics(metrics: Metrics) -> list[MetricWrapperBase]:
    """Every metric reached through a concern of `metrics` (METRICS.rooms.requests, ...)."""
    found: list[MetricWrapperBase] = []
    for field in fields(metrics):
        concern = getattr(metrics, field.name)
        if field.name != "registry":
            found += [getattr(concern, f.name) for f in fields(concern)]
    return found


def exported(metrics: Metrics) -> dict[str, tuple[str, set[str]]]:
    """What /metrics shows once every labelled metric has a child: name → (type, label names)."""
    for metric in concern_metrics(metrics):
        if metric._labelnames:  # a labelled metric shows no sample until it has a child
            metric.labels(*["value"] * len(metric._labelnames))
    metrics.process.config.info({"sha256": "0" * 64})  # set at each config load
    families: dict[str, tuple[str, set[str]]] = {}
    for family in metrics.registry.collect():
        name = family.name + {"counter": "_total", "info": "_info"}.get(family.type, "")
        labels = {label for sample in family.samples for label in sample.labels} - {"le"}
        families[name] = (family.type, labels)
    return families


def test_the_docs_list_every_metric_with_its_type_and_labels() -> None:
    table = documented()
    assert len(table) > 30  # the table was found
    assert exported(Metrics.declare()) == table


def test_each_metric_has_one_concern() -> None:
    metrics = Metrics.declare()  # a registry of its own: the process's METRICS stays as it is
    names = [metric.describe()[0].name for metric in concern_metrics(metrics)]
    assert len(names) == len(set(names))
    assert set(names) == {family.name for family in metrics.registry.collect()}


def test_no_created_series() -> None:
    """A counter's `_created` twin doubles the series and nobody queries it: none is exported."""
    metrics = Metrics.declare()
    metrics.rooms.requests.labels("shop", "admitted").inc()
    text = generate_latest(metrics.registry).decode()
    assert "waitroom_room_requests_total" in text
    assert "_created" not in text


def test_the_build_is_named() -> None:
    text = generate_latest(Metrics.declare().registry).decode()
    assert 'waitroom_build_info{mitmproxy="' in text
    assert f'version="{__version__}"' in text


def test_every_gauge_says_how_workers_add_up() -> None:
    """Under `waitroom serve --workers N` (prometheus-client's multiprocess mode) a gauge in the
    default mode `all` would grow a `pid` label, and a dead worker's value would stay: each gauge
    names a `live*` mode, so the labels stay the contract above and only live workers count."""
    from prometheus_client import Gauge

    modes = {
        metric.describe()[0].name: metric._multiprocess_mode
        for metric in concern_metrics(Metrics.declare())
        if isinstance(metric, Gauge)
    }
    assert modes
    assert all(mode.startswith("live") for mode in modes.values()), modes
    assert modes["waitroom_inflight_requests"] == "livesum"  # each worker's own requests
    assert modes["waitroom_ready"] == "livemin"  # ready only if every worker is
    assert modes["waitroom_queue_length"] == "livemostrecent"  # the store's, as last read
