"""Every documented command runs: the shell blocks of README.md and docs/*.md marked `run` are run
against a real proxy (the demo, as `make run` starts it), and every shell block is marked, `run` or
`no-run: REASON` (tests/docs/runner.py says how)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.runner import Block, Command, DocsEnv, blocks, commands, matches, unmarked
from tests.support import REPO

pytestmark = pytest.mark.e2e

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_every_shell_block_says_whether_it_runs() -> None:
    missing = [entry for page in PAGES for entry in unmarked(page)]
    assert not missing, "mark these `run` or `no-run: REASON` (tests/docs/runner.py):\n" + "\n".join(missing)


@pytest.mark.parametrize(
    "page", [p for p in PAGES if any(b.run for b in blocks(p))], ids=lambda p: p.relative_to(REPO).as_posix()
)
def test_the_runnable_commands_of(page: Path, tmp_path: Path) -> None:
    env = DocsEnv(tmp_path).start()
    try:
        for block in blocks(page):
            if block.run:
                env.run(block)
    finally:
        env.stop()


def test_the_runner_compares_outputs() -> None:
    block = Block(REPO / "README.md", 1, "sh", ["run", "expect"], "")
    matches(block, Command(2, "x", ["200 200 …"]), "200  200 503\n")
    matches(block, Command(2, "x", ['{"status": "waiting"}']), '{"status": "waiting", "room": "demo"}')
    with pytest.raises(AssertionError, match="expected"):
        matches(block, Command(2, "x", ['{"status": "admitted"}']), '{"status": "waiting"}')
    with pytest.raises(AssertionError, match="expected"):
        matches(block, Command(2, "x", ["200 503"]), "200 200\n")


def test_the_runner_reads_its_marks() -> None:
    def marked(info: str) -> Block:
        return Block(REPO / "README.md", 1, "sh", info.split(), "")

    assert (marked("run").run, marked("run expect").expect, marked("run").expect) == (True, True, False)
    reason = marked("no-run: recursive (they set up what these docs run in)")
    assert (reason.run, reason.no_run) == (False, "recursive (they set up what these docs run in)")
    assert (marked("").run, marked("").no_run) == (False, None)


def test_the_runner_reads_commands() -> None:
    text = "# a comment\nfoo --a \\\n  --b\n# => out\ncat > f <<'EOF'\nx: 1\nEOF\n"
    found = commands(Block(REPO / "README.md", 10, "sh", ["run"], text))
    assert [(c.line, c.text, c.expected) for c in found] == [
        (12, "foo --a  --b", ["out"]),
        (15, "cat > f <<'EOF'\nx: 1\nEOF", []),
    ]
    console = commands(Block(REPO / "README.md", 1, "console", ["run"], "$ waitroom status\nready: True\n"))
    assert [c.text for c in console] == ["waitroom status"]
