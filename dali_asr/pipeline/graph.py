"""The DALI graph: encoded bytes → 16 kHz mono audio → the waveform, or Kaldi's power spectra.

One definition for both devices: DALI decodes on CPU threads (it has no GPU audio decoder),
``device="gpu"`` then makes the single host→device copy and runs the rest on the GPU, and
``device="cpu"`` runs the same graph on DALI's CPU threads with ``device_id=None`` (no CUDA).

The GPU fbank path frames the signal the Kaldi way with DALI's own operators
(:func:`kaldi_power`), so DALI's FFT sees exactly Kaldi's frames; the mel matrix, the log, the
standardisation and the collation follow in ``kernels/``: DALI's ``mel_filter_bank`` triangles
differ from Kaldi's by up to 0.004 (see ``fbank.py``). The CPU graph outputs the waveform for
fbank too: ``fbank.kaldi_fbank`` computes the whole fbank after it for a fifth of the CPU time
DALI's CPU operators take.

Downmixing happens in the decoder, before the copy: it is free there and halves the bytes a
stereo file sends to the GPU.
"""

from __future__ import annotations

from collections.abc import Callable

from nvidia.dali import fn, pipeline_def, types
from nvidia.dali import math as dmath

from dali_asr.pipeline.cuda_env import preload_cufft
from dali_asr.pipeline.fbank import (
    FFT_SIZE,
    FRAME_LENGTH,
    FRAME_SHIFT,
    PREEMPHASIS,
    SAMPLE_RATE,
    WAVEFORM_SCALE,
    povey_window,
)

# Kaldi's frames (400 samples every 160) are cut from rows of 80 samples: 80 divides both.
_CHUNK = 80


def build_pipeline(
    source: Callable[[], object],
    *,
    max_batch_size: int,
    num_threads: int,
    device: str = "cpu",
    device_id: int | None = None,
    prefetch_queue_depth: int = 2,
    fbank: bool = False,
    speed_perturb: bool = False,
):
    """Build the pipeline. ``source()`` returns the next batch of encoded files (uint8 arrays)
    — with ``speed_perturb``, a pair (files, float32 speed factors) — and raises StopIteration
    at the end of the epoch; its batches may have any size up to ``max_batch_size``. Outputs,
    per file: the decoded audio (float32 [T]) or with ``fbank`` on the GPU its Kaldi power
    spectra (float32 [frames, 257]), on ``device``; and the decoded sample count (int64 [1],
    CPU)."""
    if device == "gpu" and fbank:
        preload_cufft()

    @pipeline_def(
        batch_size=max_batch_size,
        num_threads=num_threads,
        device_id=device_id if device == "gpu" else None,
        prefetch_queue_depth=prefetch_queue_depth,
        exec_dynamic=True,
    )
    def asr_features():
        if speed_perturb:
            encoded, factor = fn.external_source(
                source=source,
                num_outputs=2,
                dtype=[types.UINT8, types.FLOAT],
                ndim=[1, 0],
                batch=True,
            )
        else:
            encoded = fn.external_source(
                source=source, name="encoded", dtype=types.UINT8, ndim=1, batch=True
            )
        # On the CPU, resampling inside the decoder costs nothing for 16 kHz files (an
        # identity audio_resample would triple the decode time); on the GPU the decoder keeps
        # the file's rate and the GPU resamples (an identity resample there moves samples by
        # under 1e-7).
        on_device = device == "gpu" or speed_perturb
        rate_arg = {} if on_device else {"sample_rate": float(SAMPLE_RATE)}
        audio, rate = fn.decoders.audio(encoded, dtype=types.FLOAT, downmix=True, **rate_arg)
        if device == "gpu":
            audio = audio.gpu()
        if on_device:
            # Speed perturbation reads the audio as if recorded at factor × its rate; the rate
            # is a CPU argument input, as DALI requires.
            in_rate = rate * factor if speed_perturb else rate
            audio = fn.audio_resample(audio, in_rate=in_rate, out_rate=float(SAMPLE_RATE))
        lengths = audio.shape()[0:1]
        return (kaldi_power(audio, device) if fbank and device == "gpu" else audio), lengths

    return asr_features()


