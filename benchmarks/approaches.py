"""The approaches compared, named on the command line: `1`, `2`, `3`, `3-int8`, `3-1p`, `bare-2t`, ...

`1` and `2` are the baselines (benchmarks.baselines). `3` is ours with default settings and the README's
process layout (one `mindsight worker clip` process per core); suffixes change one thing each:
`int8` (ONNX Runtime, int8 weights; also the CPU default once an int8 export exists), `onnx` / `torch`
(runtime forced, fp32), `<N>p` (worker processes),
`<N>t` (MINDSIGHT_THREADS per process).
`bare` is the same decode + inference code as `3` in a plain loop, one process per core, without Redis,
RQ, the router or callbacks (benchmarks.bare_loop); it takes the same suffixes with the same meaning, and
`1 - ours/bare` photos/s is the pipeline's overhead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["hf-torch", "ort-fp32", "ours", "bare"]

INT8_ENV = {"MINDSIGHT_CLIP_RUNTIME": "onnx", "MINDSIGHT_CLIP_PRECISION": "int8"}
"""Settings that select ONNX Runtime with the int8 export."""

RUNTIME_ENV = {
    "int8": INT8_ENV,
    "onnx": {"MINDSIGHT_CLIP_RUNTIME": "onnx", "MINDSIGHT_CLIP_PRECISION": "fp32"},  # auto would be int8
    "torch": {"MINDSIGHT_CLIP_RUNTIME": "torch"},
}

DEFAULT_APPROACHES = ("1", "2", "3", "3-int8", "bare")

BASELINE_TITLES = {
    "1": "legacy runner: CLIPProcessor + CLIPModel, torch fp32, 1 photo at a time, full decode",
    "2": "Immich-style: full PIL decode + resize, ONNX Runtime fp32, batch 1 per request",
}


class UnknownApproach(ValueError):
    """An approach name the harness does not know."""


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Approach:
    """One way of turning queued photos into callbacks."""

    key: str
    kind: Kind
    title: str
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)

    @property
    def is_ours(self) -> bool:
        return self.kind == "ours"

    @property
    def runs_our_code(self) -> bool:
        """Ours or `bare`: takes our settings (suffixes, --set) and runs our decode + inference code."""
        return self.kind in ("ours", "bare")


def parse_approach(key: str) -> Approach:
    """The approach named `key`; UnknownApproach with the accepted forms otherwise."""
    key = key.strip()
    if key == "1":
        return Approach("1", "hf-torch", BASELINE_TITLES["1"])
    if key == "2":
        return Approach("2", "ort-fp32", BASELINE_TITLES["2"])
    head, *mods = key.split("-")
    if head not in ("3", "bare"):
        raise UnknownApproach(
            f"unknown approach {key!r}: use 1, 2, 3 or bare, the last two with -int8/-onnx/-torch/-<N>p/-<N>t"
        )
    env: dict[str, str] = {}
    workers = cores()
    parts = ["ours"]
    for mod in mods:
        if mod in RUNTIME_ENV:
            env.update(RUNTIME_ENV[mod])
            parts.append(mod)
        elif mod[:-1].isdigit() and mod[-1] in "pt" and int(mod[:-1]) > 0:
            if mod[-1] == "p":
                workers = int(mod[:-1])
            else:
                env["MINDSIGHT_THREADS"] = mod[:-1]
        else:
            raise UnknownApproach(f"unknown modifier {mod!r} in approach {key!r}")
    if not any(m in RUNTIME_ENV for m in mods):
        parts.append("default settings")
    threads = env.get("MINDSIGHT_THREADS", "default")
    if head == "bare":
        parts[0] = "bare loop (our decode + inference)"
        layout = f"{workers} process(es) x {threads} thread(s), no Redis/RQ/router/callbacks"
        return Approach(key, "bare", f"{', '.join(parts)}: {layout}", workers, env)
    title = f"{', '.join(parts)}: {workers} worker process(es) x {threads} thread(s), router + RQ"
    return Approach(key, "ours", title, workers, env)
