"""`waitroom`: the operator's command line.

    waitroom serve [mitmdump's options]            run the wait room as a reverse proxy (serve.py)
    waitroom check CONFIG                          validate a config file; print it in full, or the error
    waitroom status                                rooms and rules with their live state
    waitroom room NAME open|queue-all|normal|unblock|reset
    waitroom room NAME set new_sessions=50 block_for=30s
    waitroom rule NAME set limit=20
    waitroom rule NAME reset

`serve` runs the proxy (serve.py); every other command but `check` talks to a running proxy's admin
API: `--url` (or WAITROOM_ADMIN_URL, default http://127.0.0.1:8081) and the token in
WAITROOM_ADMIN_TOKEN. Exit status: 0 done, 1 refused or invalid, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from waitroom.config import ConfigError, compile_config
from waitroom.durations import format_duration

DEFAULT_URL = "http://127.0.0.1:8081"
TIMEOUT = 10.0


class Refused(Exception):
    pass


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:  # mitmproxy's option parser takes it from here
        from waitroom import serve

        return serve.main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "check":
            return check(Path(args.config))
        api = Api(args.url, os.environ.get(args.token_env, ""))
        if args.command == "status":
            print(render_status(api.call("GET", "/admin/status")))
        elif args.command == "room":
            print(render_rooms([room_command(api, args.name, args.action, args.settings)]))
        elif args.command == "rule":
            print(render_rules([rule_command(api, args.name, args.action, args.settings)]))
    except Refused as e:
        print(f"waitroom: {e}", file=sys.stderr)
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="waitroom", description="Operate a waitroom proxy.")
    parser.add_argument(
        "--url", default=os.environ.get("WAITROOM_ADMIN_URL", DEFAULT_URL), help="admin port URL"
    )
    parser.add_argument(
        "--token-env", default="WAITROOM_ADMIN_TOKEN", help="environment variable holding the admin token"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "serve", help="run the wait room as a reverse proxy (`waitroom serve --help` lists its options)"
    )
    check_cmd = commands.add_parser("check", help="validate a config file and print the effective config")
    check_cmd.add_argument("config")
    commands.add_parser("status", help="rooms and rules with their live state")
    room = commands.add_parser("room", help="change a room at run time, on every replica")
    room.add_argument("name")
    room.add_argument("action", choices=["open", "queue-all", "normal", "unblock", "close", "reset", "set"])
    room.add_argument(
        "settings",
        nargs="*",
        metavar="FIELD=VALUE",
        help="for set: new_sessions=N block_for=30s opens_at=TIME closes_at=TIME|now|none",
    )
    rule = commands.add_parser("rule", help="change a rate-limit rule at run time, on every replica")
    rule.add_argument("name")
    rule.add_argument("action", choices=["set", "reset"])
    rule.add_argument("settings", nargs="*", metavar="FIELD=VALUE", help="for set: limit=N")
    return parser


def check(path: Path) -> int:
    try:
        config, _, _ = compile_config(path)
    except ConfigError as e:
        print(f"waitroom: {e}", file=sys.stderr)
        return 1
    print(f"# {path}: valid ({len(config.rooms)} room(s), {len(config.rate_limits)} rate limit(s))")
    print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
    return 0


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if not self.token:
            raise Refused("set WAITROOM_ADMIN_TOKEN to the proxy's admin token")
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
            raise Refused(f"{method} {path}: {e.code} {message}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise Refused(f"cannot reach the admin API at {self.url}: {reason}") from None


def _settings(pairs: Sequence[str], allowed: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in allowed:
            raise Refused(f"expected {' '.join(f'{a}=VALUE' for a in allowed)}, got {pair!r}")
        # ASCII digits only ("²".isdigit() is true), and few enough that int() cannot refuse them;
        # the admin API checks the range.
        out[name] = int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else value
    if not out:
        raise Refused(f"nothing to set: give {' and/or '.join(f'{a}=VALUE' for a in allowed)}")
    return out


def room_command(api: Api, name: str, action: str, settings: Sequence[str]) -> dict[str, Any]:
    if action == "set":
        body = _settings(settings, ("new_sessions", "block_for", "opens_at", "closes_at"))
        result: dict[str, Any] = api.call("PATCH", f"/admin/rooms/{name}", body)
        return result
    if settings:
        raise Refused(f"`room {action}` takes no settings")
    result = api.call("POST", f"/admin/rooms/{name}/{action}")
    return result


def rule_command(api: Api, name: str, action: str, settings: Sequence[str]) -> dict[str, Any]:
    if action == "set":
        result: dict[str, Any] = api.call("PATCH", f"/admin/rules/{name}", _settings(settings, ("limit",)))
        return result
    if settings:
        raise Refused("`rule reset` takes no settings")
    result = api.call("POST", f"/admin/rules/{name}/reset")
    return result


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
    return "\n".join(lines)


def render_rooms(rooms: Sequence[dict[str, Any]]) -> str:
    rows = []
    for room in rooms:
        configured = room.get("configured", {})
        limit = f"{room['new_sessions']}/{room['window']}"
        if room["new_sessions"] != configured.get("new_sessions"):
            limit += f" (config {configured.get('new_sessions')})"
        blocked = room.get("blocked_for")
        rows.append(
            [
                room["name"],
                room["match"]["path_prefix"]
                + (f" @{room['match']['host']}" if room["match"].get("host") else ""),
                room["mode"],
                limit,
                room.get("in_window"),
                format_duration(blocked) if isinstance(blocked, int | float) and blocked > 0 else "no",
                room["block_for"],
                _line(room),
                f"{room.get('active')}/{room['max_active']}" if room.get("max_active") else "-",
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
    return table(headers, rows)


def _event(room: dict[str, Any]) -> str:
    """A scheduled room: `opens in 12m`, `open`, `closed`; `-` without a schedule."""
    if not room.get("opens_at") and not room.get("closes_at"):
        return "-"
    if room.get("state") == "scheduled":
        return f"opens in {format_duration(room['opens_in'])}"
    return str(room.get("state"))


def _line(room: dict[str, Any]) -> str:
    """A fifo room's line: who waits, and the wait a newcomer would be told."""
    line = room.get("queue")
    if room.get("order") != "fifo":
        return "-"
    if not isinstance(line, dict):
        return "?"
    return f"{line['length']} waiting, eta {line['eta_seconds']}s"


def render_rules(rules: Sequence[dict[str, Any]]) -> str:
    rows = []
    for rule in rules:
        limit = f"{rule['limit']}/{rule['per']}"
        if rule["limit"] != rule.get("configured", {}).get("limit"):
            limit += f" (config {rule['configured']['limit']})"
        rows.append([rule["name"], rule["key"], limit, rule["algorithm"], rule["action"], rule["shadow"]])
    return table(["RULE", "KEY", "LIMIT", "ALGORITHM", "ACTION", "SHADOW"], rows)


def render_status(status: dict[str, Any]) -> str:
    head = f"ready: {status['ready']}   store: {status['store']}"
    if status.get("policy"):
        head += f" (on_error={status['policy']} in force)"
    if status.get("draining"):
        head += "   draining"
    parts = [head, f"config: {status.get('config')}", "", render_rooms(status["rooms"])]
    if status.get("rules"):
        parts += ["", render_rules(status["rules"])]
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
