"""Operator commands of ``dali-asr``: ``stats`` and ``bucket-sizes`` (and ``tune-batch``, from
``tune_command.py``).

``register(subparsers, common)`` adds them to the ``dali-asr`` parser and returns their
handlers; text goes to standard output, logs to standard error (``dali_asr.tools.cli`` sets
logging up and maps ConfigError / DatasetError to exit code 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs

from dali_asr.batching import effective_max_num_elements
from dali_asr.config import AsrTaskConfig, LoaderConfig, load_config
from dali_asr.errors import ConfigError
from dali_asr.pipeline.cuda_env import resolve_auto_budget
from dali_asr.storage import SAMPLE_RATE
from dali_asr.storage.discovery import as_location, open_filesystem, resolve_dataset_root
from dali_asr.tools.stats import Projection, SplitData, load_splits, project, project_ranks
from dali_asr.tools.stats_tables import bucket_fill, bucket_table, length_histogram
from dali_asr.tools.tune_command import Handler, register_tune_batch

log = logging.getLogger(__name__)

BUCKET_KEYS = (
    "min_audio_len",
    "max_audio_len",
    "max_num_elements",
    "num_seqs_multiple_of",
    "max_bucket_size",
)
_BAR = 40
_MAX_BUCKET_ROWS = 64


def register(
    subparsers: argparse._SubParsersAction,
    common: Callable[[argparse.ArgumentParser, bool], None],
) -> dict[str, Handler]:
    """Add ``stats`` and ``bucket-sizes`` to ``subparsers``; return {command: handler}.

    ``common(parser, data_required)`` is cli.py's ``_common`` (--data, --split, --config,
    --tokenizer, -v). Every parser added here has ``verbose``; handlers return the exit code
    and raise ConfigError / DatasetError for usage and data errors.
    """
    stats = subparsers.add_parser(
        "stats", help="rows, hours, lengths, buckets and projected batches (no audio read)"
    )
    common(stats, False)
    for action in stats._actions:
        # Without --split, stats covers every split (the other commands default to train).
        if action.dest == "split":
            action.default = None
            action.help = "split(s), comma-separated, or <split>_<corpus> (default: every split)"
    stats.add_argument(
        "path", nargs="?", type=as_location, help="dataset root or URI (instead of --data)"
    )
    stats.add_argument(
        "--world-size", type=int, default=1, help="ranks for the batches-per-rank projection"
    )
    stats.add_argument("--plot", type=Path, metavar="DIR", help="write PNG figures to DIR")
    stats.add_argument("--full", action="store_true", help="list every bucket, however many")

    sizes = subparsers.add_parser(
        "bucket-sizes", help="the LENGTH bucket table for given settings (Omnilingual's rules)"
    )
    sizes.add_argument("--config", type=Path, help="take the settings from this config")
    for key in BUCKET_KEYS:
        sizes.add_argument(f"--{key.replace('_', '-')}", type=int, help=f"asr_task_config.{key}")
    sizes.add_argument("--full", action="store_true", help="every bucket, not run-length form")
    sizes.add_argument("--json", action="store_true", help="one JSON object (machine output)")
    sizes.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return {
        "stats": cmd_stats,
        "bucket-sizes": cmd_bucket_sizes,
        **register_tune_batch(subparsers),
    }


# --- bucket-sizes -----------------------------------------------------------------------------


def bucket_settings(args: argparse.Namespace) -> AsrTaskConfig:
    """The config's asr_task_config (or the defaults) with the given flags applied
    (``max_num_elements: auto`` resolved for this machine)."""
    config = load_config(args.config) if args.config else LoaderConfig()
    task = config.asr_task_config
    resolve_auto_budget(task, config.dali_asr.device, config.dali_asr.device_id)
    for key in BUCKET_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            setattr(task, key, value)
    return task


def bucket_runs(sizes: list[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """Consecutive buckets of equal size as ``(size, first_len, last_len, count)``."""
    runs: list[tuple[int, int, int, int]] = []
    for size, length in sizes:
        if runs and runs[-1][0] == size:
            runs[-1] = (size, runs[-1][1], length, runs[-1][3] + 1)
        else:
            runs.append((size, length, length, 1))
    return runs


def format_run(size: int, first: int, last: int, count: int) -> str:
    """``size: first_len..last_len (#buckets)``, the reference document's notation."""
    span = f"{first}..{last}" if count > 1 else f"{first}"
    return f"{size}: {span} ({count})"


def bucket_report(task: AsrTaskConfig) -> dict:
    """The table and the budget round-down as a JSON-ready dict."""
    try:
        sizes = task.length_buckets()
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return {
        "min_audio_len": task.min_audio_len,
        "max_audio_len": task.max_audio_len,
        "max_num_elements_requested": task.max_num_elements,
        "max_num_elements_effective": effective_max_num_elements(
            task.max_num_elements, task.max_audio_len
        ),
        "num_seqs_multiple_of": task.num_seqs_multiple_of,
        "max_bucket_size": task.max_bucket_size,
        "count": len(sizes),
        "buckets": [list(b) for b in sizes],
        "runs": [list(r) for r in bucket_runs(sizes)],
    }


def _seconds(samples: float) -> str:
    return f"{samples / SAMPLE_RATE:.2f} s"


def render_bucket_report(report: dict, full: bool) -> str:
    """Text form of ``bucket_report``: settings, round-down, runs or every bucket."""
    requested = report["max_num_elements_requested"]
    effective = report["max_num_elements_effective"]
    max_len = report["max_audio_len"]
    budget = (
        f"{requested} (a multiple of max_audio_len: used as is)"
        if requested == effective
        else f"{requested} requested -> {effective} effective "
        f"(rounded down to {effective // max_len} x max_audio_len, as Omnilingual does)"
    )
    sizes = report["buckets"]
    lines = [
        f"min_audio_len         {report['min_audio_len']} ({_seconds(report['min_audio_len'])})",
        f"max_audio_len         {max_len} ({_seconds(max_len)})",
        f"max_num_elements      {budget}",
        f"num_seqs_multiple_of  {report['num_seqs_multiple_of']}",
        f"max_bucket_size       {report['max_bucket_size'] or 'none'}",
        f"buckets               {report['count']} (sum of sizes {sum(s for s, _ in sizes)}, "
        f"sum of lengths {sum(n for _, n in sizes)})",
    ]
    if full:
        lines.append(f"{'bucket':>6} {'size':>6} {'max len':>9} {'max s':>7} {'size x len':>11}")
        for i, (size, length) in enumerate(sizes):
            lines.append(
                f"{i:>6} {size:>6} {length:>9} {length / SAMPLE_RATE:>7.2f} {size * length:>11}"
            )
    else:
        lines.append("size: first_len..last_len (#buckets)")
        lines += [format_run(*run) for run in report["runs"]]
    return "\n".join(lines)


def cmd_bucket_sizes(args: argparse.Namespace) -> int:
    """``dali-asr bucket-sizes``: print the bucket table (text or JSON)."""
    report = bucket_report(bucket_settings(args))
    if args.json:
        print(json.dumps(report))
    else:
        print(render_bucket_report(report, args.full))
    return 0


# --- stats ------------------------------------------------------------------------------------


def _dataset_path(args: argparse.Namespace) -> Path | str:
    if args.data is not None and args.path is not None and args.data != args.path:
        raise ConfigError(f"two dataset paths given: --data {args.data} and {args.path}")
    path = args.data if args.data is not None else args.path
    if path is None:
        raise ConfigError("stats needs the dataset path: dali-asr stats PATH (or --data PATH)")
    return path


def cmd_stats(args: argparse.Namespace) -> int:
    """``dali-asr stats``: per split, rows and hours, lengths, buckets and the projection."""
    if args.world_size < 1:
        raise ConfigError(f"--world-size must be >= 1, got {args.world_size}")
    if args.plot is not None:
        from dali_asr.tools.stats_plots import require_matplotlib

        require_matplotlib()  # fail before reading a large dataset, not after
    config = load_config(args.config)
    resolve_auto_budget(config.asr_task_config, config.dali_asr.device, config.dali_asr.device_id)
    path = _dataset_path(args)
    fs, inside = open_filesystem(path)
    filesystem = None if isinstance(fs, pafs.LocalFileSystem) else fs
    root = resolve_dataset_root(inside, filesystem)
    tokenizer = None
    if args.tokenizer is not None:
        from dali_asr.text import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer, None)
    splits = [s.strip() for s in args.split.split(",") if s.strip()] if args.split else None
    datasets = load_splits(root, splits, config, filesystem, tokenizer)
    out = sys.stdout
    for data in datasets:
        whole = project(data, config)
        ranks = project_ranks(data, config, args.world_size)
        print(render_split(data, config, whole, ranks, args.full), file=out)
        if args.plot is not None:
            from dali_asr.tools.stats_plots import write_plots

            for written in write_plots(data, config, whole, args.plot):
                log.info("wrote %s", written)
    if len(datasets) > 1:
        print(render_totals(datasets), file=out)
    return 0


