"""`waitroom serve`: the wait room on a mitmproxy master that carries only what a reverse proxy needs.

    waitroom serve --mode reverse:http://UPSTREAM --listen-port 8080 \
        --set waitroom_config=config/waitroom.yaml [-s addons/counter.py] [--set name=value ...]

`mitmdump -s addons/waitroom.py` dispatches every hook over mitmdump's ~36 built-in addons (replay,
flow saving, header rewriting, sticky cookies, …), which a wait room in front of one service never
uses; that dispatch is most of what mitmdump spends per request. `ServeMaster` loads mitmproxy's own
core, the proxy server and its layer/TLS/DNS plumbing, `-s` scripts, the terminal log and the flow
dumper, and the wait room; nothing else. It is built from mitmproxy's public classes and run by
mitmproxy's own `tools.main.run`, so options, `--set`, `-s`, `-q`, `--flow-detail`, the confdir's
config.yaml, SIGINT/SIGTERM and exit statuses behave as in mitmdump. The differences: the
`connection_strategy` default is `lazy` (the wait page needs no upstream connection), an unknown
option or a value outside an option's choices stops the start (mitmdump ignores `--set nosuch=1`
and `--set connection_strategy=sometimes`), a usage error is one line, and a front door
(addon/front_door.py) answers new visitors with the wait page before mitmproxy reads them while the
proxy runs more than `store.max_wait` behind.

What it leaves out, and mitmdump keeps (run `mitmdump -s addons/waitroom.py` for them): reading and
saving flows (`-r`, `-w`, `waitroom_replay`), client and server replay, map local/remote, header
and body rewriting, sticky cookies and auth, proxy authentication, upstream auth, the anticache
and anticomp switches, the filter argument, the onboarding app and mitmweb's UI.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from mitmproxy import exceptions, hooks, master, options
from mitmproxy.addons import (
    block,
    core,
    disable_h2c,
    dns_resolver,
    dumper,
    errorcheck,
    next_layer,
    proxyserver,
    script,
    tlsconfig,
    update_alt_svc,
)
from mitmproxy.tools import main as mitmproxy_main

from waitroom import version_line, workers

log = logging.getLogger(__name__)

PROG = "waitroom serve"
_SCRIPT_TURNS = 20
"""Loop turns to wait for the `-s` scripts to load before the options are checked (two suffice)."""
NO_WAITROOM = "--no-waitroom"

# mitmdump's command-line flags (mitmproxy.tools.cmdline) for the options this master defines, in
# mitmdump's order and groups; everything else is reachable with --set name=value.
_BASIC = [("mode", "m", None), ("showhost", None, None), ("scripts", "s", "SCRIPT")]
_PROXY = [
    ("listen_host", None, "HOST"),
    ("listen_port", "p", "PORT"),
    ("server", "n", None),
    ("ignore_hosts", None, "HOST"),
    ("allow_hosts", None, "HOST"),
    ("tcp_hosts", None, "HOST"),
    ("store_streamed_bodies", None, None),
    ("rawtcp", None, None),
    ("http2", None, None),
]
_TLS = [
    ("certs", None, "SPEC"),
    ("cert_passphrase", None, "PASS"),
    ("ssl_insecure", "k", None),
]


class _QuietErrorCheck(errorcheck.ErrorCheck):
    """mitmproxy's errorcheck (exit status 1 when the start logged an error), without its extra
    "Error logged during startup, exiting..." line: the error itself was already printed."""

    name = "errorcheck"

    async def shutdown_if_errored(self) -> None:
        await asyncio.sleep(0)  # as mitmproxy's: let the log calls under way finish
        if self.logger.has_errored:
            sys.exit(1)


class ServeMaster(master.Master):
    """A mitmproxy master with the addons a reverse proxy needs, and the wait room."""

    with_waitroom = True

    def __init__(self, opts: options.Options) -> None:
        super().__init__(opts, with_termlog=True)
        self.addons.add(  # type: ignore[no-untyped-call]
            core.Core(),
            block.Block(),
            disable_h2c.DisableH2C(),
            proxyserver.Proxyserver(),  # type: ignore[no-untyped-call]
            script.ScriptLoader(),  # type: ignore[no-untyped-call]
            dns_resolver.DnsResolver(),
            next_layer.NextLayer(),
            tlsconfig.TlsConfig(),
            update_alt_svc.UpdateAltSvc(),
            dumper.Dumper(),
            _QuietErrorCheck(),
        )
        self.waitroom: Any = None
        if self.with_waitroom:
            from waitroom.addon import WaitRoom  # the wait room's imports only when it runs

            self.waitroom = WaitRoom()
            self.addons.add(self.waitroom)  # type: ignore[no-untyped-call]
        # The wait page and the refusals need no upstream connection; --set overrides this. The
        # option's default changes too, so that `--options` shows it and `reset` keeps it (a
        # private attribute: mitmproxy is pinned below 13, and tests/ops/test_serve.py pins it).
        self.options._options["connection_strategy"]._default = "lazy"
        self.options.update(connection_strategy="lazy")  # type: ignore[no-untyped-call]

    async def run(self) -> None:
        await self._scripts_loaded()
        errors = self.addons.get("errorcheck")  # type: ignore[no-untyped-call]
        refused = bool(errors and errors.logger.has_errored)  # e.g. the config file did not load
        # mitmdump ignores an option nobody defines (a typo in --set); a proxy in front of a service
        # had better not start with a setting it does not apply.
        if unknown := sorted(self.options.deferred):
            log.error(f"{PROG}: unknown option(s): {', '.join(unknown)} (`{PROG} --options` lists them)")
            refused = True
        # mitmproxy checks an option's choices on its command-line flag only, not on --set.
        for name, option in self.options.items():  # type: ignore[no-untyped-call]
            value = option.current()
            values = value if isinstance(value, list | tuple) else [value]
            if option.choices and any(v not in option.choices for v in values):
                log.error(f"{PROG}: {name}: must be one of {', '.join(option.choices)} (got {value!r})")
                refused = True
        if refused:
            pass  # one line said why; mitmproxy's errorcheck exits with status 1 on it
        elif self.with_waitroom and not any(str(m).startswith("reverse:") for m in self.options.mode):
            log.error(
                f"{PROG}: --mode reverse:URL is required: the wait room sits in front of one service "
                "(e.g. --mode reverse:http://127.0.0.1:8000)"
            )
        else:
            self._configure_waitroom()
        if self.waitroom is None:
            await super().run()  # mitmproxy's errorcheck exits with status 1 on any of those lines
            return
        from waitroom.addon.front_door import FrontDoor, installed

        door = FrontDoor(lambda: self.waitroom.runtime.loaded)
        door.start()
        try:
            with installed(door):  # a crowd beyond the proxy's pace gets wait answers, not silence
                await super().run()
        finally:
            door.stop()

    def _configure_waitroom(self) -> None:
        """Tell the wait room every option, as mitmdump does for a `-s` script when it loads it:
        mitmproxy calls an addon added in code only for the options that were set, so the defaults
        its parts declare (the connection limit, the header timeout and size) would never apply."""
        if self.waitroom is None:
            return
        try:
            every = set(self.options.keys())  # type: ignore[no-untyped-call]
            self.addons.invoke_addon_sync(self.waitroom, hooks.ConfigureHook(every))
        except exceptions.OptionsError as e:
            log.error(f"{PROG}: {e}")

    async def _scripts_loaded(self) -> None:
        """mitmproxy loads `-s` scripts in tasks of their own, a turn or two of the loop after the
        options are set; their options are only defined then. A script that fails to load logs
        its error, and the start stops on it anyway."""
        scripts = self.addons.get("scriptloader")  # type: ignore[no-untyped-call]
        for _ in range(_SCRIPT_TURNS):
            if all(s.ns is not None for s in scripts.addons):
                return
            await asyncio.sleep(0)


class LeanMaster(ServeMaster):
    """`waitroom serve --no-waitroom`: the same master without the wait room (the counter alone, or
    the benchmark's baseline)."""

    with_waitroom = False


class _HelpShown(Exception):
    """`--help` was printed: mitmproxy's `run` turns any SystemExit from the parser into status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not the usage block: `waitroom serve --help` shows that."""
        self.exit(2, f"{PROG}: {message} (see `{PROG} --help`)\n")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if status == 0:
            if message:
                self._print_message(message, sys.stdout)
            raise _HelpShown
        super().exit(status, message)


def make_parser(opts: options.Options) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        usage="%(prog)s [options]",
        description=(
            "Run the wait room as a reverse proxy on a lean mitmproxy master. Every option of mitmproxy's "
            "core and of the loaded addons is accepted with --set name=value (--options lists them)."
        ),
    )
    parser.add_argument(
        "--version",
        action="store_true",
        help="show waitroom's and mitmproxy's versions and exit",
        dest="version",
    )
    parser.add_argument("--options", action="store_true", help="Show all options and their default values")
    parser.add_argument("--commands", action="store_true", help="Show all commands and their signatures")
    parser.add_argument(
        "--set",
        type=str,
        dest="setoptions",
        default=[],
        action="append",
        metavar="option[=value]",
        help="Set an option (any that --options lists); may be repeated.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", dest="quiet", help="Quiet.")
    parser.add_argument(
        "-v", "--verbose", action="store_const", dest="verbose", const="debug", help="Increase log verbosity."
    )
    parser.add_argument(
        NO_WAITROOM,
        action="store_true",
        help="Run without the wait room (e.g. the request counter alone: -s addons/counter.py).",
    )
    parser.add_argument(
        workers.WORKERS_FLAG,
        default="1",
        metavar="N",
        help="Worker processes sharing the listening port, one event loop (one core) each: a number, "
        "or `auto` for the cores this process may use. More than 1 needs a shared store (store.url). "
        "Default: 1 (one process, no supervisor).",
    )
    _add(opts, parser, _BASIC)
    opts.make_parser(parser, "flow_detail", metavar="LEVEL")  # type: ignore[no-untyped-call]
    _add(opts, parser.add_argument_group("Proxy Options"), _PROXY)
    _add(opts, parser.add_argument_group("SSL"), _TLS)
    return parser


