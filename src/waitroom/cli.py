"""`waitroom`: the operator's command line.

    waitroom serve [mitmdump's options]            run the wait room as a reverse proxy (serve.py)
    waitroom check CONFIG                          validate a config file: every error, warnings, or
                                                   the effective config in full
    waitroom example-config                        print the shipped example config
    waitroom simulate --config CONFIG [ARRIVALS]   what visitors would have seen (sim/cli.py)
    waitroom status                                rooms and rules with their live state
    waitroom room NAME open|queue-all|normal|unblock|close
    waitroom room NAME set max_active=500 retry_after=10s new_sessions=50 ...
    waitroom room NAME reset [KNOB ...]
    waitroom rule NAME set limit=20
    waitroom rule NAME reset [KNOB ...]
    waitroom --version | --addon-path

`serve` runs the proxy (serve.py); `simulate` runs the deciders on a virtual clock (waitroom.sim);
every other command but `check` and `example-config` talks to a running proxy's admin API: `--url`
(or WAITROOM_ADMIN_URL, default http://127.0.0.1:8081), before or after the command, and the token
in WAITROOM_ADMIN_TOKEN. Exit status: 0 done, 1 refused or invalid, 2 usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from waitroom import version_line
from waitroom.build import compile_config, config_warnings, missing_secrets
from waitroom.config.durations import format_duration
from waitroom.config.fields import ConfigError
from waitroom.config.schema import load_config

DEFAULT_URL = "http://127.0.0.1:8081"
TIMEOUT = 10.0
BROKEN_PIPE = 141
"""The exit status of a command whose reader went away (`waitroom check FILE | head`): 128 + SIGPIPE,
as a shell pipeline's own commands end."""


class CommandError(Exception):
    pass


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["serve"]:  # mitmproxy's option parser takes it from here
            from waitroom import serve

            return serve.main(argv[1:])
        if argv[:1] == ["simulate"]:  # its own options (sim/cli.py); imported only when used
            from waitroom.sim import cli as simulate

            return simulate.main(argv[1:])
        return _run(_parser().parse_args(argv))
    except BrokenPipeError:
        # The reader closed the pipe: what is left to print has nowhere to go. Point stdout at
        # /dev/null so that the interpreter's own flush at exit does not fail a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE


def _run(args: argparse.Namespace) -> int:
    if args.addon_path:
        print(addon_path())
        return 0
    if args.command is None:
        _parser().error("a command is required (serve, check, example-config, simulate, status, room, rule)")
    try:
        if args.command == "check":
            return check(
                Path(args.config),
                keep_host_header=args.keep_host_header,
                strict=args.strict,
                quiet=args.quiet,
            )
        if args.command == "example-config":
            sys.stdout.write(example_config())
            return 0
        api = Api(args.url, os.environ.get(args.token_env, ""))
        if args.command == "status":
            print(render_status(api.call("GET", "/admin/status")))
        elif args.command == "room":
            print(render_rooms([room_command(api, args.name, args.action, args.settings)]))
        elif args.command == "rule":
            print(render_rules([rule_command(api, args.name, args.action, args.settings)]))
    except CommandError as e:
        print(f"waitroom: {e}", file=sys.stderr)
        return 1
    sys.stdout.flush()  # a closed pipe shows here, inside main's BrokenPipeError handler
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="waitroom", description="Run and operate a waitroom proxy.")
    parser.add_argument("--version", action="version", version=version_line())
    parser.add_argument(
        "--addon-path",
        action="store_true",
        help="print the path of the addon script for `mitmdump -s` (an installed waitroom has no addons/)",
    )
    _admin_options(parser, None)
    # The admin options are accepted after the command too (`waitroom status --url URL`): there
    # they default to SUPPRESS, so that leaving them out keeps what was given before the command.
    admin = argparse.ArgumentParser(add_help=False)
    _admin_options(admin, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "serve", help="run the wait room as a reverse proxy (`waitroom serve --help` lists its options)"
    )
    commands.add_parser(
        "simulate",
        help="what visitors would have seen with a config, on a virtual clock "
        "(`waitroom simulate --help` lists its options)",
    )
    check_cmd = commands.add_parser(
        "check", help="validate a config file: every error and warning, or the effective config"
    )
    check_cmd.add_argument("config")
    check_cmd.add_argument(
        "--keep-host-header",
        action="store_true",
        help="the proxy runs with --set keep_host_header=true (rooms may then match a host)",
    )
    check_cmd.add_argument("--strict", action="store_true", help="warnings fail the check too (exit 1)")
    check_cmd.add_argument(
        "-q", "--quiet", action="store_true", help="print only errors and warnings, not the effective config"
    )
    commands.add_parser("example-config", help="print the shipped example config (a start for your own)")
    commands.add_parser("status", help="rooms and rules with their live state", parents=[admin])
    room = commands.add_parser("room", help="change a room at run time, on every replica", parents=[admin])
    room.add_argument("name")
    room.add_argument("action", choices=["open", "queue-all", "normal", "unblock", "close", "reset", "set"])
    room.add_argument(
        "settings",
        nargs="*",
        metavar="KNOB=VALUE",
        help="for set: max_active=500 (or none), retry_after=10s, new_sessions=N, window=1m, block_for=30s, "
        "opens_at=TIME, closes_at=TIME|now|none, max_retry_after, abandon_after, grace, tickets_per_ip, "
        "proof_of_work=DIFFICULTY|none, shadow=true|false; "
        "for reset: the knobs to reset (all, without any)",
    )
    rule = commands.add_parser(
        "rule", help="change a rate-limit rule at run time, on every replica", parents=[admin]
    )
    rule.add_argument("name")
    rule.add_argument("action", choices=["set", "reset"])
    rule.add_argument(
        "settings",
        nargs="*",
        metavar="KNOB=VALUE",
        help="for set: limit=N burst=N max_delay=2s shadow=true; "
        "for reset: the knobs to reset (all, without any)",
    )
    return parser


