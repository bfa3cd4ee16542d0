"""The real pipeline on a device, for tier 2 (``gpu_tier2.py``) and ``tests/pipeline/test_gpu.py``:
GPU features against CPU features (the DALI graph and the makers, and the whole loader), and
training-stream throughput against the DALI decode-only ceiling.

``device`` is ``"gpu"`` on a GPU machine; with ``"cpu"`` every function runs the CPU graph in
the GPU's place, which is how the script is rehearsed on a machine without CUDA.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import fbank_agreement as fa
import numpy as np
import pyarrow.parquet as pq
from bench_common import SAMPLE_RATE, TRAIN_SHUFFLE, cpu_seconds

STATS_NAME = "language_distribution_0.tsv"


def loader_config(
    fbank: bool, device: str, threads: int, train: bool, data: Path, settings: dict | None = None
) -> Any:
    """LENGTH 16,000 / 480,000 / 960,000 / 8, layer-normed waveform or fbank; ``train``: the
    recipe's training stream (UNTIL_FIRST, β 0.5 over the stats TSV, shuffle windows)."""
    from dali_asr.config import config_from_dict

    task: dict[str, Any] = {
        "min_audio_len": 16_000, "max_audio_len": 480_000, "max_num_elements": 960_000,
        "num_seqs_multiple_of": 8, "use_fbank": fbank, "normalize_audio": True,
        "example_shuffle_window": 1, "batch_shuffle_window": 1,
    }  # fmt: skip
    storage: dict[str, Any] = {"sync_mode": "UNTIL_LAST"}
    if train:
        task.update(TRAIN_SHUFFLE, max_num_batches=1_000_000)
        storage = {"sync_mode": "UNTIL_FIRST"}
        stats = data.parent / STATS_NAME if data.name.startswith("version=") else data / STATS_NAME
        if stats.is_file():
            storage.update(dataset_summary_path=str(stats), beta_corpus=0.5, beta_language=0.5)
    return config_from_dict(
        {
            "asr_task_config": task,
            "mixture_parquet_storage_config": storage,
            "dali_asr": {"device": device, "num_threads": threads, **(settings or {})},
        }
    )


def dataset_root(data: Path) -> Path:
    return data / "version=0" if (data / "version=0").is_dir() else data


def split_blobs(data: Path, split: str, limit: int) -> list[np.ndarray]:
    """Encoded audio of the split's first ``limit`` rows, in path order."""
    blobs: list[np.ndarray] = []
    for path in sorted(dataset_root(data).glob(f"*/split={split}/*/*.parquet")):
        column = pq.read_table(path, columns=["audio_bytes"]).column("audio_bytes")
        column = column.combine_chunks()
        values = column.values.to_numpy(zero_copy_only=False).view(np.uint8)
        offsets = column.offsets.to_numpy()
        blobs += [values[a:b].copy() for a, b in itertools.pairwise(offsets)]
        if len(blobs) >= limit:
            break
    return blobs[:limit]


