"""cli.py in-process: `waitroom check`, and the admin commands through `cli.main` against the real
admin port served in this process (tests/ops runs the installed command against a real mitmdump)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.unit.adminport import TOKEN, Proxy, serving
from waitroom import __version__, cli
from waitroom.build import compile_config
from waitroom.config.fields import ConfigError

REPO = Path(__file__).resolve().parents[2]


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`waitroom ARGV` in a thread (the CLI blocks on urllib), while this loop serves the admin port."""
    status = await asyncio.to_thread(cli.main, list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_check_prints_a_valid_file_in_full(capsys: pytest.CaptureFixture[str]) -> None:
    path = REPO / "config" / "waitroom.yaml"
    assert cli.main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# {path}: valid (1 room, 0 rate limits, 0 warnings)")
    assert "name: demo" in out
    assert "url: memory://" in out


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("rooms:\n  - {name: x, match: {path_prefix: /}, new_sessions: 0}\n", "rooms[0].new_sessions"),
        (
            "rate_limits: [{name: a, key: 'jwt:sub', limit: 1}]\n",
            "rate_limits[0].key: jwt:sub needs a `jwt:` section",
        ),
        ("rooms: [{name: x, new_sessions: 1, template: missing.html}]\n", "rooms[0].template"),
        ("a: &x [1]\nb: *x\n", "aliases (*name) are not allowed"),
    ],
)
def test_check_refuses_with_one_line_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, where: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert cli.main(["check", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"waitroom: {path}: ")
    assert where in err


def test_check_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["room", "shop"], ["room", "shop", "explode"], ["rule", "api", "open"]):
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        assert exited.value.code == 2
    capsys.readouterr()


