"""CLIP tokenization without torch: the HF `tokenizers` library over an export's tokenizer.json.

Both families end up as the same byte-level BPE (CLIP's 49408-token vocabulary); they differ in the text
cleaning applied first. open_clip (like OpenAI's CLIP) runs ftfy and a double HTML unescape before the
BPE; transformers' fast CLIP tokenizer does not. `OnnxTokenizer` applies whichever the source model used,
so the ids equal the source's (`mindsight models export` checks that on a corpus and records it).
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from shared.errors import ConfigError
from shared.models.clip.backbone import TokenBatch
from shared.models.onnx.manifest import EXPORT_FIX, TokenizerSpec

log = logging.getLogger(__name__)

CLIP_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
"""CLIP's pre-tokenisation pattern (OpenAI's, also open_clip's and transformers' converter's)."""


class OnnxTokenizer:
    """Texts -> `TokenBatch` as the exported model's source tokenized them; thread-safe."""

    def __init__(self, folder: Path, spec: TokenizerSpec, context_length: int) -> None:
        from tokenizers import Tokenizer

        path = folder / spec.file
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for missing or corrupt files
            raise ConfigError(f"cannot load tokenizer {path}: {exc}; {EXPORT_FIX} again") from exc
        self._tokenizer.no_truncation()  # truncation below keeps the end-of-text token, as open_clip does
        self._tokenizer.no_padding()
        self.spec = spec
        self.context_length = context_length
        self._clean = open_clip_clean(lower=spec.clean == "open_clip") if spec.clean != "none" else None
        # Rust tokenizers fail with "Already borrowed" when one instance is used from two threads at once.
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> TokenBatch:
        cleaned = [self._clean(t) for t in texts] if self._clean else list(texts)
        with self._lock:
            encodings = self._tokenizer.encode_batch(cleaned)
        ctx, spec = self.context_length, self.spec
        ids = np.full((len(texts), ctx), spec.pad_id, dtype=np.int64)
        counts = np.zeros(len(texts), dtype=np.int64)
        truncated: dict[int, int] = {}
        for row, enc in enumerate(encodings):
            tokens = enc.ids
            if len(tokens) > ctx:
                truncated[row] = len(tokens)
                tokens = tokens[:ctx]
                tokens[-1] = spec.eot_id
            ids[row, : len(tokens)] = tokens
            counts[row] = len(tokens)
        if spec.pool == "masked":  # the graph masks padding itself: every real token is needed
            return TokenBatch(ids=ids, lengths=counts, truncated=truncated)
        # The pooled token, as the graph picks it: the highest id, or the first end-of-text id.
        pooled = ids.argmax(axis=1) if spec.pool == "argmax" else (ids == spec.eot_id).argmax(axis=1)
        return TokenBatch(ids=ids, lengths=pooled.astype(np.int64) + 1, truncated=truncated)


def open_clip_clean(lower: bool = True) -> Callable[[str], str]:
    """open_clip's `lower` clean: ftfy, HTML unescaped twice, whitespace collapsed, lower case (or not:
    its `whitespace` clean, which open_clip's HF tokenizers such as XLM-RoBERTa's use)."""
    try:
        import ftfy

        fix: Callable[[str], str] = ftfy.fix_text
    except ImportError:
        log.warning(
            "ftfy is not installed: texts with mojibake, curly quotes or full-width characters may "
            "tokenize differently from open_clip (pip install ftfy)"
        )

        def fix(text: str) -> str:
            return text

    def clean(text: str) -> str:
        text = " ".join(html.unescape(html.unescape(fix(text))).strip().split())
        return text.lower() if lower else text

    return clean


def clip_bpe_tokenizer_json(
    vocab: dict[str, int], merges: Sequence[tuple[str, str]], sot: str, eot: str
) -> str:
    """A tokenizer.json for CLIP's byte-level BPE (transformers' CLIPConverter recipe) from vocab + merges."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    tokenizer = Tokenizer(
        BPE(
            vocab=vocab,
            merges=list(merges),
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",
            fuse_unk=False,
            unk_token=eot,
        )
    )
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.RobertaProcessing(
        (eot, vocab[eot]), (sot, vocab[sot]), trim_offsets=False, add_prefix_space=False
    )
    from tokenizers import AddedToken

    tokenizer.add_special_tokens([AddedToken(sot, normalized=False), AddedToken(eot, normalized=False)])
    return tokenizer.to_str()
