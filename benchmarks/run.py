"""Throughput of dali-asr against the reference reader and two DALI ceilings.

    python benchmarks/run.py [--compare reference] [--data PATH] [--configs NAME ...]
                             [--passes 3] [--epochs N | --min-pass-s 10] [--threads 2]
                             [--json FILE] [--markdown-out benchmarks/RESULTS.md]

On one dataset (default ../shared/data/espeak-mini when present, else the demo data), for each
configuration (batching length|static × features waveform|fbank × mode single|train, the rows
of ../shared/reference/baseline.md), runs each subject in its own process, alternating in an
order rotated by one subject a round (A B C D, B C D A, ...) after a warm-up round: the
reference (``--compare reference``: omnilingual-asr 0.2.0 from $REFERENCE_VENV, built by
benchmarks/setup_reference.sh), then per ``--threads`` count dali-asr end to end, DALI decode
only on dali-asr's batches (the ``ceiling``), and pyarrow read + DALI decode of the split
(``read+decode``: cores / CPU per audio-s, the least
any loader of this layout must do). Without ``--epochs`` the warm-up round runs two epochs and
sizes each configuration's passes so that its fastest subject's lasts ``--min-pass-s``
(default 10 s; on espeak-mini's train split roughly 20-30 epochs). Prints the table (min / median
/ max over the passes), the read + decode ceiling's parts and issue 14's targets
(bench_targets.py); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import bench_report
import bench_targets
from bench_common import ALL_CONFIGS, BenchConfig, ChildSpec, parse_child_output
from bench_common import storage_settings as storage_for
from bench_common import task_settings as task_for
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ESPEAK = REPO.parent / "shared" / "data" / "espeak-mini"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dali-asr"
STATS_NAME = "language_distribution_0.tsv"
# per thread count, back to back: dali-asr beside the ceilings it is divided by
NAMES = ("dali-asr", "ceiling", "read+decode")
SCRIPTS = {
    "dali-asr": "dali_child.py",
    "ceiling": "dali_child.py",
    "read+decode": "read_decode_child.py",
}
SUBJECTS = ("reference", *NAMES)
# epochs run at different speeds (the files' codecs differ), and a warm-up's run slower than
# the passes' (the fbank ceiling's by up to 1.32x: 1.2 gave it a 9.1 s pass): aim past the minimum
SIZING_MARGIN = 1.5
WARM_EPOCHS = 2
"""Epochs of a sizing warm-up round: its second half is past the loaders' start-up."""


def reference_python() -> Path:
    venv = os.environ.get("REFERENCE_VENV") or str(CACHE / "reference-venv")
    return Path(venv) / "bin" / "python"


@dataclass(frozen=True)
class Dataset:
    data: Path  # the version=0 folder: what both loaders are given
    stats_tsv: Path | None
    tokenizer: Path
    label: str


@dataclass(frozen=True)
class Subject:
    """A loader under test, run as ``python script spec``."""

    name: str
    threads: int | None
    python: str
    script: Path


def train_char_tokenizer(data: Path, dest: Path) -> Path:
    """A SentencePiece char model over the dataset's texts, with fairseq's ids (<s> 0, <pad> 1,
    </s> 2, <unk> 3) like espeak-mini's: the reference cannot run without a model file."""
    import pyarrow.dataset as pads
    import sentencepiece as spm

    model = dest / "char_spm.model"
    if model.exists():
        return model
    texts = pads.dataset(str(data), partitioning="hive").to_table(columns=["text"])
    dest.mkdir(parents=True, exist_ok=True)
    corpus = dest / "texts.txt"
    corpus.write_text("\n".join(sorted(set(texts.column("text").to_pylist()))) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(dest / "char_spm"),
        model_type="char",
        character_coverage=1.0,
        bos_id=0,
        pad_id=1,
        eos_id=2,
        unk_id=3,
        minloglevel=2,
    )
    corpus.unlink()
    return model


def resolve_dataset(path: str | None, tokenizer: str | None) -> Dataset:
    """``--data`` (the folder holding version=0, or version=0 itself), else espeak-mini, else the
    demo data built under the cache."""
    if path is None:
        if ESPEAK.exists():
            root = ESPEAK
        else:
            from dali_asr.tools.demo_data import make_demo_dataset

            root = CACHE / "demo"
            make_demo_dataset(root)
    else:
        root = Path(path).resolve()
    data = root / "version=0" if (root / "version=0").is_dir() else root
    top = data.parent if data.name.startswith("version=") else data
    stats = top / STATS_NAME
    if tokenizer is not None:
        model = Path(tokenizer)
    elif (top / "tokenizer" / "char_spm.model").exists():
        model = top / "tokenizer" / "char_spm.model"
    else:
        key = hashlib.sha1(str(data).encode()).hexdigest()[:12]
        model = train_char_tokenizer(data, CACHE / "bench-tokenizers" / key)
    return Dataset(data, stats if stats.exists() else None, model, str(top))


