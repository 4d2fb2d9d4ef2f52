"""MINDSIGHT_LOG_FORMAT=json: every stderr line is one JSON object, even while transformers loads shards."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

LOAD_SHARDED = textwrap.dedent(
    """
    import logging, sys
    from transformers import BertConfig, BertModel
    from shared.logging_setup import configure_logging

    configure_logging("INFO", sys.argv[2])
    model = BertModel.from_pretrained(sys.argv[1])  # several shards: transformers draws a tqdm bar
    logging.getLogger("probe").info("loaded %d parameters", sum(p.numel() for p in model.parameters()))
    """
)


@pytest.fixture(scope="module")
def sharded_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real BERT saved in shards, loaded through the same from_pretrained the captioner uses."""
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=32)  # fmt: skip
    path = tmp_path_factory.mktemp("sharded-bert")
    BertModel(config).save_pretrained(path, max_shard_size="20KB")
    assert len(list(path.glob("*.safetensors"))) > 1
    return path


def load(path: Path, fmt: str) -> list[str]:
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_SHARDED, str(path), fmt],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=repo,
        env={"PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stderr.replace("\r", "\n").splitlines() if line.strip()]


def test_json_logs_carry_no_progress_bars(sharded_model: Path) -> None:
    lines = load(sharded_model, "json")
    records = [json.loads(line) for line in lines]  # a tqdm redraw here fails to parse
    assert any(r["logger"] == "probe" and r["msg"].startswith("loaded") for r in records)


def test_text_logs_keep_them(sharded_model: Path) -> None:
    """The bar is real in this set-up: the text format (a human at a terminal) still shows it."""
    assert any("Loading" in line and "%" in line for line in load(sharded_model, "text"))
