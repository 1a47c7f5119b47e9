"""Unit tests of the pure parts: cookie codec, config, routing, responses, identity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from waitroom.config import ClientIPConfig, ConfigError, load_config, parse_config
from waitroom.durations import format_duration, parse_duration
from waitroom.identity import client_ip, client_is_https
from waitroom.responses import (
    DEFAULT_TEMPLATE,
    Template,
    TemplateError,
    script_safe_json,
    set_cookie,
    wait_answer,
    wants_json,
)
from waitroom.routing import Router, covers, normalize_host, normalize_path
from waitroom.sessions import SecretError, SessionCodec, keys_from_secret

KEY_A = keys_from_secret("key-a-0123456789abcdef")
KEY_B = keys_from_secret("key-b-0123456789abcdef")
NOW = 1_800_000_000.0


# --- sessions ----------------------------------------------------------------------------------


def test_cookie_round_trip_and_room_binding() -> None:
    codec = SessionCodec(KEY_A, 600)
    session, token = codec.issue("shop", "sid1", NOW)
    assert codec.verify(token, "shop", NOW + 1) == session
    assert codec.verify(token, "other", NOW + 1) is None
    assert codec.verify(token, "shop", session.expires_at) is None  # expired at expires_at


def test_tampering_is_detected() -> None:
    codec = SessionCodec(KEY_A, 600)
    token = codec.issue("shop", "sid1", NOW)[1]
    payload, sig = token.split(".")
    for bad in (
        payload[:-1] + ("A" if payload[-1] != "A" else "B") + "." + sig,
        payload + "." + sig[:-1] + ("A" if sig[-1] != "A" else "B"),
        token[: len(token) // 2],
        token + "x",
        "." + sig,
        payload + ".",
    ):
        assert codec.verify(bad, "shop", NOW) is None


def test_key_rotation_first_signs_all_verify() -> None:
    old_token = SessionCodec(KEY_A, 600).issue("shop", "s", NOW)[1]
    rotated = SessionCodec(KEY_B + KEY_A, 600)
    assert rotated.verify(old_token, "shop", NOW) is not None
    new_token = rotated.issue("shop", "s", NOW)[1]
    assert SessionCodec(KEY_A, 600).verify(new_token, "shop", NOW) is None
    assert SessionCodec(KEY_B, 600).verify(new_token, "shop", NOW) is not None


@given(st.one_of(st.none(), st.text(max_size=600), st.binary(max_size=300).map(lambda b: b.hex())))
def test_garbage_never_raises(value: str | None) -> None:
    assert SessionCodec(KEY_A, 600).verify(value, "shop", NOW) is None


def test_renewal_only_after_half_the_ttl() -> None:
    codec = SessionCodec(KEY_A, 600)
    session = codec.issue("shop", "s", NOW)[0]
    assert not codec.needs_renewal(session, NOW + 299)
    assert codec.needs_renewal(session, NOW + 301)
    renewed = codec.renew(session, NOW + 301)[0]
    assert (renewed.session_id, renewed.issued_at) == (session.session_id, session.issued_at)
    assert renewed.expires_at == int(NOW) + 301 + 600


def test_secret_parsing_names_the_key_but_not_the_secret() -> None:
    assert len(keys_from_secret(" aaaaaaaaaaaaaaaa , bbbbbbbbbbbbbbbb ")) == 2
    with pytest.raises(SecretError, match="empty"):
        keys_from_secret(" , ")
    with pytest.raises(SecretError, match="key #2 is too short") as e:
        keys_from_secret("aaaaaaaaaaaaaaaa,tooshortsecret")
    assert "tooshortsecret" not in str(e.value)


# --- config ------------------------------------------------------------------------------------


def test_shipped_config_and_defaults() -> None:
    config = load_config(Path(__file__).resolve().parents[2] / "config" / "waitroom.yaml")
    assert config.rooms[0].name == "demo"
    room = parse_config({"rooms": [{"name": "r", "new_sessions": 1}]}).rooms[0]
    assert (room.window, room.block_for, room.retry_after, room.status) == (60, 60, 10, 503)
    store = parse_config({}).store
    assert (store.url, store.timeout, store.max_wait, store.on_error.value) == (
        "memory://",
        0.25,
        2.0,
        "local",
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"rooms": [{"name": "r", "new_sessions": 1, "window": "soon"}]},
            "rooms[0].window: invalid duration 'soon'",
        ),
        ({"rooms": [{"name": "r", "new_sessions": 0}]}, "rooms[0].new_sessions: "),
        ({"rooms": [{"name": "r", "new_sessions": 1, "maxx": 2}]}, "rooms[0].maxx: "),
        (
            {
                "rooms": [
                    {"name": "r", "new_sessions": 1},
                    {"name": "r", "new_sessions": 1, "match": {"path_prefix": "/b"}},
                ]
            },
            "rooms[1].name: duplicate room name 'r'",
        ),
        (
            {"rooms": [{"name": "r", "new_sessions": 1, "match": {"path_prefix": "shop"}}]},
            "rooms[0].match.path_prefix: ",
        ),
        ({"store": {"url": "mysql://x"}}, "store.url: "),
        ({"session": {"cookie": "a b"}}, "session.cookie: "),
        ({"rate_limits": [{"name": "x", "limit": 1, "key": "cookie:x"}]}, "rate_limits[0].key: "),
        ([1, 2], "the file must hold a mapping"),
    ],
)
def test_config_errors_are_one_line_naming_the_field(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_yaml_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("rooms:\n  - name: [\n")
    with pytest.raises(ConfigError, match=r"line \d+"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_template_paths_are_relative_to_the_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("rooms: [{name: r, new_sessions: 1, template: page.html}]\n")
    assert load_config(path).rooms[0].template == tmp_path / "page.html"


def test_durations() -> None:
    assert [parse_duration(v) for v in ("500ms", "60s", "30m", "2h", "1d", 5, "1.5s")] == [
        0.5,
        60,
        1800,
        7200,
        86400,
        5,
        1.5,
    ]
    for bad in ("soon", "-1s", True, None, "5 parsecs"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)
    assert [format_duration(s) for s in (0.05, 60, 90, 3600)] == ["50ms", "1m", "90s", "1h"]


# --- routing -----------------------------------------------------------------------------------


def test_prefixes_are_segment_aware() -> None:
    assert covers("/shop", "/shop")
    assert covers("/shop", "/shop/")
    assert covers("/shop", "/shop/cart")
    assert not covers("/shop", "/shopping")
    assert covers("/static/", "/static/x")
    assert covers("/static/", "/static")
    assert covers("/", "/anything")


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/static/../shop", "/shop"),
        ("//shop", "/shop"),
        ("/%73hop", "/shop"),
        ("/shop/./x", "/shop/x"),
        ("/./shop", "/shop"),
        ("\\shop", "/shop"),
        ("/shop?x=1#f", "/shop"),
        ("/a/b/", "/a/b/"),
        ("/..", "/"),
        ("", "/"),
    ],
)
def test_normalize_path(raw: str, normal: str) -> None:
    assert normalize_path(raw) == normal


def test_normalize_host() -> None:
    assert normalize_host("Shop.Example.com:443") == "shop.example.com"
    assert normalize_host("example.com.") == "example.com"
    assert normalize_host("[::1]:8080") == "[::1]"


def test_longest_prefix_wins_and_host_beats_hostless() -> None:
    config = parse_config(
        {
            "bypass": ["/shop/static/"],
            "rooms": [
                {"name": "all", "new_sessions": 1, "match": {"path_prefix": "/"}},
                {"name": "shop", "new_sessions": 1, "match": {"path_prefix": "/shop"}},
                {
                    "name": "shop-eu",
                    "new_sessions": 1,
                    "match": {"path_prefix": "/shop", "host": "EU.example.com"},
                },
            ],
        }
    )
    router = Router(config)
    assert router.route("x.com", "/shop/a").room.name == "shop"  # type: ignore[union-attr]
    assert router.route("eu.example.com", "/shop/a").room.name == "shop-eu"  # type: ignore[union-attr]
    assert router.route("x.com", "/other").room.name == "all"  # type: ignore[union-attr]
    assert router.route("x.com", "/shop/static/app.js").bypass


# --- responses ---------------------------------------------------------------------------------


def test_template_rejects_unknown_variables_and_escapes() -> None:
    with pytest.raises(TemplateError, match="visitor"):
        Template.parse("<p>{{ visitor }}</p>")
    assert "</script>" not in script_safe_json({"x": "</script><b>&"})
    assert json.loads(script_safe_json({"x": "</script>"})) == {"x": "</script>"}


def test_wait_answer_negotiates_and_sets_headers() -> None:
    template = Template.load(DEFAULT_TEMPLATE)
    kwargs = {"template": template, "room": "shop", "status": 503, "retry_after": 7, "blocked_for": 41.2}
    as_json = wait_answer(**kwargs, accept="application/json")  # type: ignore[arg-type]
    assert json.loads(as_json.body) == {
        "status": "waiting",
        "room": "shop",
        "retry_after": 7,
        "blocked_for": 42,
    }
    assert as_json.headers["Retry-After"] == "7"
    assert as_json.headers["Cache-Control"] == "no-store"
    for accept in ("text/html,application/json", "*/*", ""):
        page = wait_answer(**kwargs, accept=accept)  # type: ignore[arg-type]
        assert page.headers["Content-Type"].startswith("text/html")
    assert not wants_json("*/*")
    assert wants_json("application/json")


def test_the_shipped_page_is_small_accessible_and_self_contained() -> None:
    raw = DEFAULT_TEMPLATE.read_bytes()
    assert len(raw) < 16 * 1024
    text = raw.decode()
    for needle in (
        '<html lang="en">',
        "<title>",
        'role="status"',
        'aria-live="polite"',
        '<noscript><meta http-equiv="refresh"',
        'name="viewport"',
    ):
        assert needle in text
    assert "http://" not in text
    assert "https://" not in text
    assert ' src="' not in text
    assert "<link" not in text


def test_set_cookie_attributes() -> None:
    assert set_cookie("c", "v", 60, False) == "c=v; Path=/; Max-Age=60; HttpOnly; SameSite=Lax"
    assert set_cookie("c", "v", 60, True).endswith("; Secure")


# --- identity ----------------------------------------------------------------------------------


def test_https_is_believed_only_from_trusted_proxies() -> None:
    untrusted, trusted = ClientIPConfig(), ClientIPConfig(trusted_proxies=1)
    assert client_is_https(untrusted, tls=True, forwarded_proto=None)
    assert not client_is_https(untrusted, tls=False, forwarded_proto="https")
    assert client_is_https(trusted, tls=False, forwarded_proto="http, https")
    assert not client_is_https(trusted, tls=False, forwarded_proto="https, http")


def test_spoofed_forwarded_for_does_not_move_the_client() -> None:
    untrusted, one = ClientIPConfig(), ClientIPConfig(trusted_proxies=1)
    assert client_ip(untrusted, peer="10.0.0.9", forwarded_for="1.2.3.4", header_value=None) == "10.0.0.9"
    assert client_ip(one, peer="10.0.0.1", forwarded_for="6.6.6.6, 5.5.5.5", header_value=None) == "5.5.5.5"
    assert client_ip(one, peer="10.0.0.1", forwarded_for="5.5.5.5", header_value=None) == "5.5.5.5"
    header = ClientIPConfig(header="X-Envoy-External-Address")
    assert client_ip(header, peer="10.0.0.1", forwarded_for="6.6.6.6", header_value="7.7.7.7") == "7.7.7.7"
    assert client_ip(header, peer="10.0.0.1", forwarded_for=None, header_value=None) == "10.0.0.1"
