"""Scaling: dali-asr against the decode-only ceiling on ≥ 10 hours of 1-60 s utterances, and
throughput against the DALI thread count (1 and 2; 4, 8 and 16 too when a GPU is present).

    python benchmarks/scaling.py [--hours 10] [--out ~/.cache/dali-asr/bench-10h]
                                 [--threads 1 2] [--configs length/waveform/single]
                                 [--compare reference] [--passes 3] [--json F] [--markdown-out F]

The dataset comes from benchmarks/longdata.py (built once, then reused). LENGTH settings are
baseline.md's with the length limit raised to 60 s: max_audio_len 960,000 and
max_num_elements 1,920,000 (two minute-long utterances per batch). Measurement, table and
targets are benchmarks/run.py's.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import bench_report
import run
from longdata import DEFAULT_OUT, make_long_dataset

LONG_FORM = {"max_audio_len": 960_000, "max_num_elements": 1_920_000}


def default_threads() -> list[int]:
    return [1, 2, 4, 8, 16] if bench_report.gpu_name() else [1, 2]


def thread_table(rows: list[bench_report.Row]) -> str:
    """Median audio-s/s of dali-asr and of the ceiling per configuration and thread count."""
    lines = [
        "| config | DALI threads | dali-asr audio-s/s | ceiling audio-s/s | dali-asr / ceiling "
        "| dali-asr cores | ceiling cores |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    keys = sorted({(r.config, r.threads) for r in rows if r.threads is not None})
    for config, threads in keys:
        ours = bench_report.find(rows, config, "dali-asr", threads)
        ceiling = bench_report.find(rows, config, "ceiling", threads)

        def med(row: bench_report.Row | None, metric: str) -> str:
            v = row.median(metric) if row else None
            return "—" if v is None else f"{v:,.0f}" if metric == "audio_per_s" else f"{v:.2f}"

        r = bench_report.ratio(ours, ceiling)
        lines.append(
            f"| {config} | {threads} | {med(ours, 'audio_per_s')} | {med(ceiling, 'audio_per_s')} "
            f"| {'—' if r is None else f'{r:.2f}'} | {med(ours, 'cores')} "
            f"| {med(ceiling, 'cores')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=10.0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the dataset is cached")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--threads", type=int, nargs="+", default=None)
    p.add_argument("--configs", nargs="+", default=["length/waveform/single"])
    p.add_argument("--compare", action="append", default=[], choices=["reference"])
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu", "auto"])
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown-out", type=Path)
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    print(f"dataset: {args.hours:g} h under {args.out} (built once)", file=sys.stderr)
    root = make_long_dataset(args.out, args.hours, args.seed)
    built_s = time.perf_counter() - t0
    ds = run.resolve_dataset(str(root), None)
    threads = args.threads or default_threads()
    subjects = run.make_subjects(args.compare, threads, None)
    configs = run.select_configs(args.configs)
    info: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": bench_report.machine(),
        "versions": run.versions(subjects),
        "dataset": f"{ds.label} ({args.hours:g} h, 1-60 s, seed {args.seed})",
        "split": "train",
        "passes": args.passes,
        "warmup": args.warmup,
        "epochs": 1,
        "threads": threads,
        "task_overrides": LONG_FORM,
        "dataset_build_s": built_s,
        "calibration": {"before": bench_report.calibrate()},
        "source": {"before": bench_report.source_state(run.REPO)},
    }
    rows, raw = run.run_benchmark(
        ds,
        "train",
        configs,
        subjects,
        args.passes,
        args.warmup,
        1,
        None,
        LONG_FORM,
        device=args.device,
    )
    info["calibration"]["after"] = bench_report.calibrate()
    info["source"]["after"] = bench_report.source_state(run.REPO)
    info["elapsed_s"] = time.perf_counter() - t0
    lost = bench_report.failures(rows, args.passes)
    body = (
        bench_report.table(rows)
        + (f"\n\n{lost}" if lost else "")
        + "\n\nThroughput against DALI threads (medians):\n\n"
        + thread_table(rows)
    )
    title = f"scaling: {args.hours:g} h of 1-60 s utterances, DALI threads"
    bench_report.publish(
        "scaling.py", argv, info, rows, raw, body,
        json_path=args.json, markdown_path=args.markdown_out, title=title,
    )  # fmt: skip
    return 0 if all(r.passes for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
