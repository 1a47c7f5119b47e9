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
and `--set connection_strategy=sometimes`), and a usage error is one line.

What it leaves out, and mitmdump keeps (run `mitmdump -s addons/waitroom.py` for them): reading and
saving flows (`-r`, `-w`, `waitroom_replay`), client and server replay, map local/remote, header
and body rewriting, sticky cookies and auth, proxy authentication, upstream auth, the anticache
and anticomp switches, the filter argument, the onboarding app and mitmweb's UI.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from mitmproxy import master, options
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
        if self.with_waitroom:
            from waitroom.addon import WaitRoom  # the wait room's imports only when it runs

            self.addons.add(WaitRoom())  # type: ignore[no-untyped-call]
        # The wait page and the refusals need no upstream connection; --set overrides this.
        self.options.update(connection_strategy="lazy")  # type: ignore[no-untyped-call]

    async def run(self) -> None:
        await self._scripts_loaded()
        # mitmdump ignores an option nobody defines (a typo in --set); a proxy in front of a service
        # had better not start with a setting it does not apply.
        if unknown := sorted(self.options.deferred):
            log.error(f"{PROG}: unknown option(s): {', '.join(unknown)} (`{PROG} --options` lists them)")
        # mitmproxy checks an option's choices on its command-line flag only, not on --set.
        for name, option in self.options.items():  # type: ignore[no-untyped-call]
            value = option.current()
            values = value if isinstance(value, list | tuple) else [value]
            if option.choices and any(v not in option.choices for v in values):
                log.error(f"{PROG}: {name}: must be one of {', '.join(option.choices)} (got {value!r})")
        await super().run()  # mitmproxy's errorcheck exits with status 1 on any of those lines

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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not the usage block: `waitroom serve --help` shows that."""
        self.exit(2, f"{PROG}: {message} (see `{PROG} --help`)\n")


def make_parser(opts: options.Options) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        usage="%(prog)s [options]",
        description=(
            "Run the wait room as a reverse proxy on a lean mitmproxy master. Every option of mitmproxy's "
            "core and of the loaded addons is accepted with --set name=value (--options lists them)."
        ),
    )
    parser.add_argument("--version", action="store_true", help="show version number and exit", dest="version")
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
    _add(opts, parser, _BASIC)
    opts.make_parser(parser, "flow_detail", metavar="LEVEL")  # type: ignore[no-untyped-call]
    _add(opts, parser.add_argument_group("Proxy Options"), _PROXY)
    _add(opts, parser.add_argument_group("SSL"), _TLS)
    return parser


def _add(opts: options.Options, group: Any, flags: Sequence[tuple[str, str | None, str | None]]) -> None:
    for name, short, metavar in flags:
        opts.make_parser(group, name, short=short, metavar=metavar)  # type: ignore[no-untyped-call]


def main(argv: Sequence[str]) -> int:
    """Run until shut down; mitmproxy's `run` exits with status 1 on a usage, option or start error."""
    sys.argv[0] = PROG  # mitmproxy prefixes option errors with it
    master_cls = LeanMaster if NO_WAITROOM in argv else ServeMaster
    mitmproxy_main.run(master_cls, make_parser, list(argv))
    return 0
