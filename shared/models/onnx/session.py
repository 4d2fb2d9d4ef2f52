"""The one onnxruntime session factory: every ONNX model of the product (CLIP towers, face detectors and
recognisers) is opened here, so threads, graph optimisation and error translation are decided once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.errors import ConfigError

EXTERNAL_WEIGHTS = True
"""Our exports keep their weights in a `<graph>.onnx.data` file next to the graph. onnxruntime maps such a
file instead of reading the protobuf and then copying every initialiser out of it: the ViT-L/14 int8 text
tower's load peak went from 442 MB to 149 MB, and the mapped weights sit in the page cache, shared by every
process on the box that maps them (text worker, embed API, photo worker). A graph with its weights inside
(an export made before) still loads, as before."""

INT8_PREPACKING = False
"""Pre-packing makes a second, kernel-shaped copy of every weight at load. For our int8 graphs
(MatMulIntegerToFloat) it bought nothing and cost memory: ViT-L/14's int8 image tower ran batch 2 in
1511/1539/1344 ms with it and 1519/1530/1345 ms without, interleaved, while its process peaked at 674 MB
with it and 551 MB without (after a batch of 8). fp32 graphs keep it: their GEMMs use the packed copy."""


def open_session(
    model: bytes | Path,
    providers: Sequence[str],
    threads: int = 0,
    fix: str = "",
    *,
    int8: bool = False,
    prepack: bool | None = None,
) -> Any:
    """An onnxruntime InferenceSession of `model` on `providers`, with `threads` intra-op threads (0:
    onnxruntime's default, one per core). One inter-op thread: our graphs are sequential, and parallelism
    across photos comes from batching and processes. A file onnxruntime cannot load is a ConfigError
    naming it, followed by `fix` (what the operator should do). `int8`: a dynamically quantised graph,
    whose weights are not pre-packed (INT8_PREPACKING). `prepack` decides it explicitly: the BLIP
    decoder's one-token steps are matrix-vector products, 3x faster from packed int8 weights."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not (prepack if prepack is not None else not int8 or INT8_PREPACKING):
        options.add_session_config_entry("session.disable_prepacking", "1")
    if threads > 0:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initialisers in exported graphs are noise
    try:
        source = model if isinstance(model, bytes) else str(model)
        return ort.InferenceSession(source, sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own untyped errors for corrupt files
        where = "in-memory model" if isinstance(model, bytes) else str(model)
        raise ConfigError(f"cannot load ONNX model {where}: {exc}{'; ' + fix if fix else ''}") from exc
