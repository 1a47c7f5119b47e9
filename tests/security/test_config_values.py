"""Class 5 of issue 16: values that would switch protection off are refused, with one line naming
the field, in the config file (start and live reload), the admin API and the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import SECRET, StartProxy
from tests.security.servers import get
from tests.support import Upstream, wait_for
from waitroom.cli import CommandError, _settings
from waitroom.config.durations import parse_duration
from waitroom.config.fields import ConfigError
from waitroom.config.overrides import check_room_value
from waitroom.config.schema import load_config


def _load(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    message = str(refused.value)
    assert "\n" not in message
    assert len(message) < 600
    return message


ROOM = "rooms:\n  - {{name: shop, match: {{path_prefix: /shop}}, new_sessions: 1, {field}: {value}}}\n"


@pytest.mark.parametrize(
    "value", [".inf", "-.inf", ".nan", "1e303", "1" * 400, "'" + "1" * 400 + "s'", "'2000000d'"]
)
@pytest.mark.parametrize("field", ["window", "block_for", "retry_after"])
def test_room_durations_are_finite_and_bounded(tmp_path: Path, field: str, value: str) -> None:
    message = _load(tmp_path, ROOM.format(field=field, value=value))
    assert f"rooms[0].{field}" in message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("session: {ttl: .inf}", "session.ttl"),
        ("session: {ttl: 1e303}", "session.ttl"),
        ("store: {timeout: .nan}", "store.timeout"),
        ("store: {timeout: 60s}", "store.timeout"),
        ("store: {breaker: {cool_down: .inf}}", "store.breaker.cool_down"),
        ("admin: {drain: .inf}", "admin.drain"),
        ("jwt: {leeway: .nan}", "jwt.leeway"),
        ("rate_limits: [{name: a, limit: 1, per: .inf}]", "rate_limits[0].per"),
        ("rate_limits: [{name: a, limit: 1, per: 1e-9}]", "rate_limits[0].per"),
        ("rate_limits: [{name: a, limit: " + "9" * 400 + "}]", "rate_limits[0].limit"),
        ("rate_limits: [{name: a, limit: 1, burst: " + "9" * 400 + "}]", "rate_limits[0].burst"),
        ("rooms: [{name: a, new_sessions: " + "9" * 400 + "}]", "rooms[0].new_sessions"),
        ("decision_log: {sample: .nan}", "decision_log.sample"),
        ('session: {cookie: "a\\n"}', "session.cookie"),
        ('session: {cookie: "a\\r\\nSet-Cookie: x=1"}', "session.cookie"),
        ('session: {cookie: "a b"}', "session.cookie"),
        ('session: {cookie: "a;b"}', "session.cookie"),
        (
            "rooms: [{name: a, new_sessions: 1, match: {path_prefix: /a/../shop}}]",
            "rooms[0].match.path_prefix",
        ),
        ("rooms: [{name: a, new_sessions: 1, match: {path_prefix: //shop}}]", "rooms[0].match.path_prefix"),
        ("rooms: [{name: a, new_sessions: 1, match: {path_prefix: /%73hop}}]", "rooms[0].match.path_prefix"),
        ("rooms: [{name: a, new_sessions: 1, match: {path_prefix: /shop%}}]", "rooms[0].match.path_prefix"),
        (
            "rooms: [{name: a, new_sessions: 1, match: {path_prefix: '/sh\\\\op'}}]",
            "rooms[0].match.path_prefix",
        ),
        ("bypass: [/static/./x]", "bypass[0]"),
        (
            "rate_limits: [{name: a, limit: 1, match: {path_prefix: /api//v1}}]",
            "rate_limits[0].match.path_prefix",
        ),
    ],
)
def test_values_that_switch_protection_off_are_refused(tmp_path: Path, text: str, where: str) -> None:
    assert where in _load(tmp_path, text)


def test_a_prefix_error_says_what_to_write(tmp_path: Path) -> None:
    message = _load(tmp_path, "rooms: [{name: a, new_sessions: 1, match: {path_prefix: //shop//x}}]")
    assert "write '/shop/x'" in message


def test_yaml_aliases_are_refused_at_once(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
    )
    started = time.perf_counter()
    message = _load(tmp_path, bomb)
    assert time.perf_counter() - started < 1
    assert "aliases" in message
    assert "line 2" in message


def test_deep_or_huge_yaml_is_one_line(tmp_path: Path) -> None:
    assert "nested too deeply" in _load(tmp_path, "a: " + "[" * 50_000)
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * 2_000_000)
    with pytest.raises(ConfigError, match="larger than"):
        load_config(path)


def test_durations_parse_strictly() -> None:
    for bad in (
        float("inf"),
        float("nan"),
        1e303,
        10**400,
        "1e3",
        "nan",
        "inf",
        "1" * 400,
        "-1s",
        "１s",
        True,
    ):
        with pytest.raises(ValueError, match="invalid duration") as refused:
            parse_duration(bad)
        assert len(str(refused.value)) < 200
    assert parse_duration("1.5m") == 90.0


def test_admin_values_are_checked() -> None:
    for bad in (float("nan"), float("inf"), "nan", 10**400, "1e400s"):
        with pytest.raises(ValueError, match="block_for"):
            check_room_value("block_for", bad)
    for bad_int in (float("nan"), 10**400, "5", True, 0):
        with pytest.raises(ValueError, match="new_sessions"):
            check_room_value("new_sessions", bad_int)


def test_cli_numbers_are_checked() -> None:
    assert _settings(["new_sessions=5"]) == {"new_sessions": 5}
    assert _settings(["new_sessions=²"]) == {"new_sessions": "²"}  # the API refuses it
    assert _settings(["new_sessions=" + "9" * 5000])["new_sessions"] == "9" * 5000
    assert _settings(["nope=1"]) == {"nope": 1}  # the API judges names too (400 with a did-you-mean)
    with pytest.raises(CommandError):
        _settings(["nope"])


ADMIN = """
admin: {{port: {port}}}
rooms:
  - {{name: shop, match: {{path_prefix: /shop}}, new_sessions: 1, window: 60s, block_for: 60s}}