async def test_status_room_and_rule_commands(
    admin_proxy: Proxy, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WAITROOM_ADMIN_TOKEN", TOKEN)
    async with serving(admin_proxy.operated) as url:
        status, out, _ = await run(capsys, "--url", url, "status")
        assert status == 0
        lines = out.splitlines()
        assert lines[0] == f"ready: True   store: ok   version: {__version__}"
        assert lines[1].startswith(f"config: {admin_proxy.runtime.config_path} (sha256:")
        header = "ROOM  MATCH                MODE    LIMIT  IN WINDOW  BLOCKED  BLOCK FOR  LINE"
        assert lines[3].startswith(header)
        assert lines[3].split()[-1] == "STORE"
        assert lines[4].split() == ["shop", "/shop", "normal", "2/1m", "0", "no", "30s", "-", "-", "-", "ok"]
        assert lines[5].split()[:3] == ["news", "/news", "@news.example"]
        assert lines[6].split()[:2] == ["line", "/line"]
        assert "0 waiting, eta " in lines[6]  # a fifo room shows its line
        assert any(
            line.split() == ["api", "global", "5/1m", "sliding_window", "reject", "False"] for line in lines
        )

        status, out, _ = await run(
            capsys, "--url", url, "room", "shop", "set", "new_sessions=7", "block_for=10s"
        )
        assert status == 0
        assert out.splitlines()[1].split()[:5] == ["shop", "/shop", "normal", "7/1m", "(config"]
        status, out, _ = await run(capsys, "--url", url, "room", "shop", "queue-all")
        assert out.splitlines()[1].split()[2] == "queue-all"
        status, out, _ = await run(capsys, "--url", url, "rule", "api", "set", "limit=9")
        assert "9/1m (config 5)" in out
        status, out, _ = await run(capsys, "--url", url, "rule", "api", "reset")
        assert out.splitlines()[1].split()[2] == "5/1m"
    assert admin_proxy.runtime.overrides.values == {
        "room:shop:new_sessions": "7",
        "room:shop:block_for": "10.0",  # stored in seconds
        "room:shop:mode": "queue-all",
    }


async def test_refusals_exit_1_with_the_apis_reason(
    admin_proxy: Proxy, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(admin_proxy.operated) as url:
        monkeypatch.setenv("WAITROOM_ADMIN_TOKEN", TOKEN)
        assert await run(capsys, "--url", url, "room", "nope", "open") == (
            1,
            "",
            "waitroom: POST /admin/rooms/nope/open: 404 no room named 'nope'\n",
        )
        status, _, err = await run(capsys, "--url", url, "room", "shop", "set", "new_sessions=0")
        assert (status, err.startswith("waitroom: PATCH /admin/rooms/shop: 400 ")) == (1, True)
        monkeypatch.setenv("WAITROOM_ADMIN_TOKEN", "wrong")
        status, _, err = await run(capsys, "--url", url, "status")
        assert (status, "401" in err) == (1, True)
        monkeypatch.setenv("OTHER_TOKEN", TOKEN)
        assert (await run(capsys, "--url", url, "--token-env", "OTHER_TOKEN", "status"))[0] == 0
        monkeypatch.delenv("WAITROOM_ADMIN_TOKEN")
        assert await run(capsys, "--url", url, "status") == (
            1,
            "",
            "waitroom: set WAITROOM_ADMIN_TOKEN to the proxy's admin token\n",
        )
    monkeypatch.setenv("WAITROOM_ADMIN_TOKEN", TOKEN)
    status, _, err = await run(capsys, "--url", url, "status")  # the server is gone
    assert status == 1
    assert err.startswith(f"waitroom: cannot reach the admin API at {url}: ")


class FakeApi:
    """Records what the commands would send; answers with a canned view."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any] | None]] = []

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        self.calls.append((method, path, body))
        return {"name": "x"}


def test_settings_become_the_json_the_api_takes() -> None:
    api = FakeApi()
    cli.room_command(api, "shop", "set", ["new_sessions=7", "block_for=30s"])  # type: ignore[arg-type]
    cli.room_command(api, "shop", "unblock", [])  # type: ignore[arg-type]
    cli.rule_command(api, "api", "set", ["limit=²"])  # type: ignore[arg-type]
    cli.rule_command(api, "api", "set", ["limit=" + "9" * 19])  # type: ignore[arg-type]
    assert api.calls == [
        ("PATCH", "/admin/rooms/shop", {"new_sessions": 7, "block_for": "30s"}),
        ("POST", "/admin/rooms/shop/unblock", None),
        ("PATCH", "/admin/rules/api", {"limit": "²"}),  # not a number here: the API refuses it
        ("PATCH", "/admin/rules/api", {"limit": "9" * 19}),
    ]


def test_settings_are_sent_as_given_for_the_api_to_judge() -> None:
    """The command never lags the knob table: names and values go to the API, which answers 400."""
    api = FakeApi()
    cli.room_command(api, "shop", "set", ["max_active=none", "window=1m", "shadow=true"])  # type: ignore[arg-type]
    cli.room_command(api, "shop", "reset", ["max_active", "retry_after"])  # type: ignore[arg-type]
    cli.rule_command(api, "api", "reset", [])  # type: ignore[arg-type]
    assert api.calls == [
        ("PATCH", "/admin/rooms/shop", {"max_active": None, "window": "1m", "shadow": True}),
        ("POST", "/admin/rooms/shop/reset", {"knobs": ["max_active", "retry_after"]}),
        ("POST", "/admin/rules/api/reset", None),
    ]


@pytest.mark.parametrize(
    ("command", "action", "settings", "message"),
    [
        (
            cli.room_command,
            "set",
            ["new_sessions"],
            "expected KNOB=VALUE (e.g. max_active=500), got 'new_sessions'",
        ),
        (cli.room_command, "set", ["=5"], "expected KNOB=VALUE (e.g. max_active=500), got '=5'"),
        (
            cli.room_command,
            "set",
            [],
            "nothing to set: give KNOB=VALUE (e.g. max_active=500 retry_after=10s)",
        ),
        (
            cli.rule_command,
            "set",
            [],
            "nothing to set: give KNOB=VALUE (e.g. max_active=500 retry_after=10s)",
        ),
        (cli.room_command, "reset", ["limit=1"], "`reset` takes knob names, not values: 'limit=1'"),
        (cli.room_command, "open", ["limit=1"], "`room open` takes no settings"),
    ],
)
def test_bad_settings_are_refused_before_any_call(
    command: Any, action: str, settings: list[str], message: str
) -> None:
    api = FakeApi()
    with pytest.raises(cli.CommandError) as refused:
        command(api, "shop", action, settings)
    assert str(refused.value) == message
    assert api.calls == []


def test_status_shows_the_policy_in_force_and_a_drain() -> None:
    text = cli.render_status(
        {
            "ready": False,
            "store": "failing",
            "policy": "local",
            "draining": True,
            "config": "/c.yaml",
            "rooms": [],
        }
    )
    assert text.splitlines()[:2] == [
        "ready: False   store: failing (on_error=local in force)   draining",
        "config: /c.yaml",
    ]


async def test_url_before_and_after_the_command(
    admin_proxy: Proxy, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/kubernetes.md and the chart's NOTES write `waitroom status --url URL`."""
    monkeypatch.setenv("WAITROOM_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("OTHER_TOKEN", TOKEN)
    async with serving(admin_proxy.operated) as url:
        for argv in (
            ["--url", url, "status"],
            ["status", "--url", url],
            ["--url", "http://127.0.0.1:1", "status", "--url", url],  # the later one wins
            ["room", "shop", "unblock", "--url", url, "--token-env", "OTHER_TOKEN"],
        ):
            status, out, err = await run(capsys, *argv)
            assert (status, err) == (0, ""), argv
            assert "shop" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"waitroom {__version__} (mitmproxy ")
    assert "Python " in out


def test_example_config_and_addon_path(capsys: pytest.CaptureFixture[str]) -> None:
    """What an installed waitroom (no checkout, no config/ nor addons/) offers instead."""
    assert cli.main(["example-config"]) == 0
    assert capsys.readouterr().out == (REPO / "config" / "waitroom.yaml").read_text()
    assert cli.main(["--addon-path"]) == 0
    script = Path(capsys.readouterr().out.strip())
    assert script.name == "script.py"
    assert "addons = [WaitRoom()]" in script.read_text()


def test_check_reports_every_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every problem at once, one line each; a typo is named as the unknown key, with the key it
    was meant to be (not as that key missing)."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        "rooms:\n"
        "  - {name: shop, match: {path_prefix: /shop}, new_sessions: 5}\n"
        "  - {name: news, match: {path_prefix: /news}, new_session: 5, window: soon, max_activ: 3}\n"
        "sesion: {ttl: 1m}\n"
    )
    assert cli.main(["check", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"waitroom: {path}: rooms[1].new_session: unknown key; did you mean new_sessions?",
        f"waitroom: {path}: rooms[1].window: invalid duration 'soon' (use e.g. 500ms, 60s, 30m)",
        f"waitroom: {path}: rooms[1].max_activ: unknown key; did you mean max_active?",
        f"waitroom: {path}: sesion: unknown key; did you mean session?",
    ]


def test_a_proxy_start_names_the_first_error_and_counts_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("rooms:\n  - {name: a, new_sessions: 0, window: soon}\n")
    with pytest.raises(ConfigError) as refused:
        compile_config(path)
    assert str(refused.value) == (
        f"{path}: rooms[0].new_sessions: Input should be greater than or equal to 1 "
        f"(and 1 more: waitroom check {path})"
    )
    assert len(refused.value.problems) == 2


def test_check_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Valid, but not what was meant: a schedule already past, and a host room that `waitroom
    serve` refuses without keep_host_header. Exit 0, or 1 with --strict; --keep-host-header
    silences the host warning."""
    path = tmp_path / "event.yaml"
    path.write_text(
        "rooms:\n"
        "  - {name: sale, match: {path_prefix: /sale}, new_sessions: 5, queue: fifo,\n"
        "     opens_at: '2020-01-01T10:00:00+00:00', closes_at: '2021-01-01T10:00:00+00:00'}\n"
        "  - {name: news, match: {path_prefix: /, host: news.example}, new_sessions: 5}\n"
    )
    assert cli.main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"# {path}: valid (2 rooms, 0 rate limits, 3 warnings)")
    assert err.splitlines() == [
        f"waitroom: warning: {path}: rooms[1].match.host: in reverse mode mitmproxy replaces the Host "
        "header with the upstream's; add --set keep_host_header=true (the proxy refuses this file "
        "without it; `check --keep-host-header`)",
        f"waitroom: warning: {path}: rooms[0].opens_at: 2020-01-01 10:00:00 UTC is past: the room is open, "
        "no pre-queue",
        f"waitroom: warning: {path}: rooms[0].closes_at: 2021-01-01 10:00:00 UTC is past: every new "
        "visitor gets the closed page",
    ]
    assert cli.main(["check", "--strict", "--keep-host-header", "--quiet", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 2
    assert "keep_host_header" not in err


def test_check_into_head_is_quiet() -> None:
    """`waitroom check FILE | head -1`: the reader goes away; no BrokenPipeError traceback."""
    done = subprocess.run(
        f"{sys.executable} -m waitroom.cli check config/waitroom.yaml | head -1",
        shell=True,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.startswith("# config/waitroom.yaml: valid")
    assert done.stderr == ""


def test_status_never_prints_none() -> None:
    """Every live value unknown (the store failing, nothing read yet): `?` or `-`, never None."""
    room: dict[str, Any] = {key: None for key in ROOM_FIELDS}
    room.update(name="shop", order="fifo", max_active=6, store="failing", configured={}, ignored=None)
    status = {key: None for key in ("ready", "store", "config", "draining", "policy", "version")}
    text = cli.render_status({**status, "rooms": [room], "rules": [{"name": "api"}]})
    assert "None" not in text
    row = text.splitlines()[4].split()
    assert row[0] == "shop"
    assert "?/6" in row  # INSIDE: the cap known, the count not


def test_status_says_a_reload_was_refused() -> None:
    text = cli.render_status(
        {
            "ready": True,
            "store": "ok",
            "config": "/etc/waitroom/waitroom.yaml",
            "config_sha256": "1a2b3c4d5e6f" + "0" * 52,
            "config_reload": {
                "state": "refused",
                "since": "2026-01-02T03:04:05+00:00",
                "error": "rooms[0].window: invalid duration 'soon'",
                "file_sha256": "ffee" + "0" * 60,
            },
            "rooms": [],
        }
    )
    first = text.splitlines()[0]
    assert first.startswith("RELOAD REFUSED since 2026-01-0")
    assert "(file sha256:ffee00000000): rooms[0].window: invalid duration 'soon'" in first
    assert first.endswith("running sha256:1a2b3c4d5e6f")


ROOM_FIELDS = [
    "name",
    "match",
    "mode",
    "new_sessions",
    "window",
    "block_for",
    "in_window",
    "blocked_for",
    "active",
    "max_active",
    "state",
    "opens_at",
    "closes_at",
    "opens_in",
    "queue",
    "store",
]


def test_status_says_when_no_honest_estimate_exists() -> None:
    fifo = {"order": "fifo"}
    assert cli._line({**fifo, "queue": {"length": 3, "eta_seconds": 42}}) == "3 waiting, eta 42s"
    # The store answered and no figure exists (the cap full, nobody leaving): said, not hidden.
    assert cli._line({**fifo, "queue": {"length": 3, "eta_seconds": None}}) == "3 waiting, eta unknown"
    assert cli._line({**fifo, "queue": {"length": 3}}) == "3 waiting, eta ?"


async def test_status_shows_a_shadow_room_and_the_switch_makes_it_live(
    admin_proxy: Proxy, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WAITROOM_ADMIN_TOKEN", TOKEN)
    async with serving(admin_proxy.operated) as url:
        status, out, _ = await run(capsys, "--url", url, "room", "line", "set", "shadow=true")
        assert status == 0
        status, out, _ = await run(capsys, "--url", url, "status")
        row = next(line for line in out.splitlines() if line.startswith("line "))
        assert row.split()[2:4] == ["shadow", "normal"]
        assert "0 waiting, eta " in row  # the line it would have
        assert "  line: shadow: everyone is forwarded; its figures are what it would do" in out
        assert "  line: changed at run time: shadow=True (config False)" in out
        status, out, _ = await run(capsys, "--url", url, "room", "line", "reset", "shadow")
        assert status == 0
        status, out, _ = await run(capsys, "--url", url, "status")
        row = next(line for line in out.splitlines() if line.startswith("line "))
        assert row.split()[2] == "normal"
        assert "line: shadow" not in out