def _admin_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """`--url` and `--token-env`; `default` None means the real defaults."""
    url_default = os.environ.get("WAITROOM_ADMIN_URL", DEFAULT_URL) if default is None else default
    token_default = "WAITROOM_ADMIN_TOKEN" if default is None else default
    parser.add_argument("--url", default=url_default, help="the admin port's URL (WAITROOM_ADMIN_URL)")
    parser.add_argument(
        "--token-env", default=token_default, help="environment variable holding the admin token"
    )


def addon_path() -> str:
    """The addon script for `mitmdump -s`, inside the installed package."""
    return str(resources.files("waitroom.addon").joinpath("script.py"))


def example_config() -> str:
    """The example config the package ships (what `waitroom_config` defaults to)."""
    return resources.files("waitroom.config").joinpath("waitroom.yaml").read_text(encoding="utf-8")


def check(path: Path, *, keep_host_header: bool = False, strict: bool = False, quiet: bool = False) -> int:
    """Every error in the file (exit 1), else its warnings (exit 0, 1 with `strict`) and the
    effective config."""
    environ = dict(os.environ)
    absent: list[str] = []
    with contextlib.suppress(ConfigError):  # compile_config reports it, with every other problem
        absent = missing_secrets(load_config(path), environ)
    environ.update({name: "a stand-in for the check" for name in absent})
    try:
        config, _, _ = compile_config(path, environ)
    except ConfigError as e:
        for problem in e.problems:
            print(f"waitroom: {problem}", file=sys.stderr)
        return 1
    warnings = config_warnings(config, time.time(), keep_host_header=keep_host_header)
    warnings += [f"jwt.secret_env: {name} is not set here; the proxy needs it" for name in absent]
    for warning in warnings:
        print(f"waitroom: warning: {path}: {warning}", file=sys.stderr)
    if not quiet:
        counts = ", ".join(
            _counted(n, noun)
            for n, noun in (
                (len(config.rooms), "room"),
                (len(config.rate_limits), "rate limit"),
                (len(warnings), "warning"),
            )
        )
        print(f"# {path}: valid ({counts})")
        print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
    return 1 if strict and warnings else 0


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if not self.token:
            raise CommandError("set WAITROOM_ADMIN_TOKEN to the proxy's admin token")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return json.load(response)
        except urllib.error.HTTPError as e:
            try:
                message = json.load(e).get("error", e.reason)
            except ValueError:
                message = e.reason
            raise CommandError(f"{method} {path}: {e.code} {message}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise CommandError(f"cannot reach the admin API at {self.url}: {reason}") from None


def _counted(n: int, noun: str) -> str:
    """`1 room`, `2 rooms` (English nouns with a plain plural only)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _settings(pairs: Sequence[str]) -> dict[str, Any]:
    """`KNOB=VALUE` pairs as the admin API's JSON: whole numbers as numbers, `none` as null, `true`
    and `false` as booleans, anything else as the string given. The API judges names and values, so
    the command never lags behind what the proxy accepts."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CommandError(f"expected KNOB=VALUE (e.g. max_active=500), got {pair!r}")
        out[name] = _json_value(value)
    if not out:
        raise CommandError("nothing to set: give KNOB=VALUE (e.g. max_active=500 retry_after=10s)")
    return out


def _json_value(value: str) -> Any:
    # ASCII digits only ("²".isdigit() is true), and few enough that int() cannot refuse them;
    # the admin API checks the range.
    if value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    if value.lower() in ("none", "null"):
        return None
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def _knobs(names: Sequence[str]) -> dict[str, Any] | None:
    """`reset KNOB ...`: the body naming the knobs to reset; None (reset all) without any."""
    for name in names:
        if "=" in name:
            raise CommandError(f"`reset` takes knob names, not values: {name!r}")
    return {"knobs": list(names)} if names else None


def room_command(api: Api, name: str, action: str, settings: Sequence[str]) -> dict[str, Any]:
    if action == "set":
        result: dict[str, Any] = api.call("PATCH", f"/admin/rooms/{name}", _settings(settings))
        return result
    if action == "reset":
        result = api.call("POST", f"/admin/rooms/{name}/reset", _knobs(settings))
        return result
    if settings:
        raise CommandError(f"`room {action}` takes no settings")
    result = api.call("POST", f"/admin/rooms/{name}/{action}")
    return result


def rule_command(api: Api, name: str, action: str, settings: Sequence[str]) -> dict[str, Any]:
    if action == "set":
        result: dict[str, Any] = api.call("PATCH", f"/admin/rules/{name}", _settings(settings))
        return result
    result = api.call("POST", f"/admin/rules/{name}/reset", _knobs(settings))
    return result


# --- rendering: never `None` on the screen: `?` where the store did not answer, `-` where a value
# does not apply ---------------------------------------------------------------------------------

UNKNOWN = "?"
"""A live value the store did not give (it is failing, or was not asked yet)."""
NOT_APPLICABLE = "-"


def _cell(value: object, live: bool = False) -> str:
    """A table cell: `-` for a value that does not apply, `?` for a live one that is unknown."""
    if value is None:
        return UNKNOWN if live else NOT_APPLICABLE
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
    return "\n".join(lines)


def _setting(value: object) -> str:
    """A configured setting: `none` where the file sets none (no cap), not `-`."""
    return "none" if value is None else str(value)


def _with_config(room: dict[str, Any], name: str, shown: object) -> str:
    """A value in force, and the configured one when an override differs from it."""
    configured = room.get("configured", {})
    text = _cell(shown)
    if name in configured and room.get(name) != configured[name]:
        text += f" (config {_setting(configured[name])})"
    return text


def render_rooms(rooms: Sequence[dict[str, Any]]) -> str:
    rows = []
    for room in rooms:
        limit = f"{_cell(room.get('new_sessions'))}/{_cell(room.get('window'))}"
        configured = room.get("configured", {})
        if any(k in configured and room.get(k) != configured[k] for k in ("new_sessions", "window")):
            limit += (
                f" (config {_setting(configured.get('new_sessions'))}/{_setting(configured.get('window'))})"
            )
        blocked = room.get("blocked_for")
        if isinstance(blocked, int | float):
            blocked_cell = format_duration(blocked) if blocked > 0 else "no"
        else:
            blocked_cell = UNKNOWN
        match = room.get("match") or {}
        rows.append(
            [
                room.get("name"),
                _cell(match.get("path_prefix")) + (f" @{match['host']}" if match.get("host") else ""),
                _mode(room),
                limit,
                _cell(room.get("in_window"), live=True),
                blocked_cell,
                _with_config(room, "block_for", room.get("block_for")),
                _line(room),
                _inside(room),
                _event(room),
                room.get("store"),
            ]
        )
    headers = [
        "ROOM",
        "MATCH",
        "MODE",
        "LIMIT",
        "IN WINDOW",
        "BLOCKED",
        "BLOCK FOR",
        "LINE",
        "INSIDE",
        "EVENT",
        "STORE",
    ]
    text = table(headers, rows)
    notes = [note for room in rooms for note in _room_notes(room)]
    return "\n".join([text, *notes])


def _mode(room: dict[str, Any]) -> str:
    """The room's mode; a shadow room's says so (its figures are what it would do, and it
    forwards everyone): `shadow normal`."""
    mode = _cell(room.get("mode"))
    return f"shadow {mode}" if room.get("shadow") else mode


def _inside(room: dict[str, Any]) -> str:
    """`4/6`: sessions active and the cap (`?/6` while the store fails); `-` without a cap."""
    if not room.get("max_active"):
        return NOT_APPLICABLE
    inside = f"{_cell(room.get('active'), live=True)}/{room['max_active']}"
    configured = room.get("configured", {})
    if "max_active" in configured and configured["max_active"] != room["max_active"]:
        inside += f" (config {_setting(configured['max_active'])})"
    return inside


def _room_notes(room: dict[str, Any]) -> list[str]:
    """Lines under the table for what does not fit a cell: other knobs changed at run time, and
    stored changes the proxy ignored."""
    notes = []
    configured = room.get("configured", {})
    shown_in_table = {"new_sessions", "window", "block_for", "max_active", "opens_at", "closes_at"}
    changed = [
        f"{k}={_setting(room.get(k))} (config {_setting(v)})"
        for k, v in configured.items()
        if k not in shown_in_table and room.get(k) != v
    ]
    if room.get("shadow"):
        notes.append(f"  {room.get('name')}: shadow: everyone is forwarded; its figures are what it would do")
    if changed:
        notes.append(f"  {room.get('name')}: changed at run time: {', '.join(changed)}")
    for ignored in room.get("ignored") or []:
        notes.append(f"  {room.get('name')}: ignored a stored change: {ignored}")
    return notes


def _event(room: dict[str, Any]) -> str:
    """A scheduled room: `opens in 12m`, `open`, `closed`; `-` without a schedule."""
    if not room.get("opens_at") and not room.get("closes_at"):
        return NOT_APPLICABLE
    if room.get("state") == "scheduled" and isinstance(room.get("opens_in"), int | float):
        return f"opens in {format_duration(room['opens_in'])}"
    return _cell(room.get("state"), live=True)


def _line(room: dict[str, Any]) -> str:
    """A fifo room's line: who waits, and the wait a newcomer would be told."""
    line = room.get("queue")
    if room.get("order") != "fifo":
        return NOT_APPLICABLE
    if not isinstance(line, dict):
        return UNKNOWN
    eta = line.get("eta_seconds")
    # None: the store answered, and no honest figure exists (the cap full, nobody leaving).
    told = f"{eta}s" if isinstance(eta, int | float) else "unknown" if "eta_seconds" in line else UNKNOWN
    return f"{_cell(line.get('length'), live=True)} waiting, eta {told}"


def render_rules(rules: Sequence[dict[str, Any]]) -> str:
    rows = []
    for rule in rules:
        configured = rule.get("configured", {})
        limit = f"{_cell(rule.get('limit'))}/{_cell(rule.get('per'))}"
        if "limit" in configured and rule.get("limit") != configured["limit"]:
            limit += f" (config {_setting(configured['limit'])})"
        rows.append(
            [
                rule.get("name"),
                rule.get("key"),
                limit,
                rule.get("algorithm"),
                rule.get("action"),
                _with_config(rule, "shadow", rule.get("shadow")),
            ]
        )
    return table(["RULE", "KEY", "LIMIT", "ALGORITHM", "ACTION", "SHADOW"], rows)


def _moment(value: object) -> str:
    """An ISO 8601 time from the API as the operator's local clock time, or as given."""
    if not isinstance(value, str):
        return _cell(value, live=True)
    try:
        return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    except ValueError:
        return value


def render_status(status: dict[str, Any]) -> str:
    parts: list[str] = []
    reload = status.get("config_reload")
    if isinstance(reload, dict) and reload.get("state") == "refused":
        file_sha = str(reload.get("file_sha256") or "")[:12]
        running = str(status.get("config_sha256") or "")[:12]
        parts.append(
            f"RELOAD REFUSED since {_moment(reload.get('since'))} (file sha256:{file_sha or UNKNOWN}): "
            f"{reload.get('error')} — running sha256:{running or UNKNOWN}"
        )
    if status.get("store_reset_at"):
        parts.append(f"STORE CAME BACK EMPTY at {_moment(status['store_reset_at'])}")
    head = f"ready: {_cell(status.get('ready'))}   store: {_cell(status.get('store'), live=True)}"
    if status.get("policy"):
        head += f" (on_error={status['policy']} in force)"
    if status.get("draining"):
        head += "   draining"
    if status.get("version"):
        head += f"   version: {status['version']}"
    config = f"config: {_cell(status.get('config'))}"
    if status.get("config_sha256"):
        config += f" (sha256:{str(status['config_sha256'])[:12]}"
        if status.get("config_loaded_at"):
            config += f", loaded {_moment(status['config_loaded_at'])}"
        config += ")"
    parts += [head, config, "", render_rooms(status.get("rooms") or [])]
    if status.get("rules"):
        parts += ["", render_rules(status["rules"])]
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
