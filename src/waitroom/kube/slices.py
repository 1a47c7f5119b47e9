"""What the EndpointSlices of one Service say: the slices as last listed and watched, and how many
ready endpoints they hold, each counted once. No I/O and no thread: replicawatch.py feeds it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
"""The label the EndpointSlice controller puts on the slices of a Service."""


def count_ready(slices: Iterable[Mapping[str, Any]]) -> int:
    """Distinct endpoints that are not marked not-ready, over all the slices of one Service."""
    seen: set[tuple[str, ...]] = set()
    for piece in slices:
        for endpoint in piece.get("endpoints") or ():
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            ref = endpoint.get("targetRef") or {}
            if ref.get("name"):
                seen.add(("ref", str(ref.get("kind", "")), str(ref.get("namespace", "")), str(ref["name"])))
            else:
                seen.add(("addresses", *sorted(map(str, endpoint.get("addresses") or ()))))
    return len(seen)


class ServiceSlices:
    """The EndpointSlices of one Service as last listed and watched, by name, and the
    resourceVersion to resume the watch from. No I/O, no thread: ReplicaWatcher feeds it."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.by_name: dict[str, Mapping[str, Any]] = {}
        self.resource_version: str | None = None
        self.events_since_list = 0

    def listed(self, body: Mapping[str, Any]) -> None:
        """A list's answer replaces everything seen so far."""
        self.by_name = {
            _name(item): item for item in body.get("items") or () if self.ours(item) and _name(item)
        }
        self.resource_version = (body.get("metadata") or {}).get("resourceVersion") or None
        self.events_since_list = 0

    def apply(self, kind: str, obj: Mapping[str, Any]) -> bool:
        """One watch event; True when it was about one of our slices (the count is due again)."""
        self.events_since_list += 1
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self.resource_version = str(version)
        if kind == "BOOKMARK" or not self.ours(obj) or not _name(obj):
            return False
        if kind == "DELETED":
            self.by_name.pop(_name(obj), None)
        elif kind in ("ADDED", "MODIFIED"):
            self.by_name[_name(obj)] = obj
        return True

    def ours(self, obj: Mapping[str, Any]) -> bool:
        # The server filters by the label selector; checking again costs nothing.
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return bool(labels.get(SERVICE_NAME_LABEL) == self.service)

    def ready(self) -> int:
        return count_ready(self.by_name.values())


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")