def single_pass_batches(
    ds: Dataset, split: str, config: BenchConfig, overrides: dict[str, Any]
) -> int:
    """Batches of dali-asr's single pass (the reference plans the same; tests/golden checks
    it): the training stream is capped at this × epochs, as baseline.md did."""
    from dali_asr.config import config_from_dict
    from dali_asr.loader import AsrLoader

    single = BenchConfig(config.batching, config.features, "single")
    cfg = config_from_dict(
        {
            "asr_task_config": task_for(single, None, overrides),
            "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
        }
    )
    with AsrLoader(ds.data, split, cfg, ds.tokenizer) as loader:
        return len(loader)


def child_spec(
    ds: Dataset,
    split: str,
    config: BenchConfig,
    subject: Subject,
    cap: int | None,
    epochs: int,
    overrides: dict[str, Any] | None = None,
    device: str = "cpu",
    dali: dict[str, Any] | None = None,
) -> ChildSpec:
    """What one child of ``subject`` measures: ``epochs`` of ``config``, at most ``cap``
    batches."""
    return ChildSpec(
        subject=subject.name,
        data=str(ds.data),
        split=split,
        tokenizer=str(ds.tokenizer),
        config=config.name,
        task=task_for(config, cap, overrides or {}),
        storage=storage_for(config, str(ds.stats_tsv) if ds.stats_tsv else None),
        epochs=epochs,
        threads=subject.threads or 0,
        device=device,
        dali=dali or {},
    )


def run_child(subject: Subject, spec: ChildSpec, timeout: float) -> dict[str, Any]:
    cmd = [subject.python, str(subject.script), spec.to_json()]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-600:]}"}
    try:
        return parse_child_output(done.stdout)
    except ValueError as e:
        return {"error": f"{e}: {done.stderr.strip()[-600:]}"}


def round_order(subjects: list[Subject], k: int) -> list[Subject]:
    """Round ``k``'s order: each round starts one subject later (A B C, B C A, C A B), so no
    subject always follows the same one, whose after-effects (a 1.2-1.6 GB process just
    ended) and the machine's drift within a round then fall on every subject alike."""
    first = k % len(subjects)
    return subjects[first:] + subjects[:first]


def size_epochs(warm: list[dict[str, Any]], min_pass_s: float, warm_epochs: int = 1) -> int:
    """Epochs per pass that make the fastest subject's pass last ``min_pass_s``, from the
    warm-up's results of ``warm_epochs`` epochs each (1 when none succeeded)."""
    epoch_s = [s for r in warm if "error" not in r and (s := _epoch_s(r, warm_epochs)) > 0]
    if not epoch_s:
        return 1
    return max(1, math.ceil(min_pass_s * SIZING_MARGIN / min(epoch_s)))


def _epoch_s(result: dict[str, Any], epochs: int) -> float:
    """One epoch's wall time once started up: from the warm-up's second half of batches where
    the child reports it (a loader's first epoch runs slower than its later ones: its pools
    and buffers grow, so a 10 s goal sized from it gave 8 s passes), else from its iteration
    time after the first batch. ``wall_s`` counts from the end of the construction,
    ``first_batch_s`` from its start: the construction is taken out of the latter (the
    reference's takes most of a second)."""
    late_wall, late_audio = result.get("late_wall_s", 0.0), result.get("late_audio_s", 0.0)
    if late_wall > 0 and late_audio > 0:
        return late_wall * result["audio_s"] / late_audio / epochs
    first = (result.get("first_batch_s") or 0.0) - (result.get("construct_s") or 0.0)
    return (result.get("wall_s", 0.0) - max(0.0, first)) / epochs


def epochs_used(raw: list[dict[str, Any]]) -> dict[str, int]:
    """Each configuration's epochs per timed pass, from run_benchmark's raw records."""
    return {r["config"]: r["epochs"] for r in raw if not r["warmup"]}


