"""Ranks: torchrun with two CPU processes (gloo), equal batch counts by construction, and
elastic resume of a single pass (a state saved with N ranks loads with M; the training
stream's is in test_elastic.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import torchrun_two_ranks

from dali_asr.config import config_from_dict
from dali_asr.loader import AsrLoader

TASK = {"min_audio_len": 16_000, "max_audio_len": 480_000, "max_num_elements": 960_000}


def config(shuffle: bool = False, strategy: str = "LENGTH"):
    return config_from_dict(config_doc(shuffle, strategy))


def config_doc(shuffle: bool = False, strategy: str = "LENGTH") -> dict:
    return {
        "asr_task_config": {
            **TASK,
            "batching_strategy": strategy,
            "batch_size": 8,
            "example_shuffle_window": 40 if shuffle else 1,
            "batch_shuffle_window": 3 if shuffle else 1,
        },
        "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
        "dali_asr": {"state_every": 3},
    }


def test_torchrun_two_processes(small_dataset: Path, espeak_tokenizer: Path, tmp_path) -> None:
    ranks = torchrun_two_ranks(small_dataset, espeak_tokenizer, tmp_path, config_doc())
    assert [r["world_size"] for r in ranks] == [2, 2]
    counts = [len(r["batches"]) for r in ranks]
    assert counts[0] == counts[1] == ranks[0]["len"] == ranks[1]["len"]
    got = [k for r in ranks for b in r["batches"] for k in b]
    whole = [
        str(k)
        for b in AsrLoader(small_dataset, "train", config(), espeak_tokenizer)
        for k in b.keys
    ]
    assert len(got) == len(set(got)) and sorted(got) == sorted(whole)


@pytest.mark.parametrize("world_size", [2, 3, 4, 7])
@pytest.mark.parametrize("strategy", ["LENGTH", "STATIC"])
def test_equal_counts_nothing_cut(small_dataset, espeak_tokenizer, world_size, strategy):
    cfg = config(strategy=strategy)
    whole = sorted(
        str(k)
        for b in AsrLoader(small_dataset, "train", cfg, espeak_tokenizer).plan()
        for k in [(e.file_index, e.row_group, e.row) for e in b]
    )
    plans = []
    for rank in range(world_size):
        loader = AsrLoader(small_dataset, "train", cfg, espeak_tokenizer, rank, world_size)
        plans.append([[(e.file_index, e.row_group, e.row) for e in b] for b in loader.plan()])
        assert len(plans[-1]) == len(loader)
    assert len({len(p) for p in plans}) == 1
    got = sorted(str(k) for p in plans for b in p for k in b)
    assert got == whole


def _consume(loaders, batches_each):
    """Every rank takes the same number of batches (lockstep), as DDP does."""
    got, iters = [], [iter(x) for x in loaders]
    for _ in range(batches_each):
        for it in iters:
            got.extend(str(k) for k in next(it).keys)
    return got


@pytest.mark.parametrize(("before", "after"), [(2, 3), (4, 2)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_elastic_resume(small_dataset, espeak_tokenizer, before, after, shuffle) -> None:
    cfg = config(shuffle)
    whole = [
        str(k) for b in AsrLoader(small_dataset, "train", cfg, espeak_tokenizer) for k in b.keys
    ]
    old = [
        AsrLoader(small_dataset, "train", cfg, espeak_tokenizer, r, before) for r in range(before)
    ]
    first = _consume(old, 2)
    state = json.loads(json.dumps(old[1].state_dict()))  # any rank's state: it is global
    for x in old:
        x.close()
    new = [AsrLoader(small_dataset, "train", cfg, espeak_tokenizer, r, after) for r in range(after)]
    for x in new:
        x.load_state_dict(state)
    rest = [str(k) for x in new for b in x for k in b.keys]
    assert len(first) + len(rest) == len(whole)
    assert sorted(first + rest) == sorted(whole)  # every example exactly once
