"""mitmproxy addon: the config file. The `waitroom_config` option loads it (at start, or when set
again at run time); a change to the file's bytes reloads it (a Kubernetes ConfigMap update is a file
change). A file that does not validate is refused with one line and the running config stays."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from mitmproxy import ctx, exceptions

from waitroom.addon.runtime import Runtime, fingerprint, watch_print
from waitroom.config.fields import ConfigError
from waitroom.metrics import METRICS

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
        self._replay: bool | None = None
        """Whether the store in force was built for replay (waitroom_replay)."""
        self._refused: str | None = None
        """watch_print of the files last refused: refused once, not every second."""

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
        if "keep_host_header" in updated:
            self.runtime.keep_host_header = bool(getattr(ctx.options, "keep_host_header", False))
        if not updated & _RELOAD_ON:
            return
        path = Path(ctx.options.waitroom_config or self.runtime.default_config).expanduser()
        replaced = _host_header_replaced(self.runtime.keep_host_header)
        if self._unchanged(path, replaced) and self._replay == self.runtime.replay:
            return  # e.g. `waitroom serve` sets --mode after --set: the same file, built already
        try:
            self.runtime.load(path, host_header_replaced=replaced)
            self._host_header_replaced = replaced
            self._replay = self.runtime.replay
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
        """Reload when the config file's bytes, or those of a file it names (a template), changed
        since it was loaded (or last refused)."""
        loaded = self.runtime.loaded
        if loaded is None:
            return
        try:
            now = watch_print(loaded.path, loaded.files)
            file_sha = fingerprint(loaded.path)
        except OSError:
            return  # a ConfigMap update swaps a symlink: the file may be gone for a moment
        if now == loaded.watched:
            if self.runtime.reload_refused is not None:  # the files are back to those in force
                self.runtime.reload_refused, self._refused = None, None
                METRICS.process.config_reload_refused.set(0)
                log.info("waitroom: %s is back to the config in force", loaded.path)
            return
        if now == self._refused:
            return  # the same bad files: refused once, not every second
        try:
            self.runtime.load(
                loaded.path, host_header_replaced=_host_header_replaced(self.runtime.keep_host_header)
            )
        except ConfigError as e:
            METRICS.process.config_reloads.labels("error").inc()
            log.error("waitroom: reload refused, the running config stays: %s", e)
            self._refused = now
            self.runtime.refuse(loaded.path, str(e), file_sha)
            return
        except Exception as e:
            METRICS.process.config_reloads.labels("error").inc()
            log.exception("waitroom: reload failed, the running config stays")
            self._refused = now
            self.runtime.refuse(loaded.path, f"reload failed: {type(e).__name__}: {e}", file_sha)
            return
        self._refused = None
        METRICS.process.config_reloads.labels("ok").inc()


def _host_header_replaced(keep_host_header: bool) -> bool:
    """Reverse mode without keep_host_header: mitmproxy puts the upstream's name in Host."""
    reverse = any(str(mode).startswith("reverse:") for mode in ctx.options.mode)
    return reverse and not keep_host_header