def run_benchmark(
    ds: Dataset,
    split: str,
    configs: list[BenchConfig],
    subjects: list[Subject],
    passes: int,
    warmup: int,
    epochs: int | None,
    max_batches: int | None,
    overrides: dict[str, Any] | None = None,
    timeout: float = 900.0,
    device: str = "cpu",
    min_pass_s: float = bench_targets.MIN_PASS_S,
    dali: dict[str, Any] | None = None,
) -> tuple[list[bench_report.Row], list[dict[str, Any]]]:
    """Every configuration in turn; within one, ``warmup`` untimed rounds then ``passes``
    rounds, each round one child per subject, the order rotated by a subject a round
    (A B C, B C A, C A B). ``epochs`` None:
    the warm-up rounds run ``WARM_EPOCHS`` epochs and the last one sizes the passes
    (size_epochs)."""
    if epochs is None and warmup < 1:
        raise SystemExit("without --epochs the passes are sized by a warm-up round: --warmup 1")
    overrides = overrides or {}
    rows = {
        (c.name, s.name, s.threads): bench_report.Row(c.name, s.name, s.threads, [], [])
        for c in configs
        for s in subjects
    }
    raw: list[dict[str, Any]] = []
    total = len(configs) * (warmup + passes) * len(subjects)
    bar = tqdm(total=total, desc="benchmark", unit="run", file=sys.stderr, dynamic_ncols=True)
    for config in configs:
        single = single_pass_batches(ds, split, config, overrides) if config.mode == "train" else 0
        n = epochs or WARM_EPOCHS
        for k in range(warmup + passes):
            if k == warmup and epochs is None:
                warm = [
                    r["result"] for r in raw if r["config"] == config.name and r["round"] == k - 1
                ]
                n = size_epochs(warm, min_pass_s, WARM_EPOCHS)
                tqdm.write(f"{config.name}: {n} epoch(s) per pass", file=sys.stderr)
            cap = max_batches
            if config.mode == "train":  # it never ends: the single pass's batches × epochs
                cap = min(single * n, max_batches) if max_batches else single * n
            for subject in round_order(subjects, k):
                bar.set_postfix_str(
                    f"{config.name} {subject.name} {subject.threads or ''} "
                    f"{'warm-up' if k < warmup else f'pass {k - warmup + 1}'}"
                )
                spec = child_spec(ds, split, config, subject, cap, n, overrides, device, dali)
                result = run_child(subject, spec, timeout)
                raw.append(
                    {
                        "config": config.name,
                        "subject": subject.name,
                        "threads": subject.threads,
                        "round": k,
                        "warmup": k < warmup,
                        "epochs": n,
                        "result": result,
                    }
                )
                row = rows[(config.name, subject.name, subject.threads)]
                if "error" in result:
                    row.errors.append(result["error"])
                    tqdm.write(f"{config.name} {subject.name}: {result['error']}", file=sys.stderr)
                elif k >= warmup:
                    row.passes.append({**result, "round": k - warmup})
                bar.update()
    bar.close()
    return list(rows.values()), raw


def make_subjects(compare: list[str], threads: list[int], only: list[str] | None) -> list[Subject]:
    subjects = []
    if "reference" in compare:
        python = reference_python()
        if not python.exists():
            raise SystemExit(
                f"no reference virtualenv at {python.parent.parent}: run "
                "benchmarks/setup_reference.sh (or set REFERENCE_VENV)"
            )
        subjects.append(Subject("reference", None, str(python), HERE / "reference_child.py"))
    for t in threads:
        subjects += [Subject(n, t, sys.executable, HERE / SCRIPTS[n]) for n in NAMES]
    return [s for s in subjects if only is None or s.name in only]


def select_configs(patterns: list[str] | None) -> list[BenchConfig]:
    if not patterns:
        return list(ALL_CONFIGS)
    chosen = [c for c in ALL_CONFIGS if any(fnmatch.fnmatch(c.name, p) for p in patterns)]
    if not chosen:
        names = ", ".join(c.name for c in ALL_CONFIGS)
        raise SystemExit(f"--configs {' '.join(patterns)} matches none of: {names}")
    return chosen


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = json.loads(value)
    return out


