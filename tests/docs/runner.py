"""Runs the shell blocks of README.md and docs/*.md that are marked runnable, against real processes.

A fenced block's info string says what the test does with it (GitHub still highlights the language):

    ```sh run              each command must succeed (the block runs in `bash -eo pipefail`)
    ```sh run expect       and `# => ...` lines under a command are its output: compared with
                           whitespace normalised, `…` matching anything; a line that is JSON is
                           compared as a subset (the keys it names, with those values)
    ```console run         `$ ` lines are commands (the other lines show sample output)
    ```sh no-run: REASON   not run, and why (cluster, root, network, placeholder, recursive, ...)

An unmarked sh/bash/console block fails the test: every command gets a decision.

Each docs file gets a fresh environment: the demo as `make run` starts it (`waitroom serve` with
the request counter and config/waitroom.yaml, its admin port and the token `demo`) on free ports, a
local upstream, and a temporary folder for /etc/waitroom/. In a block, before it runs:

- `localhost:8080` (or 127.0.0.1) is the demo's port, `:8081` its admin port;
- `http://UPSTREAM:PORT` is the local upstream; `/etc/waitroom/` the temporary folder;
- a `waitroom serve ...`/`mitmdump ...` line with `--listen-port N` starts in the background
  (waited for, stopped when the block ends), on a free port that also replaces `localhost:N`.

Blocks run from the repository's root with `.venv/bin` first on PATH, in a temporary HOME.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import REPO, Upstream, free_port, port_open, stop_process, wait_for

SHELLS = {"sh", "bash", "shell", "console"}
FENCE = re.compile(r"^```([A-Za-z]*)([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
BLOCK_TIMEOUT = 60
"""Seconds a block may take in all (servers it starts included)."""
TOKEN = "demo"
EXPECT = "# => "


@dataclass
class Block:
    path: Path
    line: int
    lang: str
    words: list[str]
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def run(self) -> bool:
        """Marked `run`: the first word after the language, never a word of a reason."""
        return self.words[:1] == ["run"]

    @property
    def expect(self) -> bool:
        return self.run and self.words[1:2] == ["expect"]

    @property
    def no_run(self) -> str | None:
        found = re.match(r"no-run:\s*(\S.*)", " ".join(self.words))
        return found[1] if found else None


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    found = []
    for m in FENCE.finditer(text):
        lang = m[1].lower()
        if lang in SHELLS:
            line = text.count("\n", 0, m.start()) + 1
            found.append(Block(path, line, lang, m[2].split(), m[3]))
    return found


def unmarked(path: Path) -> list[str]:
    """Shell blocks that say neither `run` nor `no-run: REASON`."""
    return [
        f"{b.where}: ```{b.lang} {' '.join(b.words)}".rstrip()
        for b in blocks(path)
        if not (b.run or b.no_run)
    ]


@dataclass
class Command:
    line: int
    text: str
    expected: list[str] = field(default_factory=list)


_HEREDOC = re.compile(r"<<-?\s*['\"]?([A-Za-z_]+)['\"]?")


def commands(block: Block) -> list[Command]:
    """The block's commands: continued lines joined, here-documents kept whole, `# =>` lines
    attached to the command above them. In a console block only `$ ` lines are commands."""
    lines = block.text.splitlines()
    found: list[Command] = []
    i = 0
    while i < len(lines):
        raw = lines[i]
        stripped = raw.strip()
        number = block.line + 1 + i
        i += 1
        if stripped.startswith(EXPECT.strip()) and found:
            found[-1].expected.append(stripped[len(EXPECT.strip()) :].strip())
            continue
        if block.lang == "console":
            if not stripped.startswith("$ "):
                continue
            stripped = stripped[2:]
        if not stripped or stripped.startswith("#"):
            continue
        text = stripped
        while text.endswith("\\") and i < len(lines):
            more = lines[i].strip()
            text = text[:-1] + " " + (more.removeprefix("> ") if block.lang == "console" else more)
            i += 1
        heredoc = _HEREDOC.search(text)
        if heredoc:
            body = []
            while i < len(lines) and lines[i].strip() != heredoc[1]:
                body.append(lines[i])
                i += 1
            i += 1
            text = "\n".join([text, *body, heredoc[1]])
        found.append(Command(number, text))
    return found


DEMO = re.compile(r"(localhost|127\.0\.0\.1):808[01]\b|\bwaitroom (status|room|rule)\b")
"""What a block says when it talks to the demo (after its own servers' ports are substituted)."""
INSTALLS = re.compile(r"(^|[\s;&|(])(make|pip|pip3|pipx|apt-get|apt)(\s|$)")
SERVER = re.compile(r"(^|\s|/)(waitroom serve|mitmdump)\s")
LISTEN = re.compile(r"(--listen-port|-p)\s+(\d+)")


@dataclass
class DocsEnv:
    """What a docs file's blocks run against: the demo proxy, an upstream, a folder for /etc/waitroom."""

    workdir: Path
    port: int = 0
    admin_port: int = 0
    upstream: Upstream | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DocsEnv:
        """The upstream and the folders; the demo starts with the first block that talks to it."""
        self.home = self.workdir / "home"
        self.etc = self.workdir / "etc-waitroom"
        self.home.mkdir(parents=True, exist_ok=True)
        self.etc.mkdir(parents=True, exist_ok=True)
        self.upstream = Upstream()
        self.port, self.admin_port = free_port(), free_port()
        return self

    def demo(self) -> None:
        if self.proc is not None:
            return
        self.log = self.workdir / "demo.log"
        # As `make run` starts it (Makefile), on free ports.
        argv = [
            str(Path(sys.executable).with_name("waitroom")),
            "serve",
            "--mode",
            "reverse:http://127.0.0.1:9",
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(self.port),
            "--set",
            "body_size_limit=1m",
            "--set",
            "waitroom_config=config/waitroom.yaml",
            "--set",
            f"waitroom_admin_port={self.admin_port}",
            "--set",
            "waitroom_admin_host=127.0.0.1",
            "-s",
            "addons/counter.py",
        ]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=self.env())
        wait_for(self._ready, 30, "the docs' demo proxy")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"the demo exited:\n{self.log.read_text()}")
        return port_open(self.port) and port_open(self.admin_port)

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "LANG", "TERM", "TMPDIR")}
        return {
            **keep,
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.home),
            "WAITROOM_ADMIN_TOKEN": TOKEN,
            "WAITROOM_ADMIN_URL": f"http://127.0.0.1:{self.admin_port}",
            "PORT": str(self.port),
            "ADMIN_PORT": str(self.admin_port),
        }

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGKILL)  # the file's commands are done: nothing to drain
        if self.upstream is not None:
            self.upstream.close()

    # --- a block --------------------------------------------------------------------------------

    def substitute(self, text: str) -> str:
        """The block as run here (see the module's docstring); starts the demo if it needs it."""
        assert self.upstream is not None
        text = text.replace("http://UPSTREAM:PORT", self.upstream.url)
        text = text.replace("/etc/waitroom/", f"{self.etc}/")
        for line in text.splitlines():
            if SERVER.search(line) and (listen := LISTEN.search(line)):
                port = listen[2]
                own = str(free_port())
                text = re.sub(rf"(localhost|127\.0\.0\.1):{port}\b", rf"\1:{own}", text)
                text = re.sub(rf"(--listen-port|-p)\s+{port}\b", rf"\1 {own}", text)
        if DEMO.search(text):
            self.demo()
        text = re.sub(r"(localhost|127\.0\.0\.1):8080\b", rf"\1:{self.port}", text)
        return re.sub(r"(localhost|127\.0\.0\.1):8081\b", rf"\1:{self.admin_port}", text)

    def run(self, block: Block) -> None:
        """Run the block; AssertionError naming the file, the line and what went wrong."""
        # Substituted as a whole: a server's port is the same for every command of its block.
        found = commands(dataclasses.replace(block, text=self.substitute(block.text)))
        for command in found:
            # The venv is shared and prepared by `make`: a docs block never installs anything.
            assert not INSTALLS.search(command.text), f"{block.where}: line {command.line}: mark it no-run"
        script = ["set -eo pipefail", "trap '__stop' EXIT", _STOP]
        for i, command in enumerate(found):
            text = command.text
            script.append(f"printf '\\036%d\\n' {i}")
            listen = LISTEN.search(text)
            if SERVER.search(text) and listen and "-nr" not in text.split():
                script.append(_background(text, int(listen[2]), self.workdir / f"server-{i}.log"))
            else:
                script.append(text)
        script.append("printf '\\036end\\n'")
        try:
            done = subprocess.run(
                ["bash", "-c", "\n".join(script)],
                capture_output=True,
                text=True,
                timeout=BLOCK_TIMEOUT,
                cwd=REPO,
                env=self.env(),
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as e:
            raise AssertionError(
                f"{block.where}: the block took over {BLOCK_TIMEOUT}s: {e.stdout!r}"
            ) from None
        outputs = dict(_split(done.stdout))
        if done.returncode != 0 or "end" not in outputs:
            ran = [int(k) for k in outputs if k != "end"]
            last = max(ran) if ran else 0
            failed = found[last]
            logs = "".join(p.read_text(errors="replace")[-2000:] for p in self.workdir.glob("server-*.log"))
            raise AssertionError(
                f"{block.where}: line {failed.line}: `{failed.text}` → exit status {done.returncode}\n"
                f"stdout: {outputs.get(str(last), '')[-2000:]}\nstderr: {done.stderr[-2000:]}\n{logs}"
            )
        if block.expect:
            for i, command in enumerate(found):
                if command.expected:
                    matches(block, command, outputs.get(str(i), ""))


_STOP = """__stop() {
  for pid in $(jobs -p); do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}"""


def _background(command: str, port: int, log: Path) -> str:
    """Start a server, wait (bounded) for its port, fail with its log if it exits first."""
    return (
        f"{command} > {shlex.quote(str(log))} 2>&1 &\n"
        f"__pid=$!; for __i in $(seq 300); do\n"
        f"  kill -0 $__pid 2>/dev/null || {{ cat {shlex.quote(str(log))} >&2; exit 1; }}\n"
        f"  (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; sleep 0.1\n"
        f"done"
    )


def _split(stdout: str) -> Iterator[tuple[str, str]]:
    parts = stdout.split("\x1e")
    for part in parts[1:]:
        key, _, output = part.partition("\n")
        yield key, output


def matches(block: Block, command: Command, actual: str) -> None:
    got = [" ".join(line.split()) for line in actual.splitlines() if line.strip()]
    wanted = [" ".join(line.split()) for line in command.expected]
    where = f"{block.where}: line {command.line}: `{command.text}`"
    if len(wanted) == 1 and _json(wanted[0]) is not None:
        have = _json(" ".join(got))
        assert have is not None, f"{where}: expected JSON, got {actual!r}"
        assert _subset(_json(wanted[0]), have), f"{where}: expected {wanted[0]}, got {' '.join(got)}"
        return
    assert len(got) == len(wanted), f"{where}: expected {wanted}, got {got}"
    for want, have in zip(wanted, got, strict=True):
        pattern = ".*".join(re.escape(part) for part in want.split("…"))
        assert re.fullmatch(pattern, have), f"{where}: expected {want!r}, got {have!r}"


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _subset(want: Any, have: Any) -> bool:
    if isinstance(want, dict):
        return isinstance(have, dict) and all(k in have and _subset(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(map(_subset, want, have))
    return bool(want == have)
