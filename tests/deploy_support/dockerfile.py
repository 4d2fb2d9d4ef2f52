"""Read a Dockerfile into stages and a .dockerignore into Docker's matcher, for static checks."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    """One instruction: keyword upper-cased, leading --flags split off, the rest as written."""

    keyword: str
    value: str
    flags: dict[str, str] = field(default_factory=dict)
    line: int = 0

    def exec_form(self) -> list[str] | None:
        """The JSON-array (exec) form's list, or None for the shell form."""
        if self.value.startswith("["):
            parsed = json.loads(self.value)
            if not isinstance(parsed, list) or not all(isinstance(p, str) for p in parsed):
                raise ValueError(f"line {self.line}: malformed exec form {self.value!r}")
            return parsed
        return None


@dataclass
class Stage:
    """A FROM ... AS name block."""

    name: str
    base: str
    instructions: list[Instruction]

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


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Instructions joined across `\\` continuations, with comment lines dropped (Docker's rules)."""
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        out.append((start, " ".join(p for p in buf if p)))
        buf = []
    if buf:
        raise ValueError("Dockerfile ends inside a line continuation")
    return out


def parse(text: str) -> Dockerfile:
    """Parse Dockerfile text into global ARGs and stages."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for n, line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags: dict[str, str] = {}
        rest = rest.strip()
        while rest.startswith("--"):
            token, _, rest = rest.partition(" ")
            key, _, value = token[2:].partition("=")
            flags[key] = value
            rest = rest.strip()
        instr = Instruction(keyword, rest, flags, n)
        if keyword == "FROM":
            parts = rest.split()
            if len(parts) != 3 or parts[1].upper() != "AS":
                raise ValueError(f"line {n}: every stage must be named: FROM image AS name")
            stages.append(Stage(parts[2], parts[0], []))
        elif not stages:
            if keyword != "ARG":
                raise ValueError(f"line {n}: only ARG may come before the first FROM")
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append(instr)
    return Dockerfile(args, stages)


def copy_sources(instr: Instruction) -> list[str]:
    """The source paths of a COPY/ADD (everything but the destination)."""
    parts = instr.exec_form() or shlex.split(instr.value)
    if len(parts) < 2:
        raise ValueError(f"line {instr.line}: COPY needs a source and a destination")
    return parts[:-1]


class DockerIgnore:
    """Docker's .dockerignore matching: patterns in order, `!` re-includes, a match on a parent counts."""

    def __init__(self, text: str) -> None:
        self.patterns: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = line[1:].strip() if negate else line
            pattern = pattern.strip("/")
            self.patterns.append((negate, re.compile(_glob_to_regex(pattern))))

    def excluded(self, relpath: str) -> bool:
        """True when the build context leaves `relpath` (posix, relative to the context) out."""
        parts = relpath.strip("/").split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        matched = False
        for negate, rx in self.patterns:
            if negate != matched:
                continue
            if any(rx.fullmatch(c) for c in candidates):
                matched = not negate
        return matched


def _glob_to_regex(pattern: str) -> str:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return out


def read(path: Path) -> Dockerfile:
    """Parse the Dockerfile at `path`."""
    return parse(path.read_text(encoding="utf-8"))
