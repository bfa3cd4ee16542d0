"""Kaldi log-mel fbank, exactly as the reference computes it (kaldi-native-fbank defaults).

DALI's feature operators alone cannot reproduce Kaldi: DALI has no per-frame DC removal,
pre-emphasises the whole signal, and its HTK mel triangles differ from Kaldi's by up to 0.004
(measured by feeding an identity spectrogram). So the work is split, the same on both devices:

1. the DALI graph frames the signal the Kaldi way and takes the power spectrum
   (``graph.kaldi_power``);
2. :func:`log_mel` (``kernels/log_mel.cu`` on the GPU): Kaldi's mel matrix and the log with a
   FLT_EPSILON floor;
3. per-bin standardisation (unbiased std), fused into the collate kernel (``collate.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from dali_asr.storage import SAMPLE_RATE

FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_SHIFT = 160  # 10 ms
FFT_SIZE = 512
NUM_MEL_BINS = 80
LOW_FREQ = 20.0
PREEMPHASIS = 0.97
# Kaldi floors energies at FLT_EPSILON before the log.
LOG_FLOOR = float(np.finfo(np.float32).eps)
# Samples in [-1, 1] to int16 range: the reference's waveform_scale=2**15.
WAVEFORM_SCALE = 32768.0


def num_fbank_frames(num_samples: int) -> int:
    """Frames of the fbank: Kaldi's 1 + (N - 400) // 160 (snip_edges), and one zero-padded
    frame below 400 samples, where Kaldi has none (``graph.kaldi_power``)."""
    return max(1, 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT)


def frame_offsets(frames: Sequence[int]) -> np.ndarray:
    """int64 [B + 1]: where each utterance's frames start in a buffer of all of them."""
    return np.concatenate(([0], np.cumsum(frames, dtype=np.int64)))


@lru_cache(maxsize=1)
def povey_window() -> np.ndarray:
    """Kaldi's Povey window: a symmetric Hann (N - 1 in the denominator) to the 0.85."""
    n = np.arange(FRAME_LENGTH, dtype=np.float64)
    return ((0.5 - 0.5 * np.cos(2 * np.pi * n / (FRAME_LENGTH - 1))) ** 0.85).astype(np.float32)


def _mel(freq: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(freq, dtype=np.float64) / 700.0)


@lru_cache(maxsize=1)
def mel_matrix() -> np.ndarray:
    """float32 [257, 80]: Kaldi's triangles, linear in mel, over FFT bins 0..255 (Kaldi leaves
    the Nyquist bin out, so its row is zero)."""
    low, high = _mel(LOW_FREQ), _mel(SAMPLE_RATE / 2)
    delta = (high - low) / (NUM_MEL_BINS + 1)
    left = low + delta * np.arange(NUM_MEL_BINS)
    center, right = left + delta, left + 2 * delta
    mel = _mel(SAMPLE_RATE / FFT_SIZE * np.arange(FFT_SIZE // 2))[:, None]
    rising = (mel - left) / (center - left)
    falling = (right - mel) / (right - center)
    weights = np.where(mel <= center, rising, falling)
    weights[(mel <= left) | (mel >= right)] = 0.0
    out = np.zeros((FFT_SIZE // 2 + 1, NUM_MEL_BINS), dtype=np.float32)
    out[: FFT_SIZE // 2] = weights
    return out


@lru_cache(maxsize=1)
def mel_bands() -> np.ndarray:
    """int32 [80, 2]: each triangle's first FFT bin and its number of bins (for the kernel,
    which sums only where a triangle is non-zero)."""
    nonzero = mel_matrix() > 0
    first = nonzero.argmax(axis=0)
    return np.stack([first, nonzero.sum(axis=0)], axis=1).astype(np.int32)


def log_mel(power: np.ndarray) -> np.ndarray:
    """Reference of ``kernels/log_mel.cu``: power spectra [frames, 257] → float32 log mel
    energies [frames, 80], floored at FLT_EPSILON."""
    mel = np.asarray(power, np.float32) @ mel_matrix()
    return np.log(np.maximum(mel, np.float32(LOG_FLOOR)))
