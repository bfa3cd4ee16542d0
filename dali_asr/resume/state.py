"""Resume state: what ``AsrLoader.state_dict()`` holds and how it is checked on load.

The state is small and holds no audio: the epoch, how many batches of the epoch's plan the
training loop has received, and the plan's saved state (positions, RNG states, the keys of the
examples waiting in shuffles and buckets) at the last batch that carried one (every
``dali_asr.state_every`` batches); restoring loads that and replays the few batches after it
from metadata, without reading audio. A fingerprint of the dataset (files, row groups) and of
every setting that shapes the plan makes loading it elsewhere an error that says what changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, TypedDict

from dali_asr.config import LoaderConfig
from dali_asr.errors import ConfigError
from dali_asr.planning.epoch_plan import Resume
from dali_asr.planning.planners import ChainedState, PlanState

FORMAT_VERSION = 2

# Why an older state cannot be read, by its version.
_OLD_FORMATS = {
    1: " (version 1 predates elastic resume of training streams, whose row-group positions "
    "it cannot express: resume with the dali-asr that saved it, or start afresh)",
}


class DatasetFingerprint(TypedDict):
    files: int
    row_groups: int
    sha256: str


class _SavedState(TypedDict):
    """The keys every saved state has (``LoaderState`` adds the optional ones)."""

    format_version: int
    epoch: int
    """The epoch's number, from 1."""
    epoch_finished: bool
    consumed: int
    """Batches of the epoch's plan the training loop has received (all ranks' of a dealt pass)."""
    state_at: int
    """How many batches into the plan ``plan_state`` was taken."""
    plan_state: PlanState | ChainedState | None
    """The planner's ``state_dict()`` then; None: the epoch's start."""
    dataset: DatasetFingerprint
    config: dict[str, Any]
    """``plan_config``: every setting that shapes the plan, with the rank and world size."""
    carry: dict[str, Any] | None
    """The RNG states the epoch started from (the previous epoch's ``carry()``)."""
    skipped: dict[str, int]
    """Examples skipped so far, by reason (``SkipReport.counts``)."""


class LoaderState(_SavedState, total=False):
    """``AsrLoader.state_dict()``: a plain JSON-serialisable dict of these keys; every key
    but the last is required (``check_compatible``)."""

    bad_examples: dict[str, str]
    """Examples whose audio proved bad, reason by key (``report.KnownBad``); states saved
    before it existed load without it."""


def loader_state(
    epoch: int,
    finished: bool,
    point: Resume | None,
    carry: dict[str, Any] | None,
    dataset: DatasetFingerprint,
    config: dict[str, Any],
    skipped: dict[str, int],
    bad_examples: dict[str, str],
) -> LoaderState:
    """The loader's state at ``point`` (None: nothing consumed) of epoch ``epoch``."""
    return {
        "format_version": FORMAT_VERSION,
        "epoch": max(epoch, 1),
        "epoch_finished": finished,
        "consumed": point.at + point.skip if point else 0,
        "state_at": point.at if point else 0,
        "plan_state": point.state if point else None,
        "dataset": dataset,
        "config": config,
        "carry": carry,
        "skipped": skipped,
        "bad_examples": bad_examples,
    }


def resume_point(state: LoaderState) -> Resume | None:
    """Where an unfinished epoch of ``state`` continues; None when the epoch had ended."""
    if state["epoch_finished"]:
        return None
    at = int(state["state_at"])
    return Resume(at, state["plan_state"], int(state["consumed"]) - at)


# dali_asr settings that change the plan (the rest only change how batches are computed).
_PLAN_SETTINGS = ("sort_window", "reference_train_stream")


def plan_config(
    config: LoaderConfig, split: str, rank: int, world_size: int, tokenizer: str
) -> dict[str, Any]:
    """Every setting that shapes the plan, flattened to dotted keys (for diffs), and the
    tokenizer's ``fingerprint()``."""
    flat: dict[str, Any] = {
        "split": split,
        "rank": rank,
        "world_size": world_size,
        "tokenizer": tokenizer,
    }
    _flatten("asr_task_config", dataclasses.asdict(config.asr_task_config), flat)
    storage = dataclasses.asdict(config.mixture_parquet_storage_config)
    storage.pop("fragment_loading", None)  # read-ahead and caching: same plan either way
    _flatten("mixture_parquet_storage_config", storage, flat)
    for key in _PLAN_SETTINGS:
        flat[f"dali_asr.{key}"] = getattr(config.dali_asr, key)
    for key in ("asr_task_config.num_prefetch", "asr_task_config.npc"):
        flat.pop(key, None)
    return {k: _plain(v) for k, v in flat.items()}


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    else:
        out[prefix] = value


def _plain(value: Any) -> Any:
    if hasattr(value, "value"):  # enums
        return value.value
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def dataset_fingerprint(files, row_groups) -> DatasetFingerprint:
    """Files (relative paths) and row-group sizes: what the plan's keys refer to."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.rel.encode() + b"\0")
    for r in row_groups:
        digest.update(f"{r.file_index}:{r.row_group}:{r.num_rows};".encode())
    return {"files": len(files), "row_groups": len(row_groups), "sha256": digest.hexdigest()}


def check_compatible(saved: Any, dataset: DatasetFingerprint, config: dict[str, Any]) -> None:
    """Raise ConfigError naming what is wrong with a saved state for this loader: not a
    state, another format version, a missing key, another dataset or other settings. Rank
    and world size may differ: which rank continues from which state is
    ``dali_asr.resume.elastic``'s."""
    if not isinstance(saved, dict):
        raise ConfigError(
            f"resume state must be a dict (AsrLoader.state_dict()), got {type(saved).__name__}"
        )
    version = saved.get("format_version")
    if version != FORMAT_VERSION:
        raise ConfigError(
            f"resume state has format version {version!r}; this dali-asr reads version "
            f"{FORMAT_VERSION}"
            + (_OLD_FORMATS.get(version, "") if isinstance(version, int) else "")
        )
    missing = [k for k in LoaderState.__required_keys__ if k not in saved]
    if missing:
        raise ConfigError(f"resume state lacks the keys {missing}: is it AsrLoader.state_dict()?")
    # settings first: another split or partition filter also changes the files, and the
    # setting says why
    keys = (set(saved["config"]) | set(config)) - {"rank", "world_size"}
    if "tokenizer" not in saved["config"]:
        keys.discard("tokenizer")  # saved before dali-asr recorded it: nothing to compare
    changed = sorted(k for k in keys if saved["config"].get(k) != config.get(k))
    if changed:
        detail = ", ".join(f"{k}: {saved['config'].get(k)!r} -> {config.get(k)!r}" for k in changed)
        raise ConfigError(f"resume state was saved with other settings: {detail}")
    old = saved["dataset"]
    if old != dataset:
        raise ConfigError(
            "resume state was saved on another dataset: "
            f"{old['files']} files / {old['row_groups']} row groups then, "
            f"{dataset['files']} / {dataset['row_groups']} now"
            + ("" if old["files"] != dataset["files"] else " (same counts, other contents)")
        )
