"""kube/slices.py alone: the slices of one Service as a list and watch events leave them."""

from __future__ import annotations

from typing import Any

from waitroom.kube.slices import SERVICE_NAME_LABEL, ServiceSlices


def piece(name: str, *pods: str, service: str = "proxy", version: str = "1") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": version, "labels": {SERVICE_NAME_LABEL: service}},
        "endpoints": [{"targetRef": {"kind": "Pod", "name": pod}} for pod in pods],
    }


def test_a_list_replaces_what_was_seen_and_keeps_only_our_service() -> None:
    seen = ServiceSlices("proxy")
    seen.apply("ADDED", piece("old", "a"))
    seen.listed(
        {
            "metadata": {"resourceVersion": "7"},
            "items": [piece("s1", "a", "b"), piece("x", "c", service="other")],
        }
    )
    assert set(seen.by_name) == {"s1"}
    assert seen.ready() == 2
    assert seen.resource_version == "7"
    assert seen.events_since_list == 0


def test_watch_events_add_change_and_delete_slices() -> None:
    seen = ServiceSlices("proxy")
    seen.listed({"metadata": {"resourceVersion": "1"}, "items": []})
    assert seen.apply("ADDED", piece("s1", "a", version="2")) is True
    assert seen.apply("ADDED", piece("s2", "a", "b", version="3")) is True
    assert seen.ready() == 2  # pod a is in both slices: counted once
    assert seen.apply("MODIFIED", piece("s2", "b", "c", version="4")) is True
    assert seen.ready() == 3
    assert seen.apply("DELETED", piece("s1", version="5")) is True
    assert seen.ready() == 2
    assert seen.resource_version == "5"
    assert seen.events_since_list == 4


def test_bookmarks_and_other_services_change_nothing_but_the_version() -> None:
    seen = ServiceSlices("proxy")
    seen.listed({"metadata": {"resourceVersion": "1"}, "items": [piece("s1", "a")]})
    assert seen.apply("BOOKMARK", {"metadata": {"resourceVersion": "9"}}) is False
    assert seen.apply("ADDED", piece("x", "b", service="other", version="10")) is False
    assert seen.ready() == 1
    assert seen.resource_version == "10"
    assert seen.events_since_list == 2
