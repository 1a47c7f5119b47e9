"""`waitroom simulate` in-process (sim/cli.py, reached through cli.py): every bad input gets one
line on stderr and status 1, never a traceback; usage errors status 2; --help status 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from waitroom import cli

CONFIG = "rooms:\n  - {name: shop, match: {path_prefix: /shop}, new_sessions: 5, window: 10s}\n"
FLOWS = Path(__file__).resolve().parents[2] / "flows"


def simulate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(["simulate", *argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "candidate.yaml"
    path.write_text(CONFIG)
    return path


def test_simulate_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["simulate", "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert "usage: waitroom simulate" in out
    assert "--crowd SPEC" in out
    assert "--against" in out
    assert "x_forwarded_for" in out  # the JSON-lines fields are listed
    with pytest.raises(SystemExit) as caught:
        cli.main(["--help"])
    assert "simulate" in capsys.readouterr().out


def test_simulate_bad_config_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rooms:\n  - {name: shop, match: {path_prefix: /}, new_sessions: 0}\n")
    status, out, err = simulate(capsys, "--config", str(bad), "--crowd", "10 over 1m", "--no-report")
    assert (status, out) == (1, "")
    assert (
        err
        == f"waitroom simulate: {bad}: rooms[0].new_sessions: Input should be greater than or equal to 1\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.log"], "missing.log: cannot read: No such file or directory"),
        (["garbage.log"], "garbage.log: not a format simulate reads (first line: 'hello'); use --format"),
        (["bad.mitm"], "bad.mitm: not a mitmproxy flow file (Invalid data format.)"),
        (["--crowd", "10 ovr 1m"], "--crowd '10 ovr 1m': column 4: expected \"over\""),
        (["--crowd", "10 over 1m", "--patience", "20%"], "--patience: '20%' is not SHARE:DURATION"),
        (["--crowd", "10 over 1m", "--path", "/elsewhere"], "--path /elsewhere: no room or rule"),
        (["--crowd", "10 over 1m", "--start", "noon"], "--start: 'noon' is not ISO 8601"),
        (["--crowd", "10 over 1m", "--store", "redis://127.0.0.1:1/0"], "127.0.0.1:1/0: "),
        (["--crowd", "10 over 1m", "--store", "mongodb://x"], "--store: 'mongodb://x' is neither"),
        (["--crowd", "10 over 1m", "--change", "1m nope new_sessions=3"], "--change: no room 'nope'"),
        (["--crowd", "10 over 1m", "--outage", "soon"], "--outage: 'soon' is not AT+DURATION"),
        (["--crowd", "10 over 1m", "--replicas", "0"], "--replicas must be between 1 and 64"),
        (["--crowd", "10 over 1m", "--as-recorded"], "--as-recorded needs recorded arrivals"),
        ([], "give recorded arrivals"),
        (["--crowd", "10 over 1m", "--against", "missing.yaml"], "missing.yaml: cannot read"),
        (["--crowd", "10 over 1m", "--report", "/nonexistent/r.html"], "/nonexistent/r.html: cannot write"),
    ],
)
def test_simulate_bad_input_is_one_line(
    capsys: pytest.CaptureFixture[str],
    config: Path,
    tmp_path: Path,
    argv: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "garbage.log").write_text("hello\nworld\n")
    (tmp_path / "bad.mitm").write_text("hello")
    monkeypatch.chdir(tmp_path)
    extra = [] if "--report" in argv else ["--no-report"]
    status, out, err = simulate(capsys, "--config", str(config), *argv, *extra)
    assert status == 1, err
    assert out == ""
    assert err.startswith("waitroom simulate: "), err
    assert err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err


def test_simulate_usage_error_exits_2(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["simulate", "--config", str(config), "--bogus"])
    assert caught.value.code == 2


def test_skipped_lines_are_counted_in_the_summary(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    line = '192.0.2.{i} - - [10/Oct/2026:13:55:{s:02d} -0700] "GET /shop HTTP/1.1" 200 10 "-" "UA"'
    log = tmp_path / "access.log"
    log.write_text("\n".join([line.format(i=i, s=i) for i in range(8)] + ["nonsense"] * 3) + "\n")
    status, out, err = simulate(capsys, "--config", str(config), str(log), "--no-report")
    assert status == 0, err
    assert f"input {log}: 11 lines (combined); 3 skipped (3 not combined: first at line 9)" in out
    assert "admitted   8: 5 at once, 3 after waiting" in out


def test_as_recorded_prints_every_request(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WAITROOM_SECRET", "flows-secret-0123456789abcdef0123")
    config = tmp_path / "journey.yaml"
    config.write_text(
        "session: {ttl: 10m}\nbypass: [/healthz]\nrooms:\n  - {name: shop, match: {path_prefix: /shop}, "
        "new_sessions: 2, window: 2s, block_for: 1s, retry_after: 1s}\n"
    )
    status, out, _ = simulate(
        capsys,
        "--config",
        str(config),
        str(FLOWS / "room-journey.mitm"),
        "--as-recorded",
        "--no-report",
        "--json",
        str(tmp_path / "r.json"),
    )
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "#000 PUT /shop/cart -> room shop admitted"
    assert lines[3] == "#003 GET /shop -> room shop waiting"
    assert lines[9] == "#009 GET /healthz -> untouched"
    data = json.loads((tmp_path / "r.json").read_text())
    assert len(data["requests"]) == 14


def test_a_bug_is_one_line_too(
    capsys: pytest.CaptureFixture[str], config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from waitroom.sim import cli as sim_cli

    async def broken(_options: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(sim_cli, "simulate", broken)
    status, out, err = simulate(capsys, "--config", str(config), "--crowd", "10 over 1m", "--no-report")
    assert (status, out) == (1, "")
    assert err.startswith("waitroom simulate: internal error ZeroDivisionError at test_cli.py:")
    assert err.count("\n") == 1


def test_a_room_with_proof_of_work_is_simulated_as_solved_and_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "pow.yaml"
    config.write_text(
        "rooms:\n  - {name: shop, match: {path_prefix: /shop}, queue: fifo, new_sessions: 5, window: 10s,"
        " proof_of_work: {difficulty: 16}}\n"
    )
    status, out, err = simulate(capsys, "--config", str(config), "--crowd", "8 at once", "--no-report")
    assert status == 0, err
    assert "proof of work not simulated (shop): every visitor solves it at once" in out
    assert "admitted   8: 5 at once, 3 after waiting" in out  # not stuck on their challenges


def test_a_shadow_room_is_simulated_live_and_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "shadow.yaml"
    config.write_text(
        "rooms:\n  - {name: shop, match: {path_prefix: /shop}, new_sessions: 5, window: 10s, shadow: true}\n"
    )
    status, out, err = simulate(capsys, "--config", str(config), "--crowd", "8 at once", "--no-report")
    assert status == 0, err
    assert "shadow rooms simulated live (shop): what they would do once enforced" in out
    assert "admitted   8: 5 at once, 3 after waiting" in out
