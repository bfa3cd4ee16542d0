"""Kaldi log-mel fbank, exactly as the reference computes it (kaldi-native-fbank defaults).

DALI's feature operators alone cannot reproduce Kaldi: DALI has no per-frame DC removal,
pre-emphasises the whole signal, and its HTK mel triangles differ from Kaldi's by up to 0.004
(measured by feeding an identity spectrogram). So:

- on the GPU, the DALI graph frames the signal the Kaldi way and takes the power spectrum
  (``graph.kaldi_power``), then ``kernels/log_mel.cu`` applies Kaldi's mel matrix and the log
  with a FLT_EPSILON floor (:func:`log_mel` is its NumPy reference);
- on the CPU, the graph hands over the decoded waveform and :func:`kaldi_fbank` computes the
  whole fbank with torch's FFT: 0.15-0.17 CPU ms per audio-second on one thread, against
  0.76 for DALI's CPU operators with :func:`log_mel` and 0.93 for kaldi-native-fbank's C++
  (``benchmarks/fbank_cost.py`` on 2 cores);
- per-bin standardisation (unbiased std) follows in the collation (``collate.py``).
"""

from __future__ import annotations

import ctypes
import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

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
    frame below 400 samples, where Kaldi has none (:func:`kaldi_fbank`,
    ``graph.kaldi_power``)."""
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


# Frames per pass of kaldi_fbank's FFT and mel: the frames, spectra and powers of one block
# (~2.5 MB) stay in cache, which measured 20-30 % cheaper than one pass over a whole batch.
_BLOCK = 512
# The mel triangles in four matrix products over the FFT bins each group of 20 bands covers:
# a quarter of the dense product's multiplications (Kaldi's matrix has 501 non-zeros of 20,560);
# the dense product and 3, 5, 6 or 8 groups measured no cheaper.
_MEL_GROUPS = 4


@lru_cache(maxsize=1)
def _mel_blocks() -> tuple[tuple[slice, slice, torch.Tensor], ...]:
    """(FFT bins, mel bands, weights [bins, bands]) of each group of adjacent mel bands."""
    bands, weights = mel_bands(), mel_matrix()
    edges = np.linspace(0, NUM_MEL_BINS, _MEL_GROUPS + 1).astype(int)
    blocks = []
    for first, end in itertools.pairwise(edges):
        lo, hi = int(bands[first, 0]), int(bands[end - 1].sum())
        weight = torch.from_numpy(weights[lo:hi, first:end].copy())
        blocks.append((slice(lo, hi), slice(int(first), int(end)), weight))
    return tuple(blocks)


@lru_cache(maxsize=1)
def _scaled_window() -> torch.Tensor:
    # ×32768 is a power of two: scaling the window instead of the samples changes no bit.
    return torch.from_numpy(povey_window() * np.float32(WAVEFORM_SCALE))


@lru_cache(maxsize=1)
def _openmp() -> ctypes.CDLL | None:
    """The OpenMP runtime torch's CPU ops and MKL run on (the libgomp torch ships), if any."""
    found = sorted((Path(torch.__file__).parent / "lib").glob("libgomp*.so*"))
    return ctypes.CDLL(str(found[0])) if found else None


@contextmanager
def _one_intra_op_thread() -> Iterator[None]:
    """Torch's CPU ops on the calling thread alone while inside. Beside DALI's busy threads,
    torch's intra-op threads cost 3-7× the single-thread CPU time (measured on 2 cores); and
    ``torch.set_num_threads`` would also change the default of every thread that has not run
    a torch op yet (the training loop's, at the start), where OpenMP's own setting stays with
    this thread."""
    omp = _openmp()
    if omp is None:
        yield
        return
    before = omp.omp_get_max_threads()
    omp.omp_set_num_threads(1)
    try:
        yield
    finally:
        omp.omp_set_num_threads(before)


def kaldi_fbank(audio: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Unnormalised Kaldi log-mel fbank of 16 kHz float32 audio in [-1, 1]: float32
    [num_fbank_frames, 80] per utterance, views of one buffer; what ``graph.kaldi_power`` and
    :func:`log_mel` compute on the GPU.

    All utterances share one signal buffer, utterance b starting at sample 160 r_b, so one
    strided view holds every frame of the batch; r_b leaves two rows after each utterance's
    last frame (that frame ends 240 samples past its row), which are computed and never
    returned. Frame sample 0 needs no care: the Povey window is zero there, which is also why
    pre-emphasising the whole buffer once gives Kaldi's in-frame pre-emphasis; removing a
    frame's mean m before pre-emphasis equals subtracting 0.03 m after it."""
    if not audio:
        return []
    with _one_intra_op_thread():
        return _kaldi_fbank(audio)


def _kaldi_fbank(audio: Sequence[np.ndarray]) -> list[np.ndarray]:
    frames = [num_fbank_frames(len(a)) for a in audio]
    rows_at = frame_offsets([n + 2 for n in frames])
    signal = np.zeros(FRAME_SHIFT * int(rows_at[-1]), dtype=np.float32)
    for a, row, n in zip(audio, rows_at[:-1], frames, strict=True):
        used = a[: FRAME_SHIFT * (n - 1) + FRAME_LENGTH]  # snip_edges drops the rest
        signal[FRAME_SHIFT * row : FRAME_SHIFT * row + len(used)] = used
    x = torch.from_numpy(signal)
    emphasised = torch.empty_like(x)
    torch.add(x[1:], x[:-1], alpha=-PREEMPHASIS, out=emphasised[1:])
    emphasised[0] = 0.0
    rows = int(rows_at[-1]) - 2
    framed = emphasised.as_strided((rows, FRAME_LENGTH), (FRAME_SHIFT, 1))
    # frame sums from 80-sample chunk sums: a frame is five chunks, starting every second one
    chunk_sums = x.view(-1, FRAME_SHIFT // 2).sum(1)
    sums = chunk_sums.as_strided((rows, 5), (2, 1)).sum(1)
    dc = sums.mul_(-(1.0 - PREEMPHASIS) / FRAME_LENGTH)  # -0.03 × each frame's mean
    window = _scaled_window()
    block = torch.zeros(_BLOCK, FFT_SIZE)  # columns 400.. stay zero: the FFT's padding
    spectra = torch.empty(_BLOCK, FFT_SIZE // 2 + 1, dtype=torch.complex64)
    power = np.empty((_BLOCK, FFT_SIZE // 2 + 1), dtype=np.float32)
    mel = torch.empty(rows, NUM_MEL_BINS)
    for start in range(0, rows, _BLOCK):
        n = min(_BLOCK, rows - start)
        windowed = block[:n, :FRAME_LENGTH]
        torch.mul(framed[start : start + n], window, out=windowed)
        windowed.addr_(dc[start : start + n], window)
        spectrum = torch.fft.rfft(block[:n], out=spectra[:n]).numpy()
        # NumPy's squares measured faster than torch's on the complex64 view
        energy = np.multiply(spectrum.real, spectrum.real, out=power[:n])
        energy += np.square(spectrum.imag)
        energy_t = torch.from_numpy(energy)
        for bins, bands, weight in _mel_blocks():  # straight into mel's columns
            torch.mm(energy_t[:, bins], weight, out=mel[start : start + n, bands])
    out = mel.numpy()
    np.log(np.maximum(out, np.float32(LOG_FLOOR), out=out), out=out)
    return [out[r : r + n] for r, n in zip(rows_at[:-1], frames, strict=True)]
