"""The ``dali-asr`` command: ``plan``, ``run``, ``demo``, ``stats`` and ``bucket-sizes``.

Standard output carries only the command's data; logs, warnings, counters and progress bars go
to standard error. Exit 0 when the run completed (skips included), 2 for a usage or config
error, 1 when it could not complete.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dali_asr.config import LoaderConfig, config_from_dict, load_config
from dali_asr.errors import ConfigError, DatasetError
from dali_asr.storage.discovery import as_location

log = logging.getLogger("dali_asr")

DEMO_TASK = {
    "min_audio_len": 16_000,
    "max_audio_len": 480_000,
    "max_num_elements": 960_000,
    "num_seqs_multiple_of": 8,
    "example_shuffle_window": 1,
    "batch_shuffle_window": 1,
}


def _common(p: argparse.ArgumentParser, data_required: bool = True) -> None:
    p.add_argument(
        "--data",
        required=data_required,
        type=as_location,
        help="dataset root (holding corpus=... folders, or one version=* folder): a local "
        "folder or a URI (s3://bucket/folder, gs://..., hdfs://...)",
    )
    p.add_argument("--split", default="train", help="split, or <split>_<corpus> (default train)")
    p.add_argument(
        "--config",
        type=Path,
        help="YAML: asr_task_config / "
        "mixture_parquet_storage_config / dali_asr sections, or an Omnilingual recipe",
    )
    p.add_argument(
        "--tokenizer",
        type=Path,
        help="SentencePiece model (default: a character vocabulary built from the dataset's text)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The parser, and the handlers of the operator tools (stats, bucket-sizes)."""
    from dali_asr.tools.commands import register

    parser = argparse.ArgumentParser(prog="dali-asr", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="print the batch plan as JSON lines (no audio decoded)")
    _common(plan)
    plan.add_argument("--max-batches", type=int, help="stop after N batches")
    plan.add_argument(
        "--rank", type=int, help="this rank's plan (default: 0, or torch.distributed)"
    )
    plan.add_argument("--world-size", type=int, help="number of ranks")
    plan.add_argument("--save-state", type=Path, help="write the state after the printed batches")
    plan.add_argument(
        "--load-state",
        type=Path,
        nargs="+",
        help="continue from a saved state; a training stream saved with another --world-size: "
        "every rank's state file (elastic resume)",
    )
    run = sub.add_parser("run", help="iterate the real loader and print a summary")
    _common(run)
    _run_options(run)
    demo = sub.add_parser("demo", help="build the demo dataset and run the loader on it")
    _common(demo, data_required=False)
    _run_options(demo)
    demo.add_argument(
        "--out",
        type=Path,
        help="where to build the demo dataset (default: $XDG_CACHE_HOME/dali-asr/demo)",
    )
    demo.add_argument("--seed", type=int, default=2026, help="demo dataset seed")
    tools = register(sub, _common)
    return parser, tools


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=1, help="passes over the split (default 1)")
    p.add_argument("--max-batches", type=int, help="stop after N batches in all")
    p.add_argument(
        "--dump-batches",
        type=Path,
        help="write one JSON line per batch (keys, shapes, sums) to this file",
    )


