"""shared.device: MINDSIGHT_DEVICE -> torch device / ONNX providers, and the thread setting."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import onnxruntime
import pytest
import torch

from shared.device import auto_threads, available_cores, onnx_providers, resolve_device, set_threads
from shared.errors import ConfigError
from shared.settings import Settings


def test_cpu_is_always_cpu() -> None:
    assert resolve_device("cpu") == "cpu"
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]


def test_auto_follows_what_the_runtime_sees() -> None:
    assert resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    assert onnx_providers("auto") == (["CUDAExecutionProvider"] if cuda else []) + ["CPUExecutionProvider"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has CUDA")
def test_cuda_without_cuda_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="MINDSIGHT_DEVICE=cuda.*no CUDA device.*MINDSIGHT_DEVICE=auto"):
        resolve_device("cuda")


@pytest.mark.skipif(
    "CUDAExecutionProvider" in onnxruntime.get_available_providers(), reason="onnxruntime has CUDA here"
)
def test_onnx_cuda_without_provider_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="onnxruntime-gpu"):
        onnx_providers("cuda")


def test_unknown_preference_is_refused() -> None:
    with pytest.raises(ConfigError, match="auto, cpu or cuda"):
        resolve_device("gpu")  # type: ignore[arg-type]


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("restore_threads")
def test_set_threads() -> None:
    set_threads(1)
    assert torch.get_num_threads() == 1
    set_threads(2)
    assert torch.get_num_threads() == 2
    with pytest.raises(ConfigError, match="at least 1"):
        set_threads(0)


def test_module_imports_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None; import shared.device as d; print(d.resolve_device('auto'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "cpu"


def test_available_cores_are_the_affinity_capped_by_the_cgroup_quota(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    assert available_cores(tmp_path / "missing") == affinity  # no cgroup v2: the affinity
    cpu_max.write_text("max 100000\n")
    assert available_cores(cpu_max) == affinity  # no quota
    cpu_max.write_text("150000 100000\n")  # compose `cpus: 1.5`
    assert available_cores(cpu_max) == min(affinity, 2)
    cpu_max.write_text("10000 100000\n")  # a tenth of a core still runs one thread
    assert available_cores(cpu_max) == 1
    cpu_max.write_text("garbage\n")
    assert available_cores(cpu_max) == affinity


def test_auto_threads_share_the_cores_among_replicas(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(f"{400000 * len(os.sched_getaffinity(0))} 100000\n")  # a quota above the affinity
    cores = available_cores(cpu_max)
    assert auto_threads(1, cpu_max) == cores
    assert auto_threads(2, cpu_max) == max(1, cores // 2)
    assert auto_threads(10 * cores, cpu_max) == 1
    assert make_settings(MINDSIGHT_THREADS="auto").worker.threads == available_cores()
    shared = make_settings(MINDSIGHT_THREADS="AUTO", MINDSIGHT_REPLICAS="2").worker
    assert (shared.replicas, shared.threads) == (2, auto_threads(2))
    assert make_settings(MINDSIGHT_THREADS="3").worker.threads == 3
    for bad in ("lots", "0", "-1"):
        with pytest.raises(ConfigError, match="MINDSIGHT_THREADS"):
            make_settings(MINDSIGHT_THREADS=bad)
    with pytest.raises(ConfigError, match="MINDSIGHT_REPLICAS"):
        make_settings(MINDSIGHT_REPLICAS="0")
