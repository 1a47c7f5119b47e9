"""Counting the ready endpoints of one Service from its EndpointSlices, in a thread of its own
(kube.py starts it in a pod):

- list the EndpointSlices labelled `kubernetes.io/service-name=<service>` in the namespace, then
  watch them from the list's resourceVersion (bookmarks on; the server ends each watch after
  `WATCH_TIMEOUT` seconds and it is resumed from the last resourceVersion seen);
- a watch that expired (`410 Gone`, as an HTTP status or as an ERROR event) is answered by a new
  list at once, since the events in between are lost;
- API errors and connection errors are retried with a bounded exponential backoff; the last known
  count stays in force meanwhile (an outage of the API server changes nothing for the visitors);
- endpoints are counted once each (by their pod, since one pod appears in the IPv4 and the IPv6 slice
  of a dual-stack Service, and in two slices for a moment while the controller moves it); an
  endpoint counts unless `conditions.ready` is false (the API says to read an absent value as
  ready). Too many counted replicas only lower the local limits, so in doubt we count.

One log line per state change: the first count, each change of the count, the watch failing, and
the watch working again.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from waitroom.kube.slices import SERVICE_NAME_LABEL, ServiceSlices

log = logging.getLogger("waitroom.kube")  # one logger for cluster awareness, whichever module logs

WATCH_TIMEOUT = 240
"""Seconds after which the API server ends a watch (it is resumed from the last resourceVersion)."""
REQUEST_TIMEOUT = 10.0
"""Bound on connecting and on a list; a watch may be idle for WATCH_TIMEOUT, plus this margin."""
GONE = 410

EndpointSliceLister = Any
"""A `kubernetes.client.DiscoveryV1Api`: the watcher calls its `list_namespaced_endpoint_slice`."""


class WatchState(StrEnum):
    STARTING = "starting"
    WATCHING = "watching"
    FAILING = "failing"
    STOPPED = "stopped"


class WatchExpired(Exception):
    """The resourceVersion we watched from is gone: list again."""


@dataclass
class WatchStats:
    lists: int = 0
    """Successful lists."""
    expired: int = 0
    """Watches that ended with 410 Gone (each followed by a list at once)."""
    failures: int = 0
    """Failed calls, each followed by a backoff."""
    events: int = 0
    """Watch events received (bookmarks included)."""


class ReplicaWatcher:
    """Keeps `ready` equal to the number of ready endpoints of one Service, in a thread of its own.

    `ready` is None until the first list answered; then the last count known, also while the API
    cannot be reached. Reading it from another thread is safe (one attribute, replaced whole).
    """

    def __init__(
        self,
        api: EndpointSliceLister,
        namespace: str,
        service: str,
        *,
        on_change: Callable[[int], None] | None = None,
        backoff: tuple[float, float] = (0.5, 30.0),
        watch_timeout: int = WATCH_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.service = service
        self.on_change = on_change
        self.backoff_first, self.backoff_max = backoff
        self.watch_timeout = watch_timeout
        self.request_timeout = request_timeout
        self.ready: int | None = None
        self.state = WatchState.STARTING
        self.stats = WatchStats()
        self._seen = ServiceSlices(service)
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._lock = threading.Lock()
        self._watch: Any = None
        self._thread: threading.Thread | None = None

    @property
    def selector(self) -> str:
        return f"{SERVICE_NAME_LABEL}={self.service}"

    # --- control --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="waitroom: replica watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread; True when it ended within `timeout` (a daemon thread never holds the
        process anyway). Blocks: call it with asyncio.to_thread from a loop."""
        self._stopping.set()
        with self._lock:
            if self._watch is not None:
                self._watch.stop()  # shuts the stream's socket down, so a blocked read returns
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                return False
        self._set_state(WatchState.STOPPED)
        return True

    def wait_for(self, condition: Callable[[ReplicaWatcher], bool], timeout: float) -> bool:
        """Block until `condition(self)` holds (checked on every change), at most `timeout` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: condition(self), timeout)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # --- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        delay = self.backoff_first
        must_list = True
        while not self._stopping.is_set():
            try:
                if must_list:
                    self._list()
                    must_list = False
                self._watch_once()
                delay = self.backoff_first  # a watch the server ended normally: resume it
            except WatchExpired:
                self.stats.expired += 1
                log.debug("waitroom: cluster: watch of %s expired (410 Gone); listing again", self.selector)
                must_list = True
                self._notify()
                if self._seen.events_since_list == 0:  # expired again at once: do not spin on the server
                    self._stopping.wait(random.uniform(delay / 2, delay))
                    delay = min(delay * 2, self.backoff_max)
            except Exception as e:
                if self._stopping.is_set():
                    break
                self.stats.failures += 1
                must_list = True
                if self.state is not WatchState.FAILING:
                    log.warning(
                        "waitroom: cluster: cannot watch the EndpointSlices of service %s/%s (%s); "
                        "keeping %s, retrying with backoff up to %gs",
                        self.namespace,
                        self.service,
                        describe_error(e),
                        f"{self.ready} ready replica(s)" if self.ready is not None else "store.replicas",
                        self.backoff_max,
                    )
                self._set_state(WatchState.FAILING)
                self._notify()
                # Full jitter: replicas that lost the API server together do not return together.
                self._stopping.wait(random.uniform(delay / 2, delay))
                delay = min(delay * 2, self.backoff_max)
        self._set_state(WatchState.STOPPED)

    def _list(self) -> None:
        response = self.api.list_namespaced_endpoint_slice(
            self.namespace,
            label_selector=self.selector,
            _preload_content=False,
            _request_timeout=self.request_timeout,
        )
        try:
            body = json.loads(response.data)
        finally:
            response.release_conn()
        self._seen.listed(body)
        self.stats.lists += 1
        self._recount()

    def _watch_once(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        stream = watch.Watch(return_type="object")  # plain dicts: no model to reject a field
        with self._lock:
            if self._stopping.is_set():
                return
            self._watch = stream
        kwargs: dict[str, Any] = {
            "label_selector": self.selector,
            "allow_watch_bookmarks": True,
            "timeout_seconds": self.watch_timeout,  # also turns off the client's own 410 retry
            "_request_timeout": (self.request_timeout, self.watch_timeout + self.request_timeout),
        }
        if self._seen.resource_version:
            kwargs["resource_version"] = self._seen.resource_version
        try:
            for event in stream.stream(self.api.list_namespaced_endpoint_slice, self.namespace, **kwargs):
                self._apply(event["type"], event["raw_object"])
        except ApiException as e:
            if e.status == GONE:
                raise WatchExpired from None
            raise
        finally:
            with self._lock:
                self._watch = None

    def _apply(self, kind: str, obj: Mapping[str, Any]) -> None:
        self.stats.events += 1
        if self._seen.apply(kind, obj):
            self._recount()
        else:
            self._notify()

    def _recount(self) -> None:
        count = self._seen.ready()
        previous, self.ready = self.ready, count
        if self.state is not WatchState.WATCHING:
            if self.state is WatchState.FAILING:
                log.info("waitroom: cluster: watching the EndpointSlices of %s/%s again", *self._where())
            self._set_state(WatchState.WATCHING)
        if count != previous:
            if previous is None:
                log.info("waitroom: cluster: service %s/%s has %d ready replica(s)", *self._where(), count)
            else:
                log.info("waitroom: cluster: replicas of %s/%s: %d → %d", *self._where(), previous, count)
            if self.on_change is not None:
                try:
                    self.on_change(count)
                except Exception:
                    log.exception("waitroom: cluster: a replica-count listener failed")
        self._notify()

    def _where(self) -> tuple[str, str]:
        return self.namespace, self.service

    def _set_state(self, state: WatchState) -> None:
        self.state = state


def describe_error(error: Exception) -> str:
    status = getattr(error, "status", None)
    reason = getattr(error, "reason", None)
    if status:
        return f"HTTP {status} {reason or ''}".strip()
    return f"{type(error).__name__}: {error}"[:200]
