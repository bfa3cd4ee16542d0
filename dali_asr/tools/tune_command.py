"""``dali-asr tune-batch``: the largest ``max_num_elements`` a model's forward and backward fit
on this GPU (``tune.py``), or the ``auto`` rule where there is no GPU; the result table, then
the YAML line to paste."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from dali_asr.config import load_config
from dali_asr.errors import ConfigError

Handler = Callable[[argparse.Namespace], int]


def register_tune_batch(subparsers: argparse._SubParsersAction) -> dict[str, Handler]:
    """Add ``tune-batch`` to ``subparsers``; return {"tune-batch": handler}."""
    tune = subparsers.add_parser(
        "tune-batch",
        help="measure the largest max_num_elements that fits the GPU (on the CPU: the auto rule)",
    )
    tune.add_argument(
        "--config",
        type=Path,
        help="take max_audio_len, min_audio_len, num_seqs_multiple_of, max_bucket_size, "
        "use_fbank and dtype from this config",
    )
    tune.add_argument(
        "--model",
        metavar="MODULE:CALLABLE",
        help="zero-argument factory of an nn.Module called as model(source_seqs, "
        "source_padding_mask) (default: a small built-in conformer-like stand-in)",
    )
    tune.add_argument(
        "--margin", type=float, default=0.1, help="share of the largest fitting N left free"
    )
    tune.add_argument("--device", help="torch device (default: the config's, else cuda if any)")
    tune.add_argument("--max-audio-len", type=int, help="override asr_task_config.max_audio_len")
    tune.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return {"tune-batch": cmd_tune_batch}


def cmd_tune_batch(args: argparse.Namespace) -> int:
    """``dali-asr tune-batch``: the result table, then the YAML line to paste."""
    import torch

    from dali_asr.tools.tune import model_from_path, tune_max_num_elements

    config = load_config(args.config)
    task, settings = config.asr_task_config, config.dali_asr
    if args.max_audio_len is not None:
        task.max_audio_len = args.max_audio_len
    if task.max_audio_len < 1:
        raise ConfigError(f"max_audio_len must be >= 1, got {task.max_audio_len}")
    if not 0 <= args.margin < 1:
        raise ConfigError(f"--margin must be in [0, 1), got {args.margin}")
    device = args.device
    if device is None and settings.device == "cpu":
        device = "cpu"
    elif device is None and settings.device_id is not None:
        device = f"cuda:{settings.device_id}"
    try:
        model = model_from_path(args.model) if args.model else None
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"--model {args.model}: {e}") from e
    result = tune_max_num_elements(
        model,
        max_audio_len=task.max_audio_len,
        num_seqs_multiple_of=task.num_seqs_multiple_of,
        device=device,
        feature="fbank" if task.use_fbank else "waveform",
        dtype=getattr(torch, config.output_dtype),
        margin=args.margin,
        min_audio_len=task.min_audio_len,
        max_bucket_size=task.max_bucket_size,
    )
    print(result.render())
    print()
    print(result.yaml_line)
    return 1 if result.measured and result.largest_fitting is None else 0