def _add(opts: options.Options, group: Any, flags: Sequence[tuple[str, str | None, str | None]]) -> None:
    for name, short, metavar in flags:
        opts.make_parser(group, name, short=short, metavar=metavar)  # type: ignore[no-untyped-call]


def main(argv: Sequence[str]) -> int:
    """Run until shut down; mitmproxy's `run` exits with status 1 on a usage, option or start error.
    `--help` exits 0; `--version` names waitroom's version, then mitmproxy's."""
    sys.argv[0] = PROG  # mitmproxy prefixes option errors with it
    if not _shown_and_gone(argv):
        try:
            value, rest = workers.take_workers(argv)
            count = workers.parse_workers(value) if value is not None else 1
        except workers.WorkersError as e:
            print(f"{PROG}: {e}", file=sys.stderr, flush=True)
            return 2
        if count > 1:
            return workers.main(rest, count)
        argv = rest
    if os.environ.get(workers.WORKER_ENV):
        with workers.as_worker():  # one of `--workers N`: the port is shared with the others
            return _run(argv)
    return _run(argv)


def _shown_and_gone(argv: Sequence[str]) -> bool:
    """--help, --version, --options and --commands print and exit: no workers for them."""
    return any(a in argv for a in ("-h", "--help", "--version", "--options", "--commands"))


def _run(argv: Sequence[str]) -> int:
    master_cls = LeanMaster if NO_WAITROOM in argv else ServeMaster
    if "--version" in argv:
        print(version_line(), flush=True)
    try:
        mitmproxy_main.run(master_cls, make_parser, list(argv))
    except _HelpShown:
        return 0
    return 0