"""


def test_admin_patch_and_live_reload_refuse_them(start_proxy: StartProxy, upstream: Upstream) -> None:
    import httpx

    from tests.support import free_port, port_open

    port = free_port()
    proxy = start_proxy(
        ADMIN.format(port=port),
        upstream.url,
        env={"WAITROOM_SECRET": SECRET, "WAITROOM_ADMIN_TOKEN": "t" * 20},
    )
    admin = f"http://127.0.0.1:{port}"
    wait_for(lambda: port_open(port), 10, "the admin port")
    auth = {"Authorization": "Bearer " + "t" * 20, "Content-Type": "application/json"}
    for body in (
        '{"block_for": NaN}',
        '{"block_for": Infinity}',
        '{"block_for": 1e999}',
        '{"new_sessions": 1e999}',
    ):
        answer = httpx.patch(admin + "/admin/rooms/shop", content=body, headers=auth, timeout=10)
        assert answer.status_code == 400, (body, answer.text)
    # A reload with an infinite window is refused with one line; the running room stays on.
    assert proxy.config_path is not None
    proxy.config_path.write_text(ADMIN.format(port=port).replace("window: 60s", "window: .inf"))
    wait_for(lambda: "reload refused" in proxy.log_text(), 10, "the reload to be refused")
    assert get(proxy.port, "/shop")[0] == 200
    assert get(proxy.port, "/shop")[0] == 503
    line = next(x for x in proxy.log_text().splitlines() if "reload refused" in x)
    assert "rooms[0].window" in line
    assert "Traceback" not in proxy.log_text()
    assert json.loads(httpx.get(admin + "/admin/rooms/shop", headers=auth, timeout=10).text)