def versions(subjects: list[Subject]) -> dict[str, str]:
    """Package versions of each python under test, read from metadata (nothing imported)."""
    out: dict[str, str] = {}
    probe = (
        "import importlib.metadata as m\nfor p in {pkgs!r}:\n    try: print(p, m.version(p))"
        "\n    except m.PackageNotFoundError: pass"
    )
    wanted = {sys.executable: ["nvidia-dali-cuda120", "nvidia-dali-cuda130", "torch", "pyarrow"]}
    for s in subjects:
        if s.name == "reference":
            wanted[s.python] = ["omnilingual-asr", "fairseq2", "fairseq2n", "torch", "pyarrow"]
    for python, pkgs in wanted.items():
        tag = "reference " if python != sys.executable else ""
        done = subprocess.run(
            [python, "-c", probe.format(pkgs=pkgs)], capture_output=True, text=True, check=False
        )
        for line in done.stdout.splitlines():
            name, version = line.split()
            out[tag + name] = version
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        choices=["reference"],
        help="also run the reference reader (needs setup_reference.sh)",
    )
    p.add_argument("--data", help="dataset folder (default: espeak-mini, else the demo data)")
    p.add_argument("--split", default="train")
    p.add_argument("--tokenizer", help="SentencePiece model (default: the dataset's own)")
    p.add_argument("--configs", nargs="+", help="names or globs, e.g. 'length/*/train'")
    p.add_argument("--subjects", nargs="+", choices=SUBJECTS)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument(
        "--epochs",
        type=int,
        help="epochs per pass (default: sized by a 2-epoch warm-up round to --min-pass-s)",
    )
    p.add_argument(
        "--min-pass-s",
        type=float,
        default=bench_targets.MIN_PASS_S,
        help="without --epochs: the fastest subject's pass lasts at least this (default 10)",
    )
    p.add_argument("--threads", type=int, nargs="+", default=[2], help="DALI CPU threads")
    p.add_argument("--max-batches", type=int, help="cap every pass at this many batches")
    p.add_argument(
        "--task",
        nargs="*",
        default=[],
        metavar="KEY=JSON",
        help="asr_task_config overrides for every loader",
    )
    p.add_argument(
        "--dali",
        nargs="*",
        default=[],
        metavar="KEY=JSON",
        help="dali-asr's dali_asr settings (default: none, the defaults); "
        "--device and --threads set device and num_threads",
    )
    p.add_argument(
        "--device", default="cpu", choices=["cpu", "gpu", "auto"], help="dali-asr's device"
    )
    p.add_argument("--timeout", type=float, default=900.0, help="per child process, seconds")
    p.add_argument(
        "--calibrate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="sha256 on 1 and 2 threads before and after, to spot a busy machine",
    )
    p.add_argument("--json", type=Path, help="write the raw results here")
    p.add_argument("--markdown-out", type=Path, help="add a RESULTS.md-style entry to this file")
    p.add_argument("--title", default="throughput against the reference")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    ds = resolve_dataset(args.data, args.tokenizer)
    subjects = make_subjects(args.compare, args.threads, args.subjects)
    configs = select_configs(args.configs)
    info: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": bench_report.machine(),
        "versions": versions(subjects),
        "dataset": ds.label,
        "split": args.split,
        "passes": args.passes,
        "warmup": args.warmup,
        "epochs": args.epochs,
        "threads": args.threads,
        "task_overrides": args.task,
        "dali_settings": args.dali,
        "calibration": {"before": bench_report.calibrate()} if args.calibrate else {},
        "source": {"before": bench_report.source_state(REPO)},
    }
    rows, raw = run_benchmark(
        ds,
        args.split,
        configs,
        subjects,
        args.passes,
        args.warmup,
        args.epochs,
        args.max_batches,
        parse_overrides(args.task),
        args.timeout,
        args.device,
        args.min_pass_s,
        parse_overrides(args.dali),
    )
    info["epochs"] = args.epochs or epochs_used(raw)
    if args.calibrate:
        info["calibration"]["after"] = bench_report.calibrate()
    info["source"]["after"] = bench_report.source_state(REPO)
    info["elapsed_s"] = time.perf_counter() - t0
    body = bench_report.table(rows)
    body += (
        f"\n\nEach subject: {args.passes} timed pass(es) of "
        f"{bench_report.describe_epochs(info['epochs'])}."
    )
    parts = bench_report.read_decode_table(rows)
    if parts:
        body += "\n\nThe read + decode ceiling's parts (process CPU; ceiling = cores / sum):\n\n"
        body += parts
    lost = bench_report.failures(rows, args.passes)
    if lost:
        body += "\n\n" + lost
    goals = bench_targets.targets(rows, max(args.threads))
    if goals.count("\n") > 1:
        body += (
            f"\n\nIssue 14's targets (dali-asr at {max(args.threads)} threads; medians over "
            f"the timed passes):\n\n{goals}"
        )
    bench_report.publish(
        "run.py", argv, info, rows, raw, body,
        json_path=args.json, markdown_path=args.markdown_out, title=args.title,
    )  # fmt: skip
    failed = [r for r in rows if not r.passes]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
