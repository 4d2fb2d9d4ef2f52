"""One process of approach `bare`: our CLIP worker's decode + inference in a plain loop, nothing around it.

No Redis, no RQ, no router, no callbacks: what is left when the pipeline is taken away, so that
`1 - ours / bare` (photos/s) is the pipeline's overhead. The CLIP task is built by the function
`mindsight worker clip` builds it with (workers.bootstrap.load_tasks: same models, runtime, precision and
threads from the same settings) and photos are decoded by the worker's PhotoDecoder at the min side the
task asks for, in batches of MINDSIGHT_BATCH_SIZE, as a worker gets them from the router.

The process loads, warms up on the --warm photos, then listens on --port: the harness's connection
(benchmarks.bare_bench) is its "ready", and it sends the task's description first. Then, per message
(multiprocessing.connection, pickled): `("run", [paths])` -> decode and embed them, answering with the
wall-clock end of each batch and the seconds spent decoding and in inference. The connection's end ends it.
Run: `python -m benchmarks.bare_loop --port P --authkey HEX [--warm PATH ...]`.
"""

from __future__ import annotations

import argparse
import logging
import time
from multiprocessing.connection import Listener
from typing import Any

from shared.payloads import Capability
from shared.settings import load_settings
from workers.bootstrap import load_tasks, photo_decoder
from workers.photo_decoder import PhotoDecoder
from workers.tasks.base import PhotoTask

log = logging.getLogger("benchmarks.bare_loop")


def run_paths(task: PhotoTask, decoder: PhotoDecoder, paths: list[str], batch: int) -> dict[str, Any]:
    """Decode and embed `paths` in batches; when each batch ended (wall clock) and where the time went."""
    decode = inference = 0.0
    batches: list[tuple[int, float]] = []
    for i in range(0, len(paths), batch):
        start = time.perf_counter()
        photos = decoder.load_all(paths[i : i + batch], task.min_side)
        images = [p.image for p in photos if not isinstance(p, Exception)]
        decoded = time.perf_counter()
        task.compute(images)
        done = time.perf_counter()
        decode, inference = decode + decoded - start, inference + done - decoded
        batches.append((len(images), time.time()))
    return {"batches": batches, "decode": decode, "inference": inference}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bare_loop", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="loopback port to listen on once ready")
    parser.add_argument("--authkey", required=True, help="hex key the harness connects with")
    parser.add_argument("--warm", nargs="*", default=[], help="photos to run once before saying ready")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings(env_file=None)
    tasks, _ = load_tasks(settings, [Capability.CLIP])
    task = tasks[Capability.CLIP]
    decoder = photo_decoder(settings, [Capability.CLIP])  # exactly the worker's
    batch = settings.worker.batch_size
    run_paths(task, decoder, args.warm, batch)
    log.info("ready: batch %d, %s", batch, task.describe())
    listener = Listener(("127.0.0.1", args.port), authkey=bytes.fromhex(args.authkey))
    with listener, listener.accept() as conn:
        conn.send(task.describe())
        while True:
            try:
                command, paths = conn.recv()
            except EOFError:
                return
            if command != "run":
                raise ValueError(f"unknown command {command!r}")
            conn.send(run_paths(task, decoder, paths, batch))


if __name__ == "__main__":
    main()
