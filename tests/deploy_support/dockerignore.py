"""Docker's .dockerignore matching, so tests can tell which files reach the build context.

No engine runs in the tests, and no PyPI package implements Docker's matcher (patterns in order, `!`
re-includes, a match on a parent folder counts), so this small one stays.
"""

from __future__ import annotations

import re


class DockerIgnore:
    """The patterns of one .dockerignore file."""

    def __init__(self, text: str) -> None:
        self.patterns: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = (line[1:].strip() if negate else line).strip("/")
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
