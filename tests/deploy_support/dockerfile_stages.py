"""Stages of a Dockerfile as BuildKit's own parser reads it (the `dockerfile` package wraps the Go parser).

Only the stage bookkeeping lives here (which stage builds FROM which, the instruction in force); line
continuations, comments, JSON forms and flags are the real parser's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import dockerfile


@dataclass(frozen=True)
class Instruction:
    """One parsed instruction: keyword, its --flags, its arguments, and whether it used the exec form."""

    keyword: str
    args: tuple[str, ...]
    flags: dict[str, str]
    json: bool
    line: int

    @property
    def value(self) -> str:
        return " ".join(self.args)

    def exec_form(self) -> list[str] | None:
        """The JSON-array (exec) form's list, or None for the shell form."""
        return list(self.args) if self.json else None


@dataclass
class Stage:
    """A FROM ... AS name block."""

    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    """Global ARG defaults and the stages, in order."""

    args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage {name!r}; stages: {[s.name for s in self.stages]}")

    def lineage(self, name: str) -> list[Stage]:
        """The stage and the stages it is built FROM, nearest first."""
        chain = [self.stage(name)]
        names = {s.name for s in self.stages}
        while chain[-1].base in names:
            chain.append(self.stage(chain[-1].base))
        return chain

    def effective(self, name: str, keyword: str) -> Instruction | None:
        """The instruction in force for a stage (USER, HEALTHCHECK, ENTRYPOINT...), inherited included."""
        for stage in self.lineage(name):
            found = stage.all(keyword)
            if found:
                return found[-1]
        return None

    def external_base(self, name: str) -> str:
        """The image a stage finally builds on, with global ARG defaults substituted."""
        return self.substitute(self.lineage(name)[-1].base)

    def substitute(self, text: str) -> str:
        return re.sub(
            r"\$\{(\w+)\}|\$(\w+)", lambda m: self.args.get(m.group(1) or m.group(2), m.group(0)), text
        )


def read(path: Path) -> Dockerfile:
    """Parse the Dockerfile at `path` with BuildKit's parser; every stage must be named."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for cmd in dockerfile.parse_file(str(path)):
        flags = dict(f.removeprefix("--").partition("=")[::2] for f in cmd.flags)
        instr = Instruction(cmd.cmd.upper(), tuple(cmd.value), flags, cmd.json, cmd.start_line)
        if instr.keyword == "FROM":
            if len(instr.args) != 3 or instr.args[1].upper() != "AS":
                raise ValueError(f"line {instr.line}: every stage must be named: FROM image AS name")
            stages.append(Stage(instr.args[2], instr.args[0]))
        elif not stages:
            name, _, default = instr.value.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append(instr)
    return Dockerfile(args, stages)
