"""Kaldi log-mel fbank, exactly as the reference computes it (kaldi-native-fbank defaults).

DALI's own operators cannot reproduce Kaldi: it has no per-frame DC removal, pre-emphasises
the whole signal, and its HTK mel triangles differ from Kaldi's by up to 0.004 (measured by
feeding an identity spectrogram). So the fbank is computed after DALI, in three steps that run
the same on both devices:

1. framing (``kernels/kaldi_frames.cu`` on the GPU, :func:`kaldi_frames` here): each 400-sample
   frame, ×32768, minus its own mean, pre-emphasised inside the frame, times the Povey window,
   zero-padded to 512;
2. :func:`log_mel`: real FFT, power, Kaldi's mel matrix, log with a FLT_EPSILON floor; written
   once against the array module (NumPy, or CuPy = cuFFT + cuBLAS on the GPU);
3. per-bin standardisation (unbiased std) fused into the collate kernel (see ``collate.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

SAMPLE_RATE = 16_000
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
    """Kaldi's frame count with snip_edges: 1 + (N - 400) // 160, none below 400 samples."""
    return 0 if num_samples < FRAME_LENGTH else 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT


def frame_offsets(lengths: Sequence[int]) -> np.ndarray:
    """int64 [B + 1]: where each utterance's frames start in the batch's frame buffer."""
    counts = [num_fbank_frames(int(n)) for n in lengths]
    return np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))


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


def kaldi_frames(samples: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference of ``kernels/kaldi_frames.cu``: float32 [total frames, 512] and the
    frame offsets [B + 1]. Per frame, as Kaldi: scale, remove the frame's mean, pre-emphasise
    with y[0] = x[0] - 0.97·x[0], multiply by the Povey window, zero-pad."""
    offsets = frame_offsets([len(s) for s in samples])
    out = np.zeros((int(offsets[-1]), FFT_SIZE), dtype=np.float32)
    window = povey_window()
    for b, audio in enumerate(samples):
        count = int(offsets[b + 1] - offsets[b])
        if count == 0:
            continue
        view = np.lib.stride_tricks.sliding_window_view(np.asarray(audio, np.float32), FRAME_LENGTH)
        frames = view[: count * FRAME_SHIFT : FRAME_SHIFT] * np.float32(WAVEFORM_SCALE)
        frames -= frames.mean(axis=1, keepdims=True)
        emphasised = np.empty_like(frames)
        emphasised[:, 1:] = frames[:, 1:] - np.float32(PREEMPHASIS) * frames[:, :-1]
        emphasised[:, 0] = frames[:, 0] * np.float32(1.0 - PREEMPHASIS)
        out[offsets[b] : offsets[b + 1], :FRAME_LENGTH] = emphasised * window
    return out, offsets


def log_mel(frames: Any, xp: Any = np) -> Any:
    """[total frames, 512] windowed frames → float32 [total frames, 80] log mel energies.
    ``xp`` is the array module the frames live in (NumPy, or CuPy on the GPU)."""
    spectrum = xp.fft.rfft(frames, axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(xp.float32)
    mel = power @ xp.asarray(mel_matrix())
    return xp.log(xp.maximum(mel, xp.float32(LOG_FLOOR)))
