"""One measurement of approach `bare` (benchmarks.bare_loop): the same work as ours, no pipeline around it.

Like ours it gets fresh processes, a warm-up on other photos, a burst, single photos and peak RSS, so its
row sits in the same tables. The burst: every process is ready (models loaded, warmed up), the harness
sends each its share of the burst's files (every n-th: the photos are alike) at once, the go, and times
from then until the last process has finished its last batch. The share is static: a process slowed by
other work on the machine gets no help from the others (ours' workers pull from one queue); `finished_s`
in the run's runtime says how far apart they ended (at most 0.6 s of 3-13 s on the 2-core box so far,
so it is not why noisy rounds can put `bare` behind ours: that is other work landing unevenly).

Single photos go one at a time through process 0 on an otherwise idle set of processes: decode + inference
of one photo at batch 1, plus a loopback round trip (`other`). That is the floor ours cannot go below;
ours' single-photo latency minus it is what the router, RQ and the callback add to a lone photo.
"""

from __future__ import annotations

import os
import time
from multiprocessing.connection import Client, Connection
from typing import Any

from benchmarks.approaches import Approach
from benchmarks.cpu_noise import foreign_share, snapshot, wait_for_quiet
from benchmarks.pipeline_bench import (
    QUIET_TIMEOUT_S,
    STARTUP_TIMEOUT_S,
    PhotoSet,
    PipelineBench,
    PipelineRun,
)
from benchmarks.processes import ProcessGroup, new_port, peak_rss_mb
from benchmarks.time_split import median_split


def measure_bare(
    bench: PipelineBench,
    approach: Approach,
    size: str,
    burst: PhotoSet,
    warmup: PhotoSet,
    singles: PhotoSet,
    *,
    env: dict[str, str] | None = None,
) -> PipelineRun:
    """Start `approach.workers` bare loops, time the burst and the single photos, read RSS, stop them."""
    tag = f"{approach.key}-{size}-{int(time.time() * 1000) % 10**8}"
    group = ProcessGroup(bench.workdir / tag, bench.base_env)
    settings = {**approach.env, **(env or {})}
    warm = [path for _, path in warmup[: bench.warmup_count(approach, env)]]
    key = os.urandom(16)
    conns: list[Connection] = []
    try:
        for i in range(approach.workers):
            port = new_port()
            argv = ["-m", "benchmarks.bare_loop", "--port", str(port), "--authkey", key.hex(),
                    "--warm", *warm[i :: approach.workers]]  # fmt: skip
            group.start(f"bare-{i}", argv, settings)
            conns.append(_connect(port, key, group))
        described = [_recv(conn, group) for conn in conns]
        if bench.quiet_share is not None:
            wait_for_quiet(bench.quiet_share, QUIET_TIMEOUT_S)
        paths = [path for _, path in burst]
        cpu_start = snapshot([*bench.own_pids, *(p.pid for p in group.procs)])
        start = time.time()
        for i, conn in enumerate(conns):
            conn.send(("run", paths[i :: len(conns)]))
        answers = [_recv(conn, group, STARTUP_TIMEOUT_S + 10 * len(paths)) for conn in conns]
        noise = foreign_share(cpu_start, snapshot(cpu_start.ours))
        ends = [(n, end) for answer in answers for n, end in answer["batches"]]
        seconds = max(end for _, end in ends) - start
        # a static share cannot rebalance: how far apart the processes finished shows what that cost
        finished = [round(answer["batches"][-1][1] - start, 2) for answer in answers if answer["batches"]]
        split = {
            stage: round(1000 * sum(a[stage] for a in answers) / len(paths), 1)
            for stage in ("decode", "inference")
        }
        timed = [_single(conns[0], group, path) for _, path in singles]
        rss = {p.name: round(peak_rss_mb(p.pid), 1) for p in group.procs}
    finally:
        for conn in conns:
            conn.close()
        group.stop()
    info: dict[str, Any] = next(iter(described[0].values()), {})
    threads = settings.get("MINDSIGHT_THREADS", "default")
    return PipelineRun(
        approach=approach.key, title=approach.title, size=size, photos=len(paths),
        seconds=round(seconds, 3), photos_per_s=round(len(paths) / seconds, 3),
        mean_photo_latency_ms=round(1000 * sum(n * (end - start) for n, end in ends) / len(paths), 1),
        split_ms=split, single_latency_ms=[round(ms, 1) for ms, _ in timed],
        single_split_ms=median_split([parts for _, parts in timed]), peak_rss_mb=rss,
        runtime={**info, "workers": approach.workers, "threads": threads, "finished_s": finished},
        foreign_cpu_share=noise,
    )  # fmt: skip


def _connect(port: int, key: bytes, group: ProcessGroup) -> Connection:
    """Connect to a bare loop once it listens (it listens only when ready); fail early if it dies."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            return Client(("127.0.0.1", port), authkey=key)
        except ConnectionRefusedError:
            group.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"bare loop on port {port} not ready in time") from None
            time.sleep(0.2)


def _recv(conn: Connection, group: ProcessGroup, timeout: float = 60.0) -> Any:
    """The next answer of a bare loop; ProcessFailed (with its log) if it died, TimeoutError if it hangs."""
    deadline = time.monotonic() + timeout
    while not conn.poll(1.0):
        group.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer from a bare loop in {timeout:.0f}s")
    try:
        return conn.recv()
    except EOFError:
        time.sleep(1.0)  # the loop closed the connection by dying: let its exit status show
        group.check_alive()
        raise


def _single(conn: Connection, group: ProcessGroup, path: str) -> tuple[float, dict[str, float]]:
    """One photo through an idle bare loop: milliseconds until its answer, and where they went."""
    start = time.perf_counter()
    conn.send(("run", [path]))
    answer = _recv(conn, group)
    total = 1000 * (time.perf_counter() - start)
    parts = {stage: 1000 * answer[stage] for stage in ("decode", "inference")}
    parts["other"] = total - sum(parts.values())
    return total, parts