def _graph_outputs(blobs, device: str, fbank: bool, size: int, with_maker: bool):
    """Per batch of ``size`` files: the graph's outputs made into a standardised/layer-normed
    float32 batch by the device's maker, as numpy; and the unnormalised features per file."""
    from dali_asr.pipeline.collate import BatchMaker
    from dali_asr.pipeline.fbank import kaldi_fbank
    from dali_asr.pipeline.graph import build_pipeline
    from dali_asr.storage.discovery import DataFile
    from dali_asr.storage.examples import Example

    chunks = [blobs[i : i + size] for i in range(0, len(blobs), size)]
    feed = iter(chunks)
    pipe = build_pipeline(
        lambda: next(feed), max_batch_size=size, num_threads=4, device=device,
        device_id=0 if device == "gpu" else None, fbank=fbank,
    )  # fmt: skip
    files = [DataFile("x.parquet", "x.parquet", "c", "dev", "l")]
    if device == "gpu":
        from dali_asr.pipeline.gpu_collate import GpuBatchMaker

        maker: BatchMaker = GpuBatchMaker(
            files, 0, "float32", use_fbank=fbank, normalize_audio=True, device_id=0
        )
    else:
        maker = BatchMaker(files, 0, "float32", use_fbank=fbank, normalize_audio=True)
    batches, raw = [], []
    for chunk in chunks:
        outputs = maker.run(pipe)
        if not with_maker:  # the decoded audio itself
            raw += [np.asarray(outputs[0][i]).copy() for i in range(len(chunk))]
            continue
        if device == "cpu" and fbank:
            raw += kaldi_fbank([np.asarray(outputs[0][i]) for i in range(len(chunk))])
        examples = [Example(0, 0, i, 0, "", np.arange(3)) for i in range(len(chunk))]
        decoded = maker.decoded(outputs, range(len(chunk)))
        batch = maker.make(examples, decoded, list(range(len(chunk))))
        if device == "gpu":
            from dali_asr.pipeline.gpu_collate import hand_over

            hand_over(batch)  # as the loader does: this stream now follows the batch's kernels
        source = batch.source_seqs.cpu().numpy()
        batches += [source[b, :n] for b, n in enumerate(batch.host_lengths[0])]
    del pipe
    return batches, raw


def graph_gpu_equals_cpu(data: Path, fbank: bool, device: str, limit: int = 160) -> tuple:
    """(ok, value, goal): the dev split's first ``limit`` files through the graph and maker on
    ``device`` against the CPU graph and maker, per utterance."""
    blobs = split_blobs(data, "dev", limit)
    got, _ = _graph_outputs(blobs, device, fbank, 16, True)
    want, cpu_mel = _graph_outputs(blobs, "cpu", fbank, 16, True)
    if [g.shape for g in got] != [w.shape for w in want]:
        return False, "shapes differ", "equal shapes"
    errors = [np.abs(g - w) for g, w in zip(got, want, strict=True)]
    if not fbank:
        worst = max(float(e.max()) for e in errors)
        return worst <= 1e-5, f"max |Δ| {worst:.2e} over {len(blobs)} files", "<= 1e-5"
    _, audio = _graph_outputs(blobs, "cpu", False, 16, False)
    resolved = [fa.resolved_cells(a, m) for a, m in zip(audio, cpu_mel, strict=True)]
    figures = fa.agreement(errors, resolved)
    return fa.agrees(figures), f"{fa.describe(figures)} over {len(blobs)} files", fa.GOAL


def loader_gpu_equals_cpu(data: Path, fbank: bool, device: str, tokenizer) -> tuple:
    """(ok, value, goal): the dev split's single pass through the loader on both devices."""
    from dali_asr.loader import AsrLoader

    runs = []
    for dev in (device, "cpu"):
        with AsrLoader(data, "dev", loader_config(fbank, dev, 4, False, data), tokenizer) as ld:
            runs.append([(b.keys, b.source_seqs.float().cpu(), b.source_padding_mask.cpu(),
                          b.source_seq_lens.cpu()) for b in ld])  # fmt: skip
    got, want = runs
    same = [g[0] for g in got] == [w[0] for w in want] and all(
        bool((g[2] == w[2]).all()) and bool((g[3] == w[3]).all())
        for g, w in zip(got, want, strict=True)
    )
    if not same:
        return False, "keys, masks or lengths differ", "identical batches"
    errors = [(g[1] - w[1]).abs().numpy() for g, w in zip(got, want, strict=True)]
    flat = np.concatenate([e.ravel() for e in errors])
    worst, p9999 = float(flat.max()), float(np.percentile(flat, 99.99))
    if fbank:
        ok = worst < fa.MAX_LIMIT and p9999 < fa.P9999_LIMIT
        goal = f"p99.99 < {fa.P9999_LIMIT:g}, max < {fa.MAX_LIMIT:g}"
    else:
        ok, goal = worst <= 1e-5, "<= 1e-5"
    return ok, f"{len(got)} batches; max |Δ| {worst:.2e}, p99.99 {p9999:.2e}", goal


