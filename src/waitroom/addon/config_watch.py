"""mitmproxy addon: the config file. The `waitroom_config` option loads it (at start, or when set
again at run time); a change to the file's bytes reloads it (a Kubernetes ConfigMap update is a file
change). A file that does not validate is refused with one line and the running config stays."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

from mitmproxy import ctx, exceptions

from waitroom.config import ConfigError
from waitroom.metrics import METRICS
from waitroom.runtime import Runtime, fingerprint

log = logging.getLogger(__name__)

WATCH_INTERVAL = 1.0
"""Seconds between two looks at the config file."""
_RELOAD_ON = frozenset({"waitroom_config", "keep_host_header", "mode", "waitroom_replay"})


class ConfigLoader:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._task: asyncio.Task[None] | None = None
        self._start_error = ""
        self._host_header_replaced: bool | None = None
        """What the config in force was checked against (rooms matching a host need the Host kept)."""

    def load(self, loader: object) -> None:
        loader.add_option(  # type: ignore[attr-defined]
            "waitroom_config",
            str,
            "",
            """
            Path of the waitroom config file (YAML): rooms, bypass prefixes, session cookie, store.
            Empty means the shipped config/waitroom.yaml. A file that does not validate stops the
            start with one line naming the field; at run time (a changed file, or this option set
            again) it is refused with one line and the running config stays.
            """,
        )

    def configure(self, updated: set[str]) -> None:
        if not updated & _RELOAD_ON:
            return
        path = Path(ctx.options.waitroom_config or self.runtime.default_config).expanduser()
        replaced = _host_header_replaced()
        if self._unchanged(path, replaced) and "waitroom_replay" not in updated:
            return  # e.g. `waitroom serve` sets --mode after --set: the same file, built already
        try:
            self.runtime.load(path, host_header_replaced=replaced)
            self._host_header_replaced = replaced
        except ConfigError as e:
            message = f"waitroom: {e}"
            if self.runtime.running:
                raise exceptions.OptionsError(message) from None  # type: ignore[no-untyped-call]
            # At start an exception would print a traceback; one error line makes mitmproxy's
            # errorcheck stop the process with exit status 1 instead (once: `waitroom serve` sets
            # the mode after the config, and the same file fails the same way).
            if message != self._start_error:
                log.error(message)
            self._start_error = message

    def _unchanged(self, path: Path, host_header_replaced: bool) -> bool:
        """The config in force came from these bytes, and was checked against this Host handling
        (or has no room that matches a host, which is all that handling decides)."""
        loaded = self.runtime.loaded
        if loaded is None or loaded.path != path:
            return False
        by_host = any(room.match.host is not None for room in loaded.config.rooms)
        if by_host and host_header_replaced != self._host_header_replaced:
            return False
        try:
            return fingerprint(path) == loaded.fingerprint
        except OSError:
            return False

    def running(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # offline (mitmproxy's test context): no watcher
            return
        self._task = loop.create_task(self._watch(), name="waitroom: config watcher")

    def done(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            self.check()

    def check(self) -> None:
        """Reload when the config file's bytes changed since it was loaded."""
        loaded = self.runtime.loaded
        if loaded is None:
            return
        try:
            now = fingerprint(loaded.path)
        except OSError:
            return  # a ConfigMap update swaps a symlink: the file may be gone for a moment
        if now == loaded.fingerprint:
            return
        try:
            self.runtime.load(loaded.path, host_header_replaced=_host_header_replaced())
        except ConfigError as e:
            METRICS.config_reloads.labels("error").inc()
            log.error("waitroom: reload refused, the running config stays: %s", e)
            # Remember the bad bytes, so the same file is not refused again every second.
            self.runtime.loaded = dataclasses.replace(loaded, fingerprint=now)
            return
        except Exception:
            METRICS.config_reloads.labels("error").inc()
            log.exception("waitroom: reload failed, the running config stays")
            return
        METRICS.config_reloads.labels("ok").inc()
        log.info("waitroom: reloaded %s", loaded.path)


def _host_header_replaced() -> bool:
    """Reverse mode without keep_host_header: mitmproxy puts the upstream's name in Host."""
    reverse = any(str(mode).startswith("reverse:") for mode in ctx.options.mode)
    return reverse and not getattr(ctx.options, "keep_host_header", False)
