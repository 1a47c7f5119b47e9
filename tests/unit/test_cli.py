"""cli.py in-process: `waitroom check`, and the admin commands through `cli.main` against the real
admin port served in this process (tests/ops runs the installed command against a real mitmdump)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.unit.adminport import TOKEN, Proxy, serving
from waitroom import cli

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
    assert out.startswith(f"# {path}: valid (")
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
        assert lines[0] == "ready: True   store: ok"
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


@pytest.mark.parametrize(
    ("command", "settings", "message"),
    [
        (
            cli.room_command,
            ["window=1m"],
            "expected new_sessions=VALUE block_for=VALUE opens_at=VALUE closes_at=VALUE, got 'window=1m'",
        ),
        (
            cli.room_command,
            ["new_sessions"],
            "expected new_sessions=VALUE block_for=VALUE opens_at=VALUE closes_at=VALUE, got 'new_sessions'",
        ),
        (
            cli.room_command,
            [],
            "nothing to set: give new_sessions=VALUE and/or block_for=VALUE"
            " and/or opens_at=VALUE and/or closes_at=VALUE",
        ),
        (cli.rule_command, [], "nothing to set: give limit=VALUE"),
    ],
)
def test_bad_settings_are_refused_before_any_call(command: Any, settings: list[str], message: str) -> None:
    api = FakeApi()
    with pytest.raises(
        cli.Refused, match=f"^{message}$".replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")
    ):
        command(api, "shop", "set", settings)
    with pytest.raises(cli.Refused, match="takes no settings"):
        command(api, "shop", "reset", ["limit=1"])
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
