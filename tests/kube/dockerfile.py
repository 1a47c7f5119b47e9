"""Just enough of a Dockerfile parser to check the image's build and run its command line without a
Docker engine: instructions (continuations joined, comments dropped), stages, ENV and exec forms."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str
    value: str

    def exec_form(self) -> list[str]:
        """The JSON-array form of ENTRYPOINT/CMD; the shell form is refused (it breaks signals)."""
        parsed = json.loads(self.value)
        assert isinstance(parsed, list), self.value
        assert all(isinstance(p, str) for p in parsed), self.value
        return parsed


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        """ENV key=value pairs, in order (a later one wins); `$NAME` is left for the caller."""
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for word in shlex.split(instruction.value):
                key, sep, value = word.partition("=")
                assert sep, f"use ENV key=value, not the legacy form: {instruction.value!r}"
                values[key] = value
        return values


@dataclass
class Dockerfile:
    args: dict[str, str]
    """ARGs before the first FROM, with their defaults."""
    stages: list[Stage]

    @property
    def runtime(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def instructions(text: str) -> list[Instruction]:
    out: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        keyword, _, value = whole.partition(" ")
        out.append(Instruction(keyword.upper(), value.strip()))
    assert not pending, "the file ends inside a continued instruction"
    return out


def parse(path: Path) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions(path.read_text()):
        if instruction.keyword == "FROM":
            words = instruction.value.split()
            base = words[0]
            for name, default in args.items():
                base = base.replace("${" + name + "}", default).replace("$" + name, default)
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages:
            assert instruction.keyword == "ARG", f"only ARG may come before FROM: {instruction}"
            key, _, default = instruction.value.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(args, stages)
