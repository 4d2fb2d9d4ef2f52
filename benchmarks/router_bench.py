"""`python -m benchmarks.router_bench` (`make bench-router`): how fast the router turns payloads into jobs.

No workers and no models: a private Redis, N backend-shaped photo payloads (`["thumbnail", "clip",
"face"]`) staged under a side key, then one router process (and then two, separate processes) started
and left idle until they block on the backend list; the clock starts when the staged list is RENAMEd onto
the backend list (which wakes the blocked routers) and stops when the backend list and every router's
processing list are empty, that is when every payload's jobs exist (a payload leaves a processing list
only in the MULTI/EXEC that creates its jobs). Afterwards the jobs are read back and must hold every
payload once per capability. Prints a markdown table and writes <out>/results-router-<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from benchmarks.machine import describe_machine, load_average, machine_line
from shared.embedded_redis import EmbeddedRedis

SOURCE = "photo_tasks"
STAGED = "bench:router:staged"
TASKS = ["thumbnail", "clip", "face"]
CAPABILITIES = ("clip", "caption", "face")
"""What the router makes of TASKS with the default settings (captions on: `clip` implies a caption)."""


def log(message: str) -> None:
    print(f"[bench-router {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def payload(pid: int) -> str:
    return json.dumps(
        {"photo_id": pid, "user_id": 1 + pid % 7, "path": f"./uploads/original/{pid}.jpg", "tasks": TASKS}
    )


def router_env(url: str, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "REDIS_URL": url,
            "REDIS_QUEUE_NAME": SOURCE,
            "MINDSIGHT_LOG_LEVEL": "WARNING",
            "PROCESSING_INTERNAL_TOKEN": "bench-router",
            "MINDSIGHT_OFFLINE": "1",
        }
    )
    env.update(extra)
    return env


def serve(consumer_id: str) -> None:
    """Child process: one router (the class `mindsight router` runs) until SIGTERM."""
    from shared.settings import load_settings
    from workers.router import Router

    settings = load_settings(None)
    connection = redis.Redis.from_url(settings.redis.url)
    the_router = Router(connection, settings, consumer_id=consumer_id)
    signal.signal(signal.SIGTERM, lambda *_: the_router.stop())
    profile = os.environ.get("BENCH_ROUTER_PROFILE")
    if profile:
        import cProfile

        cProfile.runctx("the_router.run()", globals(), locals(), f"{profile}.{consumer_id}")
    else:
        the_router.run()


def _processing_keys(consumers: list[str]) -> list[str]:
    from shared.queues import processing_list

    return [processing_list(SOURCE, cid) for cid in consumers]


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _redis_cpu_s(conn: redis.Redis) -> float:
    info = conn.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _blocked_clients(conn: redis.Redis) -> int:
    return int(conn.info("clients")["blocked_clients"])


def measure(url: str, photos: int, routers: int, env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """One run: `routers` router processes, `photos` payloads; photos/s until all are jobs."""
    from shared.lanes import lanes_for
    from shared.payloads import Capability
    from workers.dispatch import rq_queue

    conn = redis.Redis.from_url(url)
    conn.flushdb()
    with conn.pipeline(transaction=False) as pipe:
        for start in range(0, photos, 1000):
            pipe.lpush(STAGED, *[payload(i + 1) for i in range(start, min(photos, start + 1000))])
        pipe.execute()
    consumers = [f"bench-router-{routers}-{i}" for i in range(routers)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.router_bench", "--serve", cid], env=router_env(url, env)
        )
        for cid in consumers
    ]
    try:
        baseline = _blocked_clients(conn)
        deadline = time.monotonic() + 60
        # Each router has three consume threads (photo, bulk, text), all blocked once it is idle.
        while _blocked_clients(conn) < baseline + 3 * routers:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("routers did not start")
            time.sleep(0.05)
        load = load_average()
        keys = _processing_keys(consumers)
        cpu_before = [_cpu_s(p.pid) for p in procs]
        redis_before = _redis_cpu_s(conn)
        started = time.perf_counter()
        conn.rename(STAGED, SOURCE)
        while True:
            with conn.pipeline(transaction=False) as pipe:
                pipe.llen(SOURCE)
                for key in keys:
                    pipe.llen(key)
                if not any(pipe.execute()):
                    break
            if time.perf_counter() - started > timeout_s:
                raise RuntimeError(f"not done after {timeout_s:.0f}s")
            time.sleep(0.002)
        elapsed = time.perf_counter() - started
        router_cpu = sum(_cpu_s(p.pid) - b for p, b in zip(procs, cpu_before, strict=True))
        redis_cpu = _redis_cpu_s(conn) - redis_before
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    counts: Counter[str] = Counter()
    jobs = 0
    for cap in Capability:  # every queue, so a job where none was expected shows too
        for lane in lanes_for(cap):
            for job in rq_queue(conn, cap, lane).get_jobs():
                jobs += 1
                for item in job.args[0]["payloads"]:
                    counts[f"{cap.value}:{item['photo_id']}"] += 1
    expected = {f"{cap}:{pid}" for cap in CAPABILITIES for pid in range(1, photos + 1)}
    complete = counts.keys() == expected and set(counts.values()) == {1}
    return {
        "routers": routers,
        "photos": photos,
        "seconds": round(elapsed, 4),
        "photos_per_s": round(photos / elapsed, 1),
        "jobs": jobs,
        "complete": complete,
        "router_cpu_ms_per_1000": round(1e6 * router_cpu / photos, 1),
        "redis_cpu_ms_per_1000": round(1e6 * redis_cpu / photos, 1),
        "load_average_before": load,
        "load_average_after": load_average(),
    }


def run(
    photos: int, router_counts: list[int], repeat: int, env: dict[str, str], out: Path, timeout_s: float
) -> dict[str, Any]:
    machine = describe_machine()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    server = EmbeddedRedis(out / f"router-redis-{stamp}", persist=False).start()
    runs: list[dict[str, Any]] = []
    try:
        for attempt in range(repeat):
            for n in router_counts:
                result = measure(server.url, photos, n, env, timeout_s)
                log(f"round {attempt + 1}: {n} router(s): {result}")
                if not result["complete"]:
                    raise RuntimeError(f"jobs do not hold every payload exactly once: {result}")
                runs.append(result)
    finally:
        server.stop()
    best = {n: max(r["photos_per_s"] for r in runs if r["routers"] == n) for n in router_counts}
    lines = [
        f"Router rate: {photos} photo payloads {TASKS}, no workers; {machine_line(machine)}",
        "",
        "| routers | photos/s (best) | runs: photos/s (load 1m before) | CPU ms per 1,000 photos: "
        "routers / redis-server (median) |",
        "|---|---|---|---|",
    ]
    for n in router_counts:
        mine = [r for r in runs if r["routers"] == n]
        rates = ", ".join(f"{r['photos_per_s']:.0f} ({r['load_average_before'][0]})" for r in mine)
        cpu = statistics.median(r["router_cpu_ms_per_1000"] for r in mine)
        rcpu = statistics.median(r["redis_cpu_ms_per_1000"] for r in mine)
        lines.append(f"| {n} | {best[n]:.0f} | {rates} | {cpu:.0f} / {rcpu:.0f} |")
    if 1 in best and 2 in best:
        lines += ["", f"two routers / one: {best[2] / best[1]:.2f}x"]
    results = {
        "machine": machine,
        "runs": runs,
        "best": best,
        "ratio_2_to_1": round(best[2] / best[1], 3) if 1 in best and 2 in best else None,
        "settings": env,
        "markdown": "\n".join(lines),
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"results-router-{stamp}.json"
    path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(results["markdown"])
    log(f"results written to {path}")
    return results


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.router_bench", description=__doc__)
    p.add_argument("--photos", type=int, default=20000, help="payloads per run (default 20000)")
    p.add_argument("--routers", default="1,2", help="router process counts to measure (default 1,2)")
    p.add_argument("--repeat", type=int, default=3, help="runs per count, interleaved (default 3)")
    p.add_argument("--timeout", type=float, default=600, help="give up a run after this many seconds")
    p.add_argument("--out", type=Path, default=Path("var/bench"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="router setting")
    p.add_argument("--serve", metavar="CONSUMER_ID", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.serve:
        serve(a.serve)
        return None
    env = dict(kv.split("=", 1) for kv in a.set)
    counts = [int(x) for x in a.routers.split(",")]
    return run(a.photos, counts, a.repeat, env, a.out, a.timeout)


if __name__ == "__main__":
    main()