def main(argv: list[str] | None = None) -> int:
    parser, tools = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "plan":
            return cmd_plan(args)
        if args.command == "run":
            return cmd_run(args, _config(args.config))
        if args.command in tools:
            return tools[args.command](args)
        return cmd_demo(args)
    except RunFailed as e:
        cause = e.__cause__ or e
        log.debug("failure", exc_info=True)
        print(f"dali-asr: failed: {type(cause).__name__}: {_one_line(cause)}", file=sys.stderr)
        return 1
    except (ConfigError, DatasetError, FileNotFoundError) as e:
        print(f"dali-asr: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dali-asr: interrupted", file=sys.stderr)
        return 1
    except Exception as e:
        log.debug("failure", exc_info=True)
        print(f"dali-asr: failed: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return 1


class RunFailed(Exception):
    """A dataset or config error raised after start-up, while the command ran (a file that
    became unreadable, say): the run could not complete, exit 1, not a usage error's 2."""


@contextmanager
def _running() -> Iterator[None]:
    """The part of a command after start-up: its dataset and config errors are failures."""
    try:
        yield
    except (ConfigError, DatasetError, FileNotFoundError) as e:
        raise RunFailed(str(e)) from e


def _one_line(e: BaseException) -> str:
    """The message on one line (pyarrow's messages span several)."""
    return " ".join(str(e).split())


def _config(path: Path | None) -> LoaderConfig:
    return load_config(path)


def _loader(
    args: argparse.Namespace,
    config: LoaderConfig,
    rank: int | None = None,
    world_size: int | None = None,
):
    from dali_asr.loader import AsrLoader

    # the command owns its process: pyarrow's pools are sized as the reference sizes them
    loader = AsrLoader(
        args.data, args.split, config, args.tokenizer, rank, world_size, size_pyarrow_pools=True
    )
    loader.report.on_skip = _print_skip
    return loader


def _print_skip(key, reason: str) -> None:
    """One line per skipped example on standard error (counts of keyless skips too)."""
    where = str(key) if key is not None else "-"
    print(f"skipped {where} {reason}", file=sys.stderr)


def cmd_plan(args: argparse.Namespace) -> int:
    loader = _loader(args, _config(args.config), args.rank, args.world_size)
    if args.load_state is not None:
        loader.load_state_dict([json.loads(p.read_text(encoding="utf-8")) for p in args.load_state])
    files = loader.files.files
    out = sys.stdout
    first = loader.next_plan_index
    plan = loader.plan()
    with _running():
        for i, batch in enumerate(plan, start=first):
            if args.max_batches is not None and i - first >= args.max_batches:
                break
            examples = []
            for ex in batch:
                f = files[ex.file_index]
                examples.append(
                    {
                        "corpus": f.corpus,
                        "language": f.language,
                        "split": f.split,
                        "file": f.rel,
                        "row_group": ex.row_group,
                        "row": ex.row,
                        "audio_size": ex.audio_size,
                        "text": ex.text,
                    }
                )
            out.write(json.dumps({"batch": i, "examples": examples}, ensure_ascii=False) + "\n")
            if args.max_batches is not None and i - first + 1 == args.max_batches:
                break  # the state must be taken right after the last printed batch
        out.flush()
        state = loader.plan_state() if args.save_state is not None else None
    if args.save_state is not None:
        args.save_state.write_text(json.dumps(state), encoding="utf-8")
    plan.close()
    print(loader.report.summary(), file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace, config: LoaderConfig) -> int:
    from tqdm import tqdm

    loader = _loader(args, config)
    if loader.endless and args.max_batches is None:
        raise ConfigError(
            f"split {args.split!r} is an endless training stream: give --max-batches N "
            "(or set mixture_parquet_storage_config.sync_mode: UNTIL_LAST for one pass)"
        )
    dump, count = None, 0
    try:
        dump = open(args.dump_batches, "w", encoding="utf-8") if args.dump_batches else None  # noqa: SIM115
        with _running():
            if loader.endless:
                total = args.max_batches
            else:
                # a metadata pass over the split: it reads every row group's text and lengths
                total = len(loader) * args.epochs
                if args.max_batches is not None:
                    total = min(total, args.max_batches)
            start = time.perf_counter()
            with tqdm(total=total, unit="batch", file=sys.stderr, disable=None) as bar:
                for _ in range(args.epochs):
                    for batch in loader:
                        if dump is not None:
                            dump.write(json.dumps(_dump_record(count, batch)) + "\n")
                        count += 1
                        bar.update(1)
                        if count == total:
                            break  # before the loader makes one more
                    if count == total:
                        break
    finally:
        loader.close()
        if dump is not None:
            dump.close()
    print_summary(time.perf_counter() - start, loader.telemetry.as_dict(), sys.stdout)
    print(loader.report.summary(), file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dali_asr.tools.demo_data import make_demo_dataset

    if args.data is None:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        out = args.out or cache / "dali-asr" / "demo"
        args.data = make_demo_dataset(out, seed=args.seed)
        log.info("demo dataset at %s", args.data)
    if args.config is not None:
        config = load_config(args.config)
    else:
        config = config_from_dict(
            {
                "asr_task_config": DEMO_TASK,
                "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
            }
        )
    return cmd_run(args, config)


def _dump_record(index: int, batch) -> dict:
    """Float64 sums over the unpadded source values, for batch-by-batch comparisons."""
    import torch

    total = 0.0
    total_abs = 0.0
    for row, n in zip(batch.source_seqs, batch.source_seq_lens.tolist(), strict=True):
        values = row[:n].to(torch.float64)
        total += float(values.sum())
        total_abs += float(values.abs().sum())
    return {
        "batch": index,
        "keys": [k.as_dict() for k in batch.keys],
        "source_shape": list(batch.source_seqs.shape),
        "source_seq_lens": batch.source_seq_lens.tolist(),
        "source_sum": total,
        "source_abs_sum": total_abs,
        # only on a filler (a stand-in for an all-bad batch on one of several ranks)
        **({"filler": True} if batch.filler else {}),
    }


def print_summary(seconds: float, telemetry: dict, out) -> None:
    """The summary of ``run`` and ``demo``, from the loader's telemetry: what the training loop
    received (audio seconds from the planned ``audio_size``, on the fbank path too)."""
    audio_s = telemetry["audio_hours"] * 3600
    lines = [
        f"batches            {telemetry['batches']}",
        f"examples           {telemetry['examples']}",
        f"audio hours        {telemetry['audio_hours']:.3f}",
        f"padding efficiency {telemetry['audio_padding_efficiency']:.3f}",
        f"audio s per s      {audio_s / seconds if seconds else 0.0:.0f}",
        f"wall seconds       {seconds:.2f}",
        # how long the loop waited for batches: the loader's share of the wall time
        f"loader stalls      {telemetry['stall_s']:.2f} s "
        f"(first batch {telemetry['first_wait_s']:.2f} s)",
        "languages (share of examples):",
    ]
    shares = telemetry["shares"]["language"]
    seen = [(name, row["examples"]) for name, row in shares.items() if row["examples"] > 0]
    for name, share in sorted(seen, key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {name:<10} {share:.3f}")
    print("\n".join(lines), file=out)


if __name__ == "__main__":
    sys.exit(main())
