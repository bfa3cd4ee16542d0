"""One measured pass of dali-asr end to end, or of the DALI decode-only ceiling, in its own
process. Run by benchmarks/run.py with the project's python:

    python benchmarks/dali_child.py '<ChildSpec JSON>'

Prints one ``BENCH-RESULT {json}`` line on stdout (see bench_common.emit).

The ceiling decodes the very batches dali-asr plans (same examples, same batch sizes, same
thread count, same decoder arguments) from encoded bytes already in memory, so the gap between
the two is everything dali-asr does besides decoding: reading parquet, planning, feeding DALI,
collating and building torch tensors (and, for fbank, the features).
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

import numpy as np
import torch  # noqa: F401  (imported before timing, as a training script would have it)
from bench_common import SAMPLE_RATE, ChildSpec, PassMeter, child_main, current_rss_mb

from dali_asr.config import config_from_dict
from dali_asr.loader import AsrLoader
from dali_asr.planning.planners import max_batch_size


def loader_config(spec: ChildSpec, cache_dir: str | None) -> Any:
    storage = dict(spec.storage)
    if cache_dir is not None:
        storage["fragment_loading"] = {"cache": True, "cache_dir": cache_dir}
    return config_from_dict(
        {
            "asr_task_config": spec.task,
            "mixture_parquet_storage_config": storage,
            "dali_asr": {**spec.dali, "device": spec.device, "num_threads": spec.threads},
        },
        source="benchmarks",
    )


def run_dali_asr(spec: ChildSpec, cache_dir: str | None) -> dict[str, Any]:
    """``epochs`` iterations of one AsrLoader (one for a capped training stream)."""
    meter = PassMeter()
    config = loader_config(spec, cache_dir)
    meter.start()
    loader = AsrLoader(spec.data, spec.split, config, spec.tokenizer)
    meter.built()
    for _ in range(1 if spec.endless else spec.epochs):
        for batch in loader:
            meter.batch(
                batch.batch_size,
                int(batch.source_seqs.shape[1]),
                int(batch.source_seq_lens.sum()),
                sum(batch.audio_size),
            )
    result = meter.result()
    result["skipped"] = dict(loader.report.counts)
    loader.close()
    return result


def planned_batches(spec: ChildSpec, cache_dir: str | None) -> tuple[list, int]:
    """dali-asr's plan for one epoch with the encoded audio, copied into plain arrays (the
    training stream's are views of a mapped cache that the loader removes), and DALI's batch
    size as the loader sets it."""
    loader = AsrLoader(spec.data, spec.split, loader_config(spec, cache_dir), spec.tokenizer)
    batches = [
        ([np.array(ex.audio, dtype=np.uint8) for ex in batch], [ex.audio_size for ex in batch])
        for batch in loader.planner().batches(with_audio=True)
    ]
    size = max_batch_size(loader.task)
    loader.close()
    return batches, size


ENCODED = "encoded"


def decode_pipeline(
    source: Any, batch_size: int, threads: int, prefetch_queue_depth: int = 2
) -> Any:
    """external_source → decoders.audio, with the loader's decoder arguments and executor;
    ``source`` None: fed by hand (``pipe.feed_input(ENCODED, ...)``)."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(
        batch_size=batch_size,
        num_threads=threads,
        device_id=None,
        prefetch_queue_depth=prefetch_queue_depth,
        exec_dynamic=True,
    )
    def decode_only():
        if source is None:
            encoded = fn.external_source(name=ENCODED, dtype=types.UINT8, ndim=1)
        else:
            encoded = fn.external_source(source=source, dtype=types.UINT8, ndim=1, batch=True)
        audio, _ = fn.decoders.audio(
            encoded, dtype=types.FLOAT, downmix=True, sample_rate=float(SAMPLE_RATE)
        )
        return audio

    return decode_only()


class _Feed:
    """DALI's source: the next planned batch's arrays; StopIteration ends DALI's epoch. (A
    class, as DALI reads a callable's positional arguments as sample indexing.)"""

    def __init__(self, batches: list) -> None:
        self.batches = iter(batches)
        self.sizes: list[list[int]] = []

    def __call__(self) -> list[np.ndarray]:
        arrays, audio_sizes = next(self.batches)
        self.sizes.append(audio_sizes)
        return arrays


def run_ceiling(spec: ChildSpec, cache_dir: str | None) -> dict[str, Any]:
    """Decode the planned batches ``epochs`` times, one pipeline per epoch like the loader;
    the clock starts at the pipeline's construction (the loader builds its own inside the
    first ``next()``)."""
    batches, batch_size = planned_batches(spec, cache_dir)
    # a training stream's plan is already capped at the stream's batch count
    epochs = [batches] if spec.endless else [batches] * spec.epochs
    rss_planned = current_rss_mb()
    meter = PassMeter()
    meter.start()
    meter.built()
    for epoch in epochs:
        source = _Feed(epoch)
        sizes = source.sizes
        pipe = decode_pipeline(source, batch_size, spec.threads)
        pipe.build()
        done = 0
        while True:
            try:
                (audio,) = pipe.run()
            except StopIteration:
                break
            lengths = [shape[0] for shape in audio.shape()]
            meter.batch(len(lengths), max(lengths), sum(lengths), sum(sizes[done]))
            done += 1
        del pipe
    result = meter.result()
    result["rss_with_plan_mb"] = rss_planned
    return result


def measure(spec: ChildSpec) -> dict[str, Any]:
    # the training stream's row-group cache, removed here whatever happens (as for the reference)
    cache_dir = tempfile.mkdtemp(prefix="bench-cache-") if spec.endless else None
    try:
        if spec.subject == "dali-asr":
            return run_dali_asr(spec, cache_dir)
        if spec.subject == "ceiling":
            return run_ceiling(spec, cache_dir)
        raise SystemExit(f"dali_child.py: unknown subject {spec.subject!r}")
    finally:
        if cache_dir is not None:
            shutil.rmtree(cache_dir, ignore_errors=True)


if __name__ == "__main__":
    child_main(__doc__, measure)
