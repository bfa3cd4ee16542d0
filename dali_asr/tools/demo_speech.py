"""Speech-like audio for the demo dataset: voiced syllables with formants and a moving f0,
noise consonants, pauses and a -65 dBFS noise floor, made by source-filter synthesis frame by
frame (an STFT overlap-add). Not speech, but decoders and features get realistic work."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dali_asr.storage import SAMPLE_RATE

FRAME, HOP = 512, 256  # 32 ms frames, 50 % overlap: periodic Hann windows then sum to one
_WINDOW = np.hanning(FRAME + 1)[:-1]
_FREQS = np.fft.rfftfreq(FRAME, 1 / SAMPLE_RATE)
# F1..F3 (Hz) of i e a o u schwa for an adult male vocal tract; speakers scale them.
_VOWELS = np.array(
    [
        [280, 2250, 2900],
        [400, 2000, 2600],
        [730, 1100, 2450],
        [450, 800, 2400],
        [310, 870, 2250],
        [500, 1500, 2500],
    ],
    dtype=float,
)
_FORMANT_BW = np.array([90.0, 120.0, 180.0])
_FORMANT_GAIN = np.array([1.0, 0.5, 0.25])
_TILT = 1 / (1 + (_FREQS / 3000) ** 2)  # voiced energy falls off above ~3 kHz
_NOISE_FLOOR = 10 ** (-65 / 20)


@dataclass(frozen=True)
class Speaker:
    f0: float  # base pitch (Hz)
    vtl: float  # formant scale: shorter vocal tracts have higher formants
    rate: float  # syllables per second
    pause_p: float  # chance of a pause after a syllable


def synthesize(rng: np.random.Generator, n: int, spk: Speaker) -> np.ndarray:
    """Source-filter synthesis frame by frame (STFT overlap-add), vectorised over frames."""
    syl = _syllables(rng, n, spk)
    n_frames = n // HOP + 2
    k, g_voiced, g_noise = _frame_gains(syl, np.arange(n_frames) * HOP)
    vowels, bands = _spectral_shapes(syl, spk)
    source = _glottal_source(rng, n_frames, spk)
    frames = np.lib.stride_tricks.sliding_window_view(source, FRAME)[::HOP] * _WINDOW
    spec = np.fft.rfft(frames, axis=-1) * (vowels[k] * g_voiced[:, None])
    noisy = np.flatnonzero(g_noise)  # noise is drawn in the frequency domain, only where needed
    white = rng.standard_normal((noisy.size, _FREQS.size, 2)) @ np.array([1.0, 1j])
    gain = g_noise[noisy] * syl["noise_level"][k[noisy]] * 9.8  # ~unit-power windowed noise
    spec[noisy] += white * bands[k[noisy]] * gain[:, None]
    return _finish(rng, _overlap_add(np.fft.irfft(spec, n=FRAME, axis=-1), n))


def _frame_gains(syl: dict[str, np.ndarray], centers: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per frame: its syllable, the vowel's gain (a smooth hump) and the consonant's gain."""
    k = np.clip(np.searchsorted(syl["onset"], centers, side="right") - 1, 0, None)
    rel = (centers - syl["onset"][k]) / syl["dur"][k]
    inside, cf, amp = (rel >= 0) & (rel < 1), syl["cfrac"][k], syl["amp"][k]
    vowel_pos = np.clip((rel - cf) / (1 - cf), 0, 1)
    g_voiced = np.where(inside & (rel >= cf), amp * np.sin(np.pi * vowel_pos) ** 0.6, 0.0)
    cons_pos = np.clip(rel / np.maximum(cf, 1e-9), 0, 1)
    g_noise = np.where(inside & (rel < cf), amp * np.sin(np.pi * cons_pos), 0.0)
    return k, g_voiced, g_noise


