"""The DALI graph: encoded bytes → decoded 16 kHz mono audio → waveform or Kaldi log-mel fbank.

One definition for both devices: ``device="gpu"`` inserts the single host→device copy right
after decoding (DALI has no GPU audio decoder), ``device="cpu"`` runs everything on DALI's CPU
threads with ``device_id=None`` (no CUDA needed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000
FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_SHIFT = 160  # 10 ms
FFT_SIZE = 512
NUM_MEL_BINS = 80
PREEMPHASIS = 0.97
# Kaldi floors energies at FLT_EPSILON before the log.
LOG_FLOOR = float(np.finfo(np.float32).eps)
# Scale float samples in [-1, 1] to int16 range, as the reference's waveform_scale=2**15.
WAVEFORM_SCALE = 32768.0
LAYER_NORM_EPS = 1e-5


@dataclass(frozen=True)
class FeatureSpec:
    """What the graph computes per utterance."""

    use_fbank: bool = False
    normalize_audio: bool = False

    @property
    def name(self) -> str:
        return "fbank" if self.use_fbank else "waveform"


def povey_window(length: int = FRAME_LENGTH) -> list[float]:
    """Kaldi's Povey window: a Hann window (symmetric, N - 1 in the denominator) to the 0.85."""
    n = np.arange(length, dtype=np.float64)
    return ((0.5 - 0.5 * np.cos(2 * np.pi * n / (length - 1))) ** 0.85).tolist()


def num_fbank_frames(num_samples: int) -> int:
    """Kaldi's frame count with snip_edges: 1 + (N - 400) // 160, none below 400 samples."""
    return 0 if num_samples < FRAME_LENGTH else 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT


def build_pipeline(
    source: Callable[[], list[np.ndarray]],
    spec: FeatureSpec,
    *,
    max_batch_size: int,
    num_threads: int,
    device: str = "cpu",
    device_id: int | None = None,
    prefetch_queue_depth: int = 2,
    pad_to_multiple: int = 1,
):
    """Build the pipeline. ``source()`` returns the next batch of encoded files (uint8 arrays)
    and raises StopIteration at the end of the epoch; its batches may have any size up to
    ``max_batch_size``. Outputs on the CPU: the features of each utterance, ragged ([T] or
    [frames, 80]), and the decoded sample counts; on the GPU: the features zero-padded to a
    dense batch, their lengths, and the decoded sample counts."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(
        batch_size=max_batch_size,
        num_threads=num_threads,
        device_id=device_id if device == "gpu" else None,
        prefetch_queue_depth=prefetch_queue_depth,
        exec_dynamic=True,
    )
    def asr_features():
        encoded = fn.external_source(
            source=source, name="encoded", dtype=types.UINT8, ndim=1, batch=True
        )
        # Resampling inside the decoder costs nothing for 16 kHz files (measured) and brings
        # any other rate to 16 kHz; downmix averages the channels.
        audio, _ = fn.decoders.audio(
            encoded, dtype=types.FLOAT, downmix=True, sample_rate=float(SAMPLE_RATE)
        )
        if device == "gpu":
            audio = audio.gpu()
        # Samples after decoding and resampling: checked against the dataset's audio_size.
        audio_lengths = audio.shape()[0:1]
        if spec.use_fbank:
            features = kaldi_fbank(audio)
        elif spec.normalize_audio:
            # epsilon is added to the biased variance: torch's layer_norm without affine.
            features = fn.normalize(audio, epsilon=LAYER_NORM_EPS)
        else:
            features = audio
        if device == "gpu":
            # Until the collation kernels land, the GPU path pads inside DALI (dense output,
            # handed to torch by DLPack); lengths come back as small CPU tensors.
            feature_lengths = features.shape()[0:1]
            padded = fn.pad(features, axes=[0], fill_value=0.0, align=pad_to_multiple)
            return padded, feature_lengths, audio_lengths
        return features, audio_lengths

    return asr_features()


def kaldi_fbank(audio):
    """80-bin log-mel fbank with Kaldi's framing, standardised per bin (unbiased std).

    Differs from Kaldi in one step: Kaldi removes each frame's mean and pre-emphasises per
    frame; here pre-emphasis runs over the whole signal and no per-frame DC removal is done
    (DALI has no such op), which moves the lowest mel bins (see README).
    """
    from nvidia.dali import fn

    scaled = audio * WAVEFORM_SCALE
    emphasised = fn.preemphasis_filter(scaled, preemph_coeff=PREEMPHASIS, border="clamp")
    power = fn.spectrogram(
        emphasised,
        nfft=FFT_SIZE,
        window_length=FRAME_LENGTH,
        window_step=FRAME_SHIFT,
        window_fn=povey_window(),
        center_windows=False,
        power=2,
        layout="tf",
    )
    mel = fn.mel_filter_bank(
        power,
        sample_rate=float(SAMPLE_RATE),
        nfilter=NUM_MEL_BINS,
        freq_low=20.0,
        freq_high=SAMPLE_RATE / 2,
        mel_formula="htk",
        normalize=False,
    )
    log_mel = fn.to_decibels(
        mel, multiplier=math.log(10.0), reference=1.0, cutoff_db=math.log(LOG_FLOOR)
    )
    return fn.normalize(log_mel, axes=[0], ddof=1)
