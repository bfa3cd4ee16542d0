"""Augmentation (off by default): speed perturbation and SpecAugment, seeded per example.

Every random draw comes from a generator seeded by (``augment_seed``, the example's file, row
group and row, and the batch's index in the plan), never from a running RNG: a resumed run, or
another rank, draws the same values for the same batch, and an example met again in a later
epoch (another plan index) gets new ones.

- Speed perturbation: the decoded audio is resampled as if recorded at ``factor × rate``, so it
  plays ``factor`` times faster (length ÷ factor), in DALI's resampler (on the GPU there).
- SpecAugment on fbank: up to ``num_freq_masks`` masks of up to ``max_freq_width`` mel bins and
  ``num_time_masks`` masks of up to ``max_time_width`` frames (and at most ``max_time_ratio`` of
  the utterance), set to zero after standardisation (the bin's mean). Unlike the reference,
  whose "frequency" mask masks time, these mask frequency and time.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from dali_asr.config import SpecAugmentSettings
from dali_asr.keys import ExampleKey
from dali_asr.pipeline.fbank import NUM_MEL_BINS

if TYPE_CHECKING:
    from dali_asr.config import DaliAsrSettings

_SPEED, _SPEC = 0, 1


def example_rng(seed: int, key: ExampleKey, plan_index: int, purpose: int) -> np.random.Generator:
    """The generator of one example in one batch: the same on every run, rank and restart."""
    path = zlib.crc32(str(key.file).encode())
    return np.random.default_rng([seed, purpose, path, key.row_group, key.row, plan_index])


class Augmenter:
    """Draws the per-example augmentation parameters and applies the masks on the CPU."""

    def __init__(
        self, seed: int, speed_factors: Sequence[float] | None, spec: SpecAugmentSettings
    ) -> None:
        self.seed = seed
        self.speeds = list(speed_factors or [])
        self.spec = spec

    @property
    def perturbs_speed(self) -> bool:
        return bool(self.speeds)

    @property
    def masks_spectrum(self) -> bool:
        return self.spec.p > 0

    def speed_factors(self, keys: Sequence[ExampleKey], plan_index: int) -> np.ndarray:
        """float32 [B]: each example's speed factor (1.0 without speed perturbation)."""
        if not self.speeds:
            return np.ones(len(keys), dtype=np.float32)
        draws = [
            example_rng(self.seed, k, plan_index, _SPEED).integers(len(self.speeds)) for k in keys
        ]
        return np.array([self.speeds[i] for i in draws], dtype=np.float32)

    def masks(
        self, keys: Sequence[ExampleKey], plan_index: int, frames: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """int32 [B, num_freq_masks, 2] and [B, num_time_masks, 2]: (first, count) per mask;
        count 0 where an example is not masked."""
        s = self.spec
        freq = np.zeros((len(keys), s.num_freq_masks, 2), dtype=np.int32)
        time = np.zeros((len(keys), s.num_time_masks, 2), dtype=np.int32)
        for b, (key, n) in enumerate(zip(keys, frames, strict=True)):
            rng = example_rng(self.seed, key, plan_index, _SPEC)
            if rng.random() >= s.p:
                continue
            for k in range(s.num_freq_masks):
                width = int(rng.integers(0, min(s.max_freq_width, NUM_MEL_BINS) + 1))
                freq[b, k] = (rng.integers(0, NUM_MEL_BINS - width + 1), width)
            limit = min(s.max_time_width, int(s.max_time_ratio * n))
            for k in range(s.num_time_masks):
                width = int(rng.integers(0, limit + 1))
                time[b, k] = (rng.integers(0, max(n - width, 0) + 1), width)
        return freq, time

    @staticmethod
    def apply(features: np.ndarray, freq: np.ndarray, time: np.ndarray) -> None:
        """Reference of ``spec_augment.cu``: zero the masked cells of [B, W, F] in place (zero
        bits are zero in every dtype, bfloat16 bit patterns included)."""
        for b in range(features.shape[0]):
            for first, count in freq[b]:
                features[b, :, first : first + count] = 0
            for first, count in time[b]:
                features[b, first : first + count, :] = 0


def make_augmenter(settings: DaliAsrSettings) -> Augmenter | None:
    """The configured augmentation, or None when all of it is off (the default)."""
    if not settings.speed_perturb and settings.spec_augment.p == 0:
        return None
    return Augmenter(settings.augment_seed, settings.speed_perturb, settings.spec_augment)
