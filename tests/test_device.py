"""shared.device: MINDSIGHT_DEVICE -> torch device / ONNX providers, and the thread setting."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import onnxruntime
import pytest
import torch

from shared.device import onnx_providers, resolve_device, set_threads
from shared.errors import ConfigError


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
