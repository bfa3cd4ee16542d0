"""Collation of ragged features and token lists into padded batches.

The NumPy functions here are the CPU path and the reference each GPU kernel in ``kernels/``
is checked against: one pass over the samples, padding written explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

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