def _syllables(rng: np.random.Generator, n: int, spk: Speaker) -> dict[str, np.ndarray]:
    """Syllable onsets and durations (samples) with pauses, plus per-syllable sound choices."""
    edge = rng.uniform(0.03, 0.25, 2) * min(1.0, n / (3 * SAMPLE_RATE)) * SAMPLE_RATE
    count = int(n / SAMPLE_RATE * spk.rate * 1.5) + 2
    dur = rng.uniform(0.6, 1.4, count) / spk.rate * SAMPLE_RATE
    gap = np.where(rng.random(count) < spk.pause_p, rng.uniform(0.12, 0.45, count), 0.0)
    onset = edge[0] + np.concatenate(([0.0], np.cumsum(dur + gap * SAMPLE_RATE)[:-1]))
    keep = onset + dur <= n - edge[1]
    keep[0] = True
    dur[0] = min(dur[0], max(n - edge.sum(), 2 * HOP))
    has_consonant = rng.random(count) < 0.75
    return {
        "onset": onset[keep],
        "dur": dur[keep],
        "cfrac": np.where(has_consonant, rng.uniform(0.15, 0.35, count), 0.0)[keep],
        "amp": rng.uniform(0.4, 1.0, count)[keep],
        "vowel": rng.integers(len(_VOWELS), size=count)[keep],
        "noise_center": rng.uniform(2500, 6500, count)[keep],
        "noise_width": rng.uniform(800, 2500, count)[keep],
        "noise_level": rng.uniform(0.05, 0.3, count)[keep],
    }


def _glottal_source(rng: np.random.Generator, n_frames: int, spk: Speaker) -> np.ndarray:
    """A sawtooth (harmonics falling 6 dB/octave, like voice after lip radiation) following a
    slowly varying f0 contour, padded by half a frame on both sides for framing."""
    t = np.arange(n_frames) * HOP / SAMPLE_RATE
    rates, phases = rng.uniform(0.2, 1.2, 2), rng.uniform(0, 2 * np.pi, 2)
    wobble = 0.12 * np.sin(2 * np.pi * rates[0] * t + phases[0]) + 0.05 * np.sin(
        2 * np.pi * rates[1] * t + phases[1]
    )
    declination = 1 - 0.12 * t / max(t[-1], 1e-9)
    f0_frames = np.clip(spk.f0 * (1 + wobble) * declination, 90, 250)
    total = (n_frames - 1) * HOP + FRAME
    f0 = np.interp(np.arange(total) - FRAME // 2, np.arange(n_frames) * HOP, f0_frames)
    phase = np.cumsum(f0 / SAMPLE_RATE) + rng.random()
    return 1 - 2 * (phase % 1.0)


def _spectral_shapes(syl: dict[str, np.ndarray], spk: Speaker) -> tuple[np.ndarray, ...]:
    """Per syllable: the vowel's formant envelope and the consonant's noise band."""
    offset = (_FREQS[None, :, None] - _VOWELS[syl["vowel"]][:, None, :] * spk.vtl) / _FORMANT_BW
    vowels = ((_FORMANT_GAIN / (1 + offset**2)).sum(axis=-1) + 0.02) * _TILT
    offset = (_FREQS[None, :] - syl["noise_center"][:, None]) / syl["noise_width"][:, None]
    return vowels, np.exp(-0.5 * offset**2)


def _overlap_add(frames: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((frames.shape[0] + 1, HOP))
    out[:-1] += frames[:, :HOP]
    out[1:] += frames[:, HOP:]
    return out.reshape(-1)[FRAME // 2 : FRAME // 2 + n]


def _finish(rng: np.random.Generator, wave: np.ndarray) -> np.ndarray:
    """Random peak level (-12..-1 dBFS) plus a noise floor, so nothing is digitally silent."""
    peak = float(np.max(np.abs(wave)))
    if peak > 0:
        wave = wave * (10 ** (rng.uniform(-12, -1) / 20) / peak)
    wave = wave + rng.normal(0, _NOISE_FLOOR, wave.shape)
    return np.clip(wave, -0.99, 0.99).astype(np.float32)