def render_split(
    data: SplitData,
    config: LoaderConfig,
    whole: Projection,
    ranks: list[Projection],
    full: bool = False,
) -> str:
    """The text report of one split."""
    parts = [
        f"== split {data.name}: {len(data.files)} files, {data.group_rows.size} row groups, "
        f"{data.num_rows} rows, {data.hours:.3f} h ==",
        render_partitions(data),
        render_lengths(data.lengths),
    ]
    sizes = bucket_table(config.asr_task_config)
    if sizes is not None:
        parts.append(render_buckets(sizes, whole, config.asr_task_config.min_audio_len, full))
    parts.append(render_projection(data, config, whole, ranks))
    return "\n\n".join(parts) + "\n"


def render_partitions(data: SplitData) -> str:
    """Rows and hours per corpus and language."""
    rows = [f"{'corpus':<16} {'language':<10} {'files':>6} {'rows':>9} {'hours':>9} {'mean s':>7}"]
    for corpus, language, files, n, samples in data.partitions():
        mean = samples / n / SAMPLE_RATE if n else 0.0
        rows.append(
            f"{corpus:<16} {language:<10} {files:>6} {n:>9} "
            f"{samples / SAMPLE_RATE / 3600:>9.3f} {mean:>7.2f}"
        )
    mean = data.lengths.mean() / SAMPLE_RATE if data.num_rows else 0.0
    rows.append(
        f"{'all':<27} {len(data.files):>6} {data.num_rows:>9} {data.hours:>9.3f} {mean:>7.2f}"
    )
    return "\n".join(rows)


