"""Start-up and resume of the training stream against the number of partitions.

Writes datasets of N tiny (corpus, language) partitions (real espeak-mini audio, 2 row groups
each) and measures, in this process: loader construction (footers only), time to the first
planned batch (metadata) and to the first decoded batch; then the resume state after 200
planned batches (its JSON size) and the time a new loader takes from ``load_state_dict`` to
its next planned batch. Prints the times and the ratio of the largest N to the smallest:
start-up should grow with partitions (footers), not with rows.

    .venv/bin/python benchmarks/startup.py [--partitions 10 100 1000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from bench_common import LENGTH_SETTINGS, SINGLE_SHUFFLE

from dali_asr.config import config_from_dict
from dali_asr.loader import AsrLoader

ESPEAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "espeak-mini"
SOURCE = "version=0/corpus=espeak_read/split=train/language=eng_Latn/part-00000.parquet"


def make_dataset(root: Path, partitions: int) -> Path:
    rows = pq.read_table(ESPEAK / SOURCE).slice(0, 8)
    data = root / f"p{partitions}"
    lines = ["corpus\tlanguage\thours"]
    for i in range(partitions):
        corpus, language = f"c{i % 10}", f"l{i // 10:04d}_Latn"
        folder = data / f"corpus={corpus}" / "split=train" / f"language={language}"
        folder.mkdir(parents=True)
        pq.write_table(rows, folder / "part-0.parquet", row_group_size=4)
        lines.append(f"{corpus}\t{language}\t{1 + i % 13}")
    (root / f"p{partitions}.tsv").write_text("\n".join(lines) + "\n")
    return data


def measure(data: Path, tsv: Path) -> dict[str, float]:
    config = config_from_dict(
        {
            "asr_task_config": {**LENGTH_SETTINGS, **SINGLE_SHUFFLE},
            "mixture_parquet_storage_config": {
                "dataset_summary_path": str(tsv),
                "beta_corpus": 0.5,
                "beta_language": 0.5,
            },
        }
    )
    tokenizer = ESPEAK / "tokenizer" / "char_spm.model"
    t0 = time.perf_counter()
    loader = AsrLoader(data, "train", config, tokenizer)
    built = time.perf_counter() - t0
    t0 = time.perf_counter()
    next(iter(loader.planner().batches()))
    planned = time.perf_counter() - t0
    t0 = time.perf_counter()
    next(iter(loader))
    decoded = time.perf_counter() - t0
    loader.close()
    result = {"construct_s": built, "first_plan_s": planned, "first_batch_s": decoded}
    return {**result, **measure_resume(loader, lambda: AsrLoader(data, "train", config, tokenizer))}


def measure_resume(loader: AsrLoader, new_loader) -> dict[str, float]:
    """The state after 200 planned batches, and a new loader's restore from it."""
    plan = loader.plan()
    for _ in itertools.islice(plan, 200):
        pass
    state = loader.plan_state()
    plan.close()
    fresh = new_loader()
    t0 = time.perf_counter()
    fresh.load_state_dict(json.loads(json.dumps(state)))
    next(iter(fresh.plan()))
    restored = time.perf_counter() - t0
    return {"state_kb": len(json.dumps(state)) / 1000, "restore_s": restored}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, nargs="+", default=[10, 100, 1000])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.partitions:
            data = make_dataset(Path(tmp), n)
            results[n] = measure(data, Path(tmp) / f"p{n}.tsv")
    print(
        f"{'partitions':>10} {'construct s':>12} {'first plan s':>13} {'first batch s':>14} "
        f"{'state KB':>9} {'restore s':>10}"
    )
    for n, r in results.items():
        print(
            f"{n:>10} {r['construct_s']:>12.3f} {r['first_plan_s']:>13.3f} "
            f"{r['first_batch_s']:>14.3f} {r['state_kb']:>9.1f} {r['restore_s']:>10.3f}"
        )
    lo, hi = min(results), max(results)
    startup = ("construct_s", "first_plan_s", "first_batch_s")
    total = {n: sum(r[k] for k in startup) for n, r in results.items()}
    print(
        f"ratio total start-up {hi} / {lo} partitions: {total[hi] / total[lo]:.1f}x "
        f"for {hi / lo:.0f}x the partitions"
    )


if __name__ == "__main__":
    main()