def kaldi_power(audio, device: str = "cpu"):
    """Kaldi's power spectra [frames, 257] of 1-D audio in [-1, 1], as kaldi-native-fbank
    computes them (snip_edges): frame i is samples 160 i .. 160 i + 399, ×32768, minus the
    frame's mean, pre-emphasised inside the frame, times the Povey window, zero-padded to 512.

    DALI has no framing operator, so the frames are cut from rows: with p the pre-emphasised
    signal, frame i is rows i and i + 1 of p in rows of 160 and the first half of row i + 2.
    Removing the frame's mean m before pre-emphasis equals p - 0.03 m on every sample but the
    first, which the Povey window zeroes. Under 400 samples (Kaldi: no frame) gives one frame
    of the audio zero-padded to 400 samples, so a batch never holds an empty utterance."""
    scaled = audio * WAVEFORM_SCALE
    samples = fn.cast(scaled.shape()[0], dtype=types.INT32)
    frames = dmath.max((samples - FRAME_LENGTH) // FRAME_SHIFT + 1, 1)
    steps = FRAME_SHIFT // _CHUNK  # chunks per frame shift: 2
    # the audio cut or zero-padded to frames + 2 shifts: every frame's samples, and under a
    # frame Kaldi's padding, which it pre-emphasises too (the first padded sample gets -0.97 x
    # the last real one); what it cuts is in no frame, and the filter only looks back
    padded = fn.slice(
        scaled,
        start=0,
        shape=(frames + 2) * FRAME_SHIFT,
        axes=[0],
        out_of_bounds_policy="pad",
        fill_values=0.0,
    )
    # each frame's sum: five chunks of 80, starting every second chunk
    chunk_sums = fn.reductions.sum(_rows(padded, frames * steps + 4, _CHUNK), axes=[1])
    pairs = _rows(chunk_sums, frames + 2, steps)
    first, second = _column(pairs, 0, frames + 2), _column(pairs, 1, frames + 2)
    shift_sums = first + second
    frame_sums = _take(shift_sums, 0, frames) + _take(shift_sums, 1, frames)
    mean = (frame_sums + _take(first, 2, frames)) * (1.0 / FRAME_LENGTH)
    emphasised = fn.preemphasis_filter(padded, preemph_coeff=PREEMPHASIS, border="zero")
    shifts = _rows(emphasised, frames + 2, FRAME_SHIFT)
    framed = fn.cat(
        _take(shifts, 0, frames),
        _take(shifts, 1, frames),
        _take(_take(shifts, 2, frames), 0, FRAME_LENGTH - 2 * FRAME_SHIFT, axis=1),
        axis=1,
    )
    offset = fn.reshape(mean * (1.0 - PREEMPHASIS), shape=fn.stack(frames, frames * 0 + 1))
    # a constant on the audio's device: made there once, not copied every iteration
    windowed = (framed - offset) * types.Constant(povey_window(), device=device)
    # the frames back to back, and a spectrogram whose windows are exactly those frames
    flat = fn.reshape(windowed, shape=fn.stack(frames * FRAME_LENGTH))
    return fn.spectrogram(
        flat,
        nfft=FFT_SIZE,
        window_length=FRAME_LENGTH,
        window_step=FRAME_LENGTH,
        window_fn=[1.0] * FRAME_LENGTH,
        center_windows=False,
        power=2,
        layout="tf",
    )


def _rows(x, count, width: int):
    """1-D ``x`` of exactly ``count`` × ``width`` samples as [count, width] (no copy)."""
    return fn.reshape(x, shape=fn.stack(count, count * 0 + width))


def _take(x, first, count, axis: int = 0):
    """``count`` entries of ``x`` along ``axis`` from ``first``."""
    return fn.slice(x, start=first, shape=count, axes=[axis])


def _column(x, index: int, count):
    """Column ``index`` of 2-D ``x`` as a 1-D node of ``count`` entries."""
    return fn.reshape(_take(x, index, 1, axis=1), shape=fn.stack(count))
