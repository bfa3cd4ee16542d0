"""Where dali-asr's time goes: its stages measured one at a time, in one process, on the same
configuration as benchmarks/run.py, against the end-to-end loader.

    python benchmarks/pieces.py [--configs length/waveform/single length/waveform/train]
                                [--data PATH] [--threads 2] [--repeats 3] [--epochs 3]

Stages (audio seconds per wall second and CPU milliseconds per audio second, median of
``--repeats``; each stage consumes the previous one's output already in memory):

- ``parquet``: the split's row groups read with pyarrow (columns audio_bytes, audio_size), the
  way the loader reads them; the list<int8> audio column is most of the cost;
- ``plan (metadata)``: dali-asr's planner without audio (columns audio_size and text: filters,
  tokenization, shuffles, batching: the Python per-example work);
- ``plan with audio``: the same with the encoded audio attached, as the loader plans (adds the
  list<int8> reads, the row-group cache on a training stream, copies of the encoded bytes);
- ``decode``: DALI ``decoders.audio`` on the planned batches (benchmarks/run.py's ceiling);
- ``collate``: the CPU path's per-batch work on decoded audio with
  dali_asr.pipeline.collate's functions (finite check, padding copy, mask, torch tensors);
- ``end to end``: ``AsrLoader``, for comparison: if the stages overlapped perfectly on the
  machine's cores, its CPU per audio-s would be near the sum of the stages'.

The sum of the stages' CPU against the end-to-end CPU and wall says whether the loader is
CPU-bound (nothing to gain but less work) or serialized (cores left idle).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import dali_child
import numpy as np
import pyarrow.parquet as pq
import run
import torch
from bench_common import BenchConfig, ChildSpec, cpu_seconds
from bench_common import storage_settings as storage_for
from bench_common import task_settings as task_for

from dali_asr.loader import AsrLoader
from dali_asr.pipeline.collate import collate_audio
from dali_asr.planning.planners import max_batch_size


def timed(fn: Callable[[], float], repeats: int) -> dict[str, float]:
    """Median wall and CPU seconds of ``fn`` (which returns the audio seconds it handled)."""
    walls, cpus, audio = [], [], 0.0
    for _ in range(repeats):
        c0, t0 = cpu_seconds(), time.perf_counter()
        audio = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(cpu_seconds() - c0)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    return {"audio_s": audio, "wall_s": wall, "cpu_s": cpu}


def parquet_stage(spec: ChildSpec) -> Callable[[], float]:
    loader = AsrLoader(spec.data, spec.split, dali_child.loader_config(spec, None), spec.tokenizer)
    paths = [f.path for f in loader.files.files]
    loader.close()

    def read() -> float:
        samples = 0
        for path in paths:
            f = pq.ParquetFile(path)
            for rg in range(f.num_row_groups):
                table = f.read_row_group(rg, columns=["audio_bytes", "audio_size"])
                samples += int(table.column("audio_size").to_numpy().sum())
        return samples / 16_000

    return read


def plan_stage(
    spec: ChildSpec, cache_dir: str | None, with_audio: bool, keep: list
) -> Callable[[], float]:
    """dali-asr's planner alone; with the audio, ``keep`` receives the planned batches."""

    def plan() -> float:
        config = dali_child.loader_config(spec, cache_dir)
        loader = AsrLoader(spec.data, spec.split, config, spec.tokenizer)
        batches = list(loader.planner().batches(with_audio=with_audio))
        loader.close()
        if with_audio:
            keep[:] = [([ex.audio for ex in b], [ex.audio_size for ex in b]) for b in batches]
        return sum(ex.audio_size for b in batches for ex in b) / 16_000

    return plan


def decode_stage(batches: list, size: int, threads: int, keep: list) -> Callable[[], float]:
    def decode() -> float:
        feed = dali_child._Feed(batches)
        pipe = dali_child.decode_pipeline(feed, size, threads)
        pipe.build()
        out = []
        while True:
            try:
                (audio,) = pipe.run()
            except StopIteration:
                break
            out.append([np.array(audio[i]) for i in range(len(audio))])
        del pipe
        keep[:] = out
        return sum(sum(sizes) for _, sizes in batches) / 16_000

    return decode


def collate_stage(decoded: list, audio_s: float) -> Callable[[], float]:
    def collate() -> float:
        for arrays in decoded:
            ok = [bool(np.isfinite(a).all()) for a in arrays]
            assert all(ok)
            source, mask = collate_audio(arrays)
            torch.from_numpy(source), torch.from_numpy(mask)
        return audio_s

    return collate


def end_to_end_stage(spec: ChildSpec, cache_dir: str | None) -> Callable[[], float]:
    def whole() -> float:
        result = dali_child.run_dali_asr(spec, cache_dir)
        return result["audio_s"]

    return whole


def measure(spec: ChildSpec, repeats: int) -> dict[str, dict[str, float]]:
    import shutil
    import tempfile

    cache_dir = tempfile.mkdtemp(prefix="bench-pieces-") if spec.endless else None
    try:
        planned: list = []
        decoded: list = []
        out = {"parquet": timed(parquet_stage(spec), repeats)}
        out["plan (metadata)"] = timed(plan_stage(spec, cache_dir, False, planned), repeats)
        out["plan with audio"] = timed(plan_stage(spec, cache_dir, True, planned), repeats)
        size = max_batch_size(dali_child.loader_config(spec, cache_dir).asr_task_config)
        out["decode"] = timed(decode_stage(planned, size, spec.threads, decoded), repeats)
        if spec.bench_config.features != "fbank":
            out["collate"] = timed(collate_stage(decoded, out["decode"]["audio_s"]), repeats)
        out["end to end"] = timed(end_to_end_stage(spec, cache_dir), repeats)
        return out
    finally:
        if cache_dir is not None:
            shutil.rmtree(cache_dir, ignore_errors=True)


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        "| config | stage | audio-s | audio-s/s | CPU ms per audio-s | cores |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for config, stages in results.items():
        total = 0.0
        for name, r in stages.items():
            per = 1000 * r["cpu_s"] / r["audio_s"]
            if name in ("plan with audio", "decode", "collate"):
                total += per
            lines.append(
                f"| {config} | {name} | {r['audio_s']:,.0f} | {r['audio_s'] / r['wall_s']:,.0f} "
                f"| {per:.3f} | {r['cpu_s'] / r['wall_s']:.2f} |"
            )
        lines.append(f"| {config} | plan with audio + decode + collate | | | {total:.3f} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["length/waveform/single",
                                                    "length/waveform/train"])  # fmt: skip
    p.add_argument("--data")
    p.add_argument("--split", default="train")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3, help="training stream: cap × epochs")
    args = p.parse_args(argv)
    ds = run.resolve_dataset(args.data, None)
    results: dict[str, Any] = {}
    for name in args.configs:
        config = BenchConfig.parse(name)
        cap = None
        if config.mode == "train":
            cap = run.single_pass_batches(ds, args.split, config, {}) * args.epochs
        spec = ChildSpec(
            subject="dali-asr", data=str(ds.data), split=args.split,
            tokenizer=str(ds.tokenizer), config=name, task=task_for(config, cap),
            storage=storage_for(config, str(ds.stats_tsv) if ds.stats_tsv else None),
            epochs=1, threads=args.threads,
        )  # fmt: skip
        print(f"measuring {name} ...", file=sys.stderr)
        results[name] = measure(spec, args.repeats)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