def render_lengths(lengths: np.ndarray) -> str:
    """Percentiles and a text histogram of the lengths, in seconds."""
    if lengths.size == 0:
        return "lengths: no rows"
    seconds = lengths / SAMPLE_RATE
    p50, p90, p99 = np.percentile(seconds, [50, 90, 99])
    lines = [
        f"lengths (s): min {seconds.min():.2f}  p50 {p50:.2f}  p90 {p90:.2f}  p99 {p99:.2f}  "
        f"max {seconds.max():.2f}  mean {seconds.mean():.2f}"
    ]
    edges, counts = length_histogram(lengths)
    top = max(1, int(counts.max()))
    digits = 0 if edges[1] - edges[0] >= 1 else 1
    for lo, hi, n in zip(edges[:-1], edges[1:], counts.tolist(), strict=True):
        bar = "#" * round(_BAR * n / top)
        span = f"{lo:.{digits}f}-{hi:.{digits}f} s"
        lines.append(f"{span:>13} {bar:<{_BAR}} {n:>9} {100 * n / lengths.size:5.1f}%")
    return "\n".join(lines)


def render_buckets(
    sizes: list[tuple[int, int]], whole: Projection, min_len: int, full: bool = False
) -> str:
    """Per bucket (runs of equal batch size when there are many): length bound, batch size,
    examples, and the batches whose longest example falls in it, with their padding."""
    fill = bucket_fill(sizes, whole, min_len)
    groups = fill.groups(full)
    lines = [f"LENGTH buckets: {len(sizes)}"]
    if groups and not full and (groups[0].first > 0 or groups[-1].last < len(sizes) - 1):
        lines[0] += (
            f"; buckets {groups[0].first}..{groups[-1].last} hold the data"
            " (--full lists every bucket)"
        )
    lines.append(
        f"{'bucket':>11} {'lengths':>17} {'max s':>7} {'batch size':>10} {'examples':>9} "
        f"{'batches':>8} {'padding':>8}"
    )
    for g in groups:
        index = f"{g.first}" if g.first == g.last else f"{g.first}..{g.last}"
        bound = sizes[g.last][1]
        lens = f"{bound}" if g.first == g.last else f"{sizes[g.first][1]}..{bound}"
        eff = g.padding_efficiency
        lines.append(
            f"{index:>11} {lens:>17} {bound / SAMPLE_RATE:>7.2f} {g.batch_size:>10} "
            f"{g.examples:>9} {g.batches:>8} {'-' if eff is None else f'{eff:.3f}':>8}"
        )
    return "\n".join(lines)


