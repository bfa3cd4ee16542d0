"""Collation of ragged features and token lists into padded batches.

The NumPy functions here are the CPU path and the reference each GPU kernel in ``kernels/``
is checked against: one pass over the samples, padding written explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from dali_asr.batch import Seq2SeqBatch
from dali_asr.report import ExampleKey

if TYPE_CHECKING:
    from dali_asr.storage.discovery import DataFile
    from dali_asr.storage.examples import Example

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def padded_width(lengths: Sequence[int], pad_to_multiple: int = 1) -> int:
    width = max(lengths, default=0)
    return -(-width // pad_to_multiple) * pad_to_multiple


def collate_audio(samples: Sequence[np.ndarray], pad_to_multiple: int = 1) -> np.ndarray:
    """Stack [T] or [T, F] float arrays into [B, T_max(, F)], zero-padded at the end."""
    lengths = [len(s) for s in samples]
    width = padded_width(lengths, pad_to_multiple)
    tail = samples[0].shape[1:] if samples else ()
    out = np.empty((len(samples), width, *tail), dtype=np.float32)
    for i, (s, n) in enumerate(zip(samples, lengths, strict=True)):
        out[i, :n] = s
        out[i, n:] = 0
    return out


def collate_targets(tokens: Sequence[np.ndarray], pad_idx: int) -> np.ndarray:
    """Token id lists → int64 [B, L_max] padded with ``pad_idx``."""
    width = max((len(t) for t in tokens), default=0)
    out = np.full((len(tokens), width), pad_idx, dtype=np.int64)
    for i, t in enumerate(tokens):
        out[i, : len(t)] = t
    return out


def padding_mask(lengths: np.ndarray, width: int) -> np.ndarray:
    """Bool [B, width], True where a position is padding."""
    return np.arange(width)[None, :] >= lengths[:, None]


def to_torch_audio(array: np.ndarray, dtype: str) -> torch.Tensor:
    tensor = torch.from_numpy(array)
    return tensor if dtype == "float32" else tensor.to(TORCH_DTYPES[dtype])


class BatchMaker:
    """Turns a planned batch and its features into a ``Seq2SeqBatch``: the NumPy path on the
    CPU, tensors DALI already padded (taken by DLPack) on the GPU."""

    def __init__(
        self, files: Sequence[DataFile], pad_idx: int, dtype: str, pad_to_multiple: int = 1
    ) -> None:
        self.files = files
        self.pad_idx = pad_idx
        self.dtype = dtype
        self.pad_to_multiple = pad_to_multiple

    def key(self, ex: Example) -> ExampleKey:
        return ExampleKey(self.files[ex.file_index].rel, ex.row_group, ex.row)

    def from_arrays(self, examples: list[Example], features: list[np.ndarray]) -> Seq2SeqBatch:
        lengths = np.array([len(f) for f in features], dtype=np.int64)
        source = collate_audio(features, self.pad_to_multiple)
        return self._batch(
            examples,
            to_torch_audio(source, self.dtype),
            torch.from_numpy(lengths),
            torch.from_numpy(padding_mask(lengths, source.shape[1])),
        )

    def from_dense(
        self, examples: list[Example], source: torch.Tensor, lengths: np.ndarray
    ) -> Seq2SeqBatch:
        """``source`` is DALI's padded output as a torch tensor (already on the GPU)."""
        dtype = TORCH_DTYPES[self.dtype]
        if source.dtype != dtype:
            source = source.to(dtype)
        lens = torch.from_numpy(lengths.astype(np.int64)).to(source.device)
        mask = torch.arange(source.shape[1], device=source.device)[None, :] >= lens[:, None]
        return self._batch(examples, source, lens, mask)

    def _batch(
        self,
        examples: list[Example],
        source: torch.Tensor,
        lengths: torch.Tensor,
        mask: torch.Tensor,
    ) -> Seq2SeqBatch:
        tokens = [ex.tokens for ex in examples]
        targets = torch.from_numpy(collate_targets(tokens, self.pad_idx))
        files = [self.files[ex.file_index] for ex in examples]
        return Seq2SeqBatch(
            source_seqs=source,
            source_seq_lens=lengths,
            source_padding_mask=mask,
            target_seqs=targets.to(source.device),
            target_seq_lens=torch.tensor([len(t) for t in tokens]).to(source.device),
            keys=[self.key(ex) for ex in examples],
            language=[f.language for f in files],
            corpus=[f.corpus for f in files],
            split=[f.split for f in files],
            text=[ex.text for ex in examples],
            audio_size=[ex.audio_size for ex in examples],
        )
