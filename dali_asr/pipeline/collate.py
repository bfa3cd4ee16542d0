"""Collation of ragged features and token lists into padded batches: the CPU path.

Each function here is the NumPy reference of one CUDA kernel in ``kernels/`` (named alike) and
computes exactly what the kernel computes, in the same precision, so the GPU check can compare
them cell for cell. :class:`BatchMaker` runs them on the CPU; ``gpu_collate.GpuBatchMaker``
runs the kernels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dali_asr.batch import Seq2SeqBatch
from dali_asr.keys import ExampleKey
from dali_asr.pipeline.fbank import kaldi_fbank
from dali_asr.storage.examples import Example, example_key

if TYPE_CHECKING:
    from dali_asr.pipeline.augment import Augmenter
    from dali_asr.storage.discovery import DataFile

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# torch.layer_norm's default epsilon, as the reference's layer norm of the waveform
LAYER_NORM_EPS = 1e-5


@dataclass(frozen=True)
class Normalization:
    """(x - mean) / sqrt(var + eps) per utterance and channel; ``ddof`` picks the variance."""

    ddof: int
    eps: float


LAYER_NORM = Normalization(ddof=0, eps=LAYER_NORM_EPS)
# Kaldi fbank standardised per bin with the unbiased std, as the reference's converter
STANDARDIZE = Normalization(ddof=1, eps=0.0)


def padded_width(lengths: Sequence[int], pad_to_multiple: int = 1) -> int:
    width = max(lengths, default=0)
    return -(-width // pad_to_multiple) * pad_to_multiple


def segment_stats(samples: Sequence[np.ndarray]) -> np.ndarray:
    """Reference of ``segment_stats.cu``: float64 [B, F, 3], per utterance and channel the sum
    and sum of squares of the finite values and the count of non-finite ones."""
    channels = samples[0].shape[1] if samples and samples[0].ndim == 2 else 1
    out = np.zeros((len(samples), channels, 3))
    for b, s in enumerate(samples):
        x = np.array(s, np.float64).reshape(len(s), channels)
        # A NaN or an infinity makes its channel's sums non-finite; finite sums are those of
        # the masked values below, to the bit (the same reductions of the same values), for
        # two passes fewer over the audio.
        with np.errstate(invalid="ignore", over="ignore"):  # then masked below
            total = x.sum(axis=0)
            squares = np.multiply(x, x, out=x).sum(axis=0)
        if np.isfinite(total).all() and np.isfinite(squares).all():
            out[b, :, 0], out[b, :, 1] = total, squares
            continue
        x = np.array(s, np.float64).reshape(len(s), channels)
        finite = np.isfinite(x)
        x = np.where(finite, x, 0.0)
        out[b, :, 0] = x.sum(axis=0)
        out[b, :, 1] = (x * x).sum(axis=0)
        out[b, :, 2] = (~finite).sum(axis=0)
    return out


def nonfinite_count(a: np.ndarray) -> int:
    """NaNs and infinities in ``a``. Its sum of squares first: it is finite when every value
    is (a NaN or an infinity carries through it; squares cannot cancel), and BLAS's dot
    product reads ``a`` 2.5x faster than NumPy's sum, without a mask array."""
    flat = a.reshape(-1)
    with np.errstate(invalid="ignore", over="ignore"):  # huge values overflow: counted
        total = np.dot(flat, flat)
    if np.isfinite(total):
        return 0
    return int(a.size - np.count_nonzero(np.isfinite(a)))


def mean_and_scale(
    stats: np.ndarray, lengths: np.ndarray, norm: Normalization
) -> tuple[np.ndarray, np.ndarray]:
    """float32 [B, F] mean and 1/std from ``segment_stats``; a constant channel gets scale 0
    (it comes out as zeros instead of NaN)."""
    n = lengths.astype(np.float64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n > 0, stats[..., 0] / n, 0.0)
        var = np.maximum(np.where(n > 0, stats[..., 1] / n - mean * mean, 0.0), 0.0)
        var = np.where(n > norm.ddof, var * n / (n - norm.ddof), 0.0)
        denominator = var + norm.eps
        scale = np.where(denominator > 0, 1.0 / np.sqrt(denominator), 0.0)
    return mean.astype(np.float32), scale.astype(np.float32)


def to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 bit patterns (uint16), rounding to nearest even; NaN → 0x7FC0."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