def _per_rank(counts: list[int]) -> str:
    if len(counts) <= 16:
        listed = " ".join(map(str, counts))
    else:
        tally = sorted(Counter(counts).items())
        listed = ", ".join(f"{n} batches x {k} ranks" for n, k in tally)
    return f"{listed} (min {min(counts)}, max {max(counts)})"


def render_projection(
    data: SplitData, config: LoaderConfig, whole: Projection, ranks: list[Projection]
) -> str:
    """Kept examples, batches, padding efficiency and batches per rank."""
    task = config.asr_task_config
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(whole.skipped.items())) or "none skipped"
    mean = whole.sizes.mean() if whole.num_batches else 0.0
    lines = [
        f"projection: the loader's single-pass plan ({task.batching_strategy.value}, "
        f"example_shuffle_window {task.example_shuffle_window}), world size 1",
        f"  examples kept       {int(whole.sizes.sum())} of {data.num_rows} ({skipped})",
        f"  batches             {whole.num_batches} (mean size {mean:.1f}, "
        f"max {int(whole.sizes.max()) if whole.num_batches else 0})",
        f"  padding efficiency  {whole.padding_efficiency:.3f} "
        "(sum of lengths / sum of batch size x longest)",
    ]
    if len(ranks) > 1:
        padded = sum(int(p.padded.sum()) for p in ranks)
        merged = sum(int(p.real.sum()) for p in ranks) / padded if padded else 1.0
        lines.append(
            f"  world size {len(ranks)}: batches per rank "
            f"{_per_rank([p.num_batches for p in ranks])}; padding efficiency {merged:.3f}"
        )
    storage = config.mixture_parquet_storage_config
    if storage.makes_training_stream(data.name):
        lines.append(
            f"  note: {data.name} is a training stream (sync_mode UNTIL_FIRST), an endless "
            "weighted mixture; this is one pass over its rows in path order"
        )
    return "\n".join(lines)


def render_totals(datasets: list[SplitData]) -> str:
    """Hours per split and in total."""
    lines = ["== hours per split ==", f"{'split':<16} {'files':>6} {'rows':>9} {'hours':>9}"]
    for d in datasets:
        lines.append(f"{d.name:<16} {len(d.files):>6} {d.num_rows:>9} {d.hours:>9.3f}")
    lines.append(
        f"{'total':<16} {sum(len(d.files) for d in datasets):>6} "
        f"{sum(d.num_rows for d in datasets):>9} {sum(d.hours for d in datasets):>9.3f}"
    )
    return "\n".join(lines)
