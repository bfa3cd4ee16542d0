"""The DALI graph: encoded bytes → decoded 16 kHz mono audio, on the device that computes the
features.

One definition for both devices: DALI decodes on CPU threads (it has no GPU audio decoder),
``device="gpu"`` then makes the single host→device copy and resamples on the GPU, and
``device="cpu"`` runs the same graph on DALI's CPU threads with ``device_id=None`` (no CUDA).
The features (waveform layer norm, Kaldi fbank, SpecAugment) and the collation run after the
graph, as CuPy kernels on the GPU or their NumPy references on the CPU (``collate.py``,
``gpu_collate.py``): DALI's own fbank operators cannot match Kaldi (see ``fbank.py``).

Downmixing happens in the decoder, before the copy: it is free there and halves the bytes a
stereo file sends to the GPU.
"""

from __future__ import annotations

from collections.abc import Callable

from dali_asr.fbank import SAMPLE_RATE


def build_pipeline(
    source: Callable[[], object],
    *,
    max_batch_size: int,
    num_threads: int,
    device: str = "cpu",
    device_id: int | None = None,
    prefetch_queue_depth: int = 2,
    speed_perturb: bool = False,
):
    """Build the pipeline. ``source()`` returns the next batch of encoded files (uint8 arrays)
    — with ``speed_perturb``, a pair (files, float32 speed factors) — and raises StopIteration
    at the end of the epoch; its batches may have any size up to ``max_batch_size``. Outputs:
    the decoded audio of each file (ragged float32 [T], on ``device``) and its sample count
    (int64 [1], on the CPU)."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(
        batch_size=max_batch_size,
        num_threads=num_threads,
        device_id=device_id if device == "gpu" else None,
        prefetch_queue_depth=prefetch_queue_depth,
        exec_dynamic=True,
    )
    def decoded_audio():
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
        return audio, audio.shape()[0:1]

    return decoded_audio()