def _sync(device: str) -> None:
    if device == "gpu":
        import torch

        torch.cuda.synchronize()


def stream_rate(
    data, tokenizer, fbank, device, threads, seconds, warmup=10, settings=None
) -> dict[str, float]:
    """The training stream end to end: audio-s/s and CPU ms per audio-s over ``seconds`` after
    ``warmup`` batches, and the first batch (loader construction to first batch in hand);
    ``settings``: more of the ``dali_asr`` section."""
    from dali_asr.loader import AsrLoader

    t0 = time.perf_counter()
    config = loader_config(fbank, device, threads, True, data, settings)
    loader = AsrLoader(data, "train", config, tokenizer)
    first, samples, batches = 0.0, 0, 0
    for i, batch in enumerate(loader):
        if i == 0:
            first = time.perf_counter() - t0
        if i == warmup:
            _sync(device)
            start, cpu = time.perf_counter(), cpu_seconds()
        if i >= warmup:
            samples += sum(batch.audio_size)
            batches += 1
            if time.perf_counter() - start >= seconds:
                break
    _sync(device)
    wall, used = time.perf_counter() - start, cpu_seconds() - cpu
    loader.close()
    audio = samples / SAMPLE_RATE
    return {"rate": audio / wall, "cpu_ms": used * 1e3 / audio, "first_s": first, "n": batches}


def decode_ceiling(data, tokenizer, threads, seconds, planned=200) -> dict[str, float]:
    """DALI's CPU decoder alone on the training stream's planned batches (the same files, batch
    sizes, threads and decoder arguments; bytes already in memory), cycled for ``seconds``."""
    from dali_child import decode_pipeline

    from dali_asr.loader import AsrLoader
    from dali_asr.planning.planners import max_batch_size

    config = loader_config(False, "cpu", threads, True, data)
    with AsrLoader(data, "train", config, tokenizer) as loader:
        plan = loader.planner().batches(with_audio=True)
        batches = [
            ([np.array(ex.audio, np.uint8) for ex in batch], sum(ex.audio_size for ex in batch))
            for batch in itertools.islice(plan, planned)
        ]
        size = max_batch_size(loader.task)
    cycle = itertools.cycle(batches)
    sizes: list[int] = []

    def source() -> list[np.ndarray]:
        arrays, samples = next(cycle)
        sizes.append(samples)
        return arrays

    pipe = decode_pipeline(source, size, threads)
    pipe.build()
    for _ in range(5):
        pipe.run()
    done, start, cpu = 5, time.perf_counter(), cpu_seconds()
    while time.perf_counter() - start < seconds:
        pipe.run()
        done += 1
    wall, used = time.perf_counter() - start, cpu_seconds() - cpu
    audio = sum(sizes[5:done]) / SAMPLE_RATE
    del pipe
    return {"rate": audio / wall, "cpu_ms": used * 1e3 / audio, "n": done - 5}


def planning_rate(data, tokenizer, seconds) -> dict[str, float]:
    """The training stream's planning alone, audio included (no DALI): the serial part of the
    loader that every batch passes through."""
    from dali_asr.loader import AsrLoader

    with AsrLoader(data, "train", loader_config(False, "cpu", 1, True, data), tokenizer) as ld:
        plan = ld.planner().batches(with_audio=True)
        for _ in itertools.islice(plan, 20):
            pass
        samples, start, cpu = 0, time.perf_counter(), cpu_seconds()
        for batch in plan:
            samples += sum(ex.audio_size for ex in batch)
            if time.perf_counter() - start >= seconds:
                break
        wall, used = time.perf_counter() - start, cpu_seconds() - cpu
    audio = samples / SAMPLE_RATE
    return {"rate": audio / wall, "cpu_ms": used * 1e3 / audio}