def collate_audio(
    samples: Sequence[np.ndarray],
    dtype: str = "float32",
    pad_to_multiple: int = 1,
    norm: Normalization | None = None,
    stats: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference of ``collate_audio.cu``: [T] or [T, F] float32 samples → [B, W(, F)] in the
    training dtype (bfloat16 as its uint16 bit patterns), zero-padded, optionally normalised
    per utterance and channel; and the bool padding mask [B, W]."""
    lengths = np.array([len(s) for s in samples], dtype=np.int64)
    width = padded_width(lengths.tolist(), pad_to_multiple)
    tail = samples[0].shape[1:] if samples else ()
    # each cell written once, row by row: zeroing the whole batch first cost as much as the
    # copy, and a broadcast compare with an int64 arange more
    out = np.empty((len(samples), width, *tail), dtype=np.float32)
    mask = np.empty((len(samples), width), dtype=bool)
    if norm is not None:
        stats = segment_stats(samples) if stats is None else stats
        mean, scale = mean_and_scale(stats, lengths, norm)
    for b, (s, n) in enumerate(zip(samples, lengths, strict=True)):
        mask[b, :n] = False
        mask[b, n:] = True
        out[b, n:] = 0.0
        if norm is None:
            out[b, :n] = s
        else:
            m, k = (mean[b], scale[b]) if tail else (mean[b, 0], scale[b, 0])
            row = out[b, :n]  # in place: no temporary the size of the utterance
            np.subtract(s, m, out=row)
            row *= k
    if dtype == "bfloat16":
        return to_bfloat16_bits(out), mask
    if dtype == "float16":
        with np.errstate(over="ignore"):  # beyond float16's range is inf, as in the kernel
            return out.astype(np.float16), mask
    return out, mask


def collate_targets(tokens: Sequence[np.ndarray], pad_idx: int) -> np.ndarray:
    """Reference of ``collate_targets.cu``: token id lists → int64 [B, L_max] padded with
    ``pad_idx``."""
    width = max((len(t) for t in tokens), default=0)
    out = np.full((len(tokens), width), pad_idx, dtype=np.int64)
    for i, t in enumerate(tokens):
        out[i, : len(t)] = t
    return out


def audio_tensor(array: np.ndarray, dtype: str) -> torch.Tensor:
    """The collated NumPy array as a torch tensor of ``dtype`` (bfloat16 comes as bits)."""
    tensor = torch.from_numpy(array)
    return tensor.view(torch.bfloat16) if dtype == "bfloat16" else tensor


@dataclass
class Decoded:
    """One planned batch's decoded audio, before anything is dropped: samples per file and
    non-finite values per file (int64 [B]), and what the maker needs to collate it."""

    lengths: np.ndarray
    nonfinite: np.ndarray
    payload: Any


class BatchMaker:
    """Turns a planned batch and its decoded audio into a ``Seq2SeqBatch`` with the NumPy
    references and ``fbank.kaldi_fbank`` (the CPU path)."""

    def __init__(
        self,
        files: Sequence[DataFile],
        pad_idx: int,
        dtype: str,
        pad_to_multiple: int = 1,
        *,
        use_fbank: bool = False,
        normalize_audio: bool = False,
        augmenter: Augmenter | None = None,
    ) -> None:
        self.files = files
        self.pad_idx = pad_idx
        self.dtype = dtype
        self.pad_to_multiple = pad_to_multiple
        self.use_fbank = use_fbank
        self.norm = STANDARDIZE if use_fbank else (LAYER_NORM if normalize_audio else None)
        self.augmenter = augmenter

    def key(self, ex: Example) -> ExampleKey:
        return example_key(self.files, ex)

    def run(self, pipe) -> tuple:
        """One DALI iteration (host-synchronised outputs on the CPU)."""
        return pipe.run()

    def decoded(self, outputs, rows: range) -> Decoded:
        """DALI's outputs for one planned batch: decoded sample counts, non-finite values,
        and the decoded audio (the CPU graph outputs the waveform for fbank too)."""
        features = outputs[0]
        arrays = [np.asarray(features[i]) for i in rows]
        # the CPU graph outputs the waveform: its decoded sample counts are the arrays' lengths
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        if self.norm is not None and not self.use_fbank:
            # one pass gives the NaN check and the layer norm's sums, as on the GPU
            stats = segment_stats(arrays)
            return Decoded(lengths, stats[:, 0, 2].astype(np.int64), (arrays, stats))
        nonfinite = np.array([nonfinite_count(a) for a in arrays])
        return Decoded(lengths, nonfinite, (arrays, None))

    def features(self, audio: list[np.ndarray]) -> list[np.ndarray]:
        """The kept utterances' source features: their decoded audio, or its fbank."""
        return kaldi_fbank(audio) if self.use_fbank else audio

    def make(
        self, examples: list[Example], decoded: Decoded, keep: list[int], plan_index: int = 0
    ) -> Seq2SeqBatch:
        """The batch of ``examples`` (the kept ones), whose audio is ``decoded`` at ``keep``."""
        arrays, stats = decoded.payload
        features = self.features([arrays[i] for i in keep])
        kept_stats = None if stats is None else stats[keep]
        source, mask = collate_audio(
            features, self.dtype, self.pad_to_multiple, self.norm, kept_stats
        )
        if self.use_fbank and self.augmenter is not None and self.augmenter.masks_spectrum:
            keys = [self.key(ex) for ex in examples]
            freq, time = self.augmenter.masks(keys, plan_index, [len(f) for f in features])
            self.augmenter.apply(source, freq, time)
        lengths = [len(f) for f in features]
        target_lens = [len(ex.tokens) for ex in examples]
        return self.batch(
            examples,
            audio_tensor(source, self.dtype),
            torch.from_numpy(mask),
            torch.from_numpy(collate_targets([ex.tokens for ex in examples], self.pad_idx)),
            (
                torch.tensor(lengths, dtype=torch.int64),
                torch.tensor(target_lens, dtype=torch.int64),
            ),
            lengths,
        )

    def batch(
        self,
        examples: list[Example],
        source: torch.Tensor,
        mask: torch.Tensor,
        targets: torch.Tensor,
        lengths: tuple[torch.Tensor, torch.Tensor],
        host_lengths: list[int],
    ) -> Seq2SeqBatch:
        """The batch around collated tensors; ``lengths`` are the source and target lengths,
        on the source's device."""
        files = [self.files[ex.file_index] for ex in examples]
        return Seq2SeqBatch(
            source_seqs=source,
            source_seq_lens=lengths[0],
            source_padding_mask=mask,
            target_seqs=targets,
            target_seq_lens=lengths[1],
            host_lengths=(host_lengths, [len(ex.tokens) for ex in examples]),
            keys=[self.key(ex) for ex in examples],
            language=[f.language for f in files],
            corpus=[f.corpus for f in files],
            split=[f.split for f in files],
            text=[ex.text for ex in examples],
            audio_size=[ex.audio_size for ex in examples],
        )
