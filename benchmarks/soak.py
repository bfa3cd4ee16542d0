"""Soak: run the training stream for a while and watch the process's memory.

Reports RSS every minute (and batches, audio hours, skips); after the warm-up the RSS must
stay within 5 % of its value at the end of the warm-up. Prints a verdict and a table; `--plot`
writes a PNG of RSS over time.

    .venv/bin/python benchmarks/soak.py [--minutes 30] [--warmup 3] [--data PATH] [--plot F]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from dali_asr.config import config_from_dict
from dali_asr.loader import AsrLoader

ESPEAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "espeak-mini"


def rss_mb() -> float:
    """Current resident set size (not the peak) from /proc."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def train_config(data: Path, fbank: bool):
    tsv = data / "language_distribution_0.tsv"
    storage = {"beta_corpus": 0.5, "beta_language": 0.5}
    if tsv.exists():
        storage["dataset_summary_path"] = str(tsv)
    return config_from_dict(
        {
            "asr_task_config": {
                "min_audio_len": 16_000,
                "max_audio_len": 480_000,
                "max_num_elements": 960_000,
                "num_seqs_multiple_of": 8,
                "example_shuffle_window": 1000,
                "batch_shuffle_window": 20,
                "use_fbank": fbank,
            },
            "mixture_parquet_storage_config": storage,
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=3.0, help="minutes before the baseline")
    parser.add_argument("--data", type=Path, default=ESPEAK)
    parser.add_argument("--tokenizer", type=Path, default=None)
    parser.add_argument("--fbank", action="store_true")
    parser.add_argument("--plot", type=Path, help="write RSS over time to this PNG")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    tokenizer = args.tokenizer
    if tokenizer is None and (args.data / "tokenizer" / "char_spm.model").exists():
        tokenizer = args.data / "tokenizer" / "char_spm.model"
    loader = AsrLoader(args.data, "train", train_config(args.data, args.fbank), tokenizer)
    start = time.monotonic()
    samples: list[tuple[float, float, int, float]] = []
    audio_s = 0.0
    next_report = 60.0
    for batches, batch in enumerate(loader, start=1):
        audio_s += sum(batch.audio_size) / 16_000
        elapsed = time.monotonic() - start
        if elapsed >= next_report:
            samples.append((elapsed / 60, rss_mb(), batches, audio_s / 3600))
            m, r, b, h = samples[-1]
            print(f"{m:6.1f} min  RSS {r:8.1f} MB  batches {b:8d}  audio h {h:8.2f}", flush=True)
            next_report += 60.0
        if elapsed >= args.minutes * 60:
            break
    loader.close()
    after = [s for s in samples if s[0] >= args.warmup]
    if not after:
        print("run too short for a verdict")
        return 1
    base = after[0][1]
    worst = max(abs(s[1] - base) / base for s in after)
    ok = worst <= 0.05
    print(
        f"RSS after warm-up {base:.1f} MB; largest deviation {100 * worst:.1f} % "
        f"({'within' if ok else 'OUTSIDE'} 5 %); {loader.report.summary()}"
    )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot([s[0] for s in samples], [s[1] for s in samples], marker="o")
        ax.axvline(args.warmup, color="grey", linestyle=":")
        ax.axhspan(base * 0.95, base * 1.05, color="green", alpha=0.1)
        ax.set_xlabel("minutes")
        ax.set_ylabel("RSS (MB)")
        ax.set_title("dali-asr training stream soak")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
