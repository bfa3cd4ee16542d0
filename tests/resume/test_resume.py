"""Exact resume: stop anywhere, save the state (JSON), load it into a new loader: the batches
that follow are exactly those of the uninterrupted run."""

from __future__ import annotations

import json
import random
from itertools import islice
from pathlib import Path

import pytest
import torch

from dali_asr.config import config_from_dict
from dali_asr.errors import ConfigError
from dali_asr.loader import AsrLoader

TASK = {
    "min_audio_len": 16_000,
    "max_audio_len": 480_000,
    "max_num_elements": 960_000,
    "num_seqs_multiple_of": 8,
}


def make_config(root: Path, strategy: str, train: bool, shuffle: bool, sort_window: int = 1000):
    task = {
        **TASK,
        "batching_strategy": strategy,
        "batch_size": 8,
        "example_shuffle_window": 50 if shuffle else 1,
        "batch_shuffle_window": 5 if shuffle else 1,
    }
    if train:
        task["max_num_batches"] = 40
        storage = {
            "dataset_summary_path": str(root.parent / "language_distribution_0.tsv"),
            "beta_corpus": 0.5,
            "beta_language": 0.5,
        }
    else:
        storage = {"sync_mode": "UNTIL_LAST"}
    return config_from_dict(
        {
            "asr_task_config": task,
            "mixture_parquet_storage_config": storage,
            "dali_asr": {"state_every": 4, "sort_window": sort_window},
        }
    )


def fingerprint(batch) -> tuple:
    return (tuple(map(str, batch.keys)), round(float(batch.source_seqs.double().sum()), 4))


@pytest.mark.parametrize("strategy", ["LENGTH", "STATIC"])
@pytest.mark.parametrize("train", [False, True], ids=["single_pass", "train_stream"])
@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
def test_kill_and_resume_equals_the_uninterrupted_run(
    small_dataset: Path, espeak_tokenizer: Path, strategy: str, train: bool, shuffle: bool
) -> None:
    config = make_config(small_dataset, strategy, train, shuffle)
    whole = [fingerprint(b) for b in AsrLoader(small_dataset, "train", config, espeak_tokenizer)]
    assert len(whole) >= 10
    for stop in random.Random(len(whole)).sample(range(1, len(whole)), 3):
        first = AsrLoader(small_dataset, "train", config, espeak_tokenizer)
        before = [fingerprint(b) for b in islice(iter(first), stop)]
        state = json.loads(json.dumps(first.state_dict()))
        first.close()
        second = AsrLoader(small_dataset, "train", config, espeak_tokenizer)
        second.load_state_dict(state)
        after = [fingerprint(b) for b in second]
        assert before + after == whole, f"stopped after {stop} batches"


@pytest.mark.parametrize("train", [False, True], ids=["single_pass", "train_stream"])
def test_length_sorted_resumes_exactly(
    small_dataset: Path, espeak_tokenizer: Path, train: bool
) -> None:
    """LENGTH_SORTED as LENGTH and STATIC above, with a sort window of 24 examples, so that
    windows are cut mid-stream and the saved states hold waiting examples, some carried once
    already into the next window (the cut's direction and the batch order come from the cut
    count)."""
    config = make_config(small_dataset, "LENGTH_SORTED", train, True, sort_window=24)
    whole = [fingerprint(b) for b in AsrLoader(small_dataset, "train", config, espeak_tokenizer)]
    assert len(whole) >= 10
    carried = 0
    for stop in random.Random(len(whole)).sample(range(1, len(whole)), 3):
        first = AsrLoader(small_dataset, "train", config, espeak_tokenizer)
        before = [fingerprint(b) for b in islice(iter(first), stop)]
        state = json.loads(json.dumps(first.state_dict()))
        first.close()
        if state["plan_state"] is not None:
            waiting = state["plan_state"]["stages"]["batcher"]["waiting"]
            carried += sum(row[0] for row in waiting)  # [carried once, *key]
        second = AsrLoader(small_dataset, "train", config, espeak_tokenizer)
        second.load_state_dict(state)
        after = [fingerprint(b) for b in second]
        assert before + after == whole, f"stopped after {stop} batches"
    assert carried, "no saved state held a carried example: the test would not see them"


KB = 1000


def test_state_is_small_and_carries_no_audio(espeak_root: Path, espeak_tokenizer) -> None:
    """The README's sizes on espeak-mini, at every position: 18-24 KB for a single pass
    (shuffled or not), 32-48 KB for the training stream with shuffle windows of 1,000 (its
    first 200 batches); the loader's own state is one of them, and holds keys, not audio."""
    root = espeak_root / "version=0"

    def config(train: bool, window: int):
        c = make_config(root, "LENGTH", train, False)
        c.asr_task_config.example_shuffle_window = window
        c.asr_task_config.batch_shuffle_window = 20 if window > 1 else 1
        c.asr_task_config.max_num_batches = 200 if train else None
        return c

    loader = AsrLoader(espeak_root, "train", config(True, 1000), espeak_tokenizer)
    it = iter(loader)
    for _ in range(13):
        next(it)
    state = loader.state_dict()
    text = json.dumps(state)
    loader.close()
    assert state["state_at"] == 12 and state["plan_state"] is not None
    assert 32 * KB <= len(text) <= 48 * KB
    stages = state["plan_state"]["stages"]
    keys = stages["pending_examples"] + stages["shuffled_waiting"]
    keys += [row[-3:] for row in stages["batcher"]["waiting"]]
    assert len(keys) > 100  # the examples waiting in the shuffle and the buckets, as keys
    assert all(len(k) == 3 and all(isinstance(v, int) for v in k) for k in keys)
    assert "audio" not in json.dumps(state["plan_state"])

    def sizes(train: bool, window: int) -> list[int]:
        planner = AsrLoader(espeak_root, "train", config(train, window), espeak_tokenizer)
        return [len(json.dumps(planner.plan_state())) for _ in planner.plan()]

    for window in (1, 1000):
        single = sizes(False, window)
        assert len(single) == 50 and 18 * KB <= min(single) <= max(single) <= 24 * KB, window
    train = sizes(True, 1000)
    assert len(train) == 200 and 32 * KB <= min(train) <= max(train) <= 48 * KB


def test_epochs_continue_the_shuffle_rngs(small_dataset: Path, espeak_tokenizer) -> None:
    """As the reference's reset keeps its RNGs: epoch 2 is shuffled differently from epoch 1
    (the same examples in another order), it is the order the RNGs carried from epoch 1 give
    (a loader restored from epoch 1's end state delivers it), and a fresh loader's epoch 1 is
    epoch 1 again, not epoch 2."""
    cfg = make_config(small_dataset, "LENGTH", False, True)
    loader = AsrLoader(small_dataset, "train", cfg, espeak_tokenizer)
    one = [fingerprint(b) for b in loader]
    state = json.loads(json.dumps(loader.state_dict()))
    assert state["epoch"] == 1 and state["epoch_finished"] and state["carry"] is not None
    two = [fingerprint(b) for b in loader]
    assert sorted(k for b in one for k in b[0]) == sorted(k for b in two for k in b[0])
    assert [b[0] for b in one] != [b[0] for b in two]  # another order of batches or examples
    assert loader.epoch == 2
    other = AsrLoader(small_dataset, "train", cfg, espeak_tokenizer)
    other.load_state_dict(state)
    assert [fingerprint(b) for b in other] == two
    fresh = AsrLoader(small_dataset, "train", cfg, espeak_tokenizer)
    assert [fingerprint(b) for b in fresh] == one


def test_changed_config_or_dataset_is_an_error(
    small_dataset: Path, espeak_root: Path, espeak_tokenizer
) -> None:
    cfg = make_config(small_dataset, "LENGTH", False, False)
    loader = AsrLoader(small_dataset, "train", cfg, espeak_tokenizer)
    next(iter(loader))
    state = loader.state_dict()
    loader.close()
    changed = make_config(small_dataset, "LENGTH", False, False)
    changed.asr_task_config.max_num_elements = 1_440_000
    with pytest.raises(ConfigError, match=r"max_num_elements: 960000 -> 1440000"):
        AsrLoader(small_dataset, "train", changed, espeak_tokenizer).load_state_dict(state)
    with pytest.raises(ConfigError, match="another dataset"):
        AsrLoader(espeak_root, "train", cfg, espeak_tokenizer).load_state_dict(state)
    bad = dict(state, format_version=99)
    with pytest.raises(ConfigError, match="format version"):
        AsrLoader(small_dataset, "train", cfg, espeak_tokenizer).load_state_dict(bad)


def test_torch_save_beside_a_checkpoint(small_dataset: Path, espeak_tokenizer, tmp_path) -> None:
    cfg = make_config(small_dataset, "STATIC", False, False)
    loader = AsrLoader(small_dataset, "train", cfg, espeak_tokenizer)
    it = iter(loader)
    next(it)
    torch.save({"model": {}, "loader": loader.state_dict()}, tmp_path / "ckpt.pt")
    rest = [b.keys for b in it]
    resumed = AsrLoader(small_dataset, "train", cfg, espeak_tokenizer)
    resumed.load_state_dict(torch.load(tmp_path / "ckpt.pt")["loader"])
    assert [b.keys for b in resumed] == rest


def test_cli_plan_save_and_load_state(espeak_root: Path, espeak_tokenizer, tmp_path) -> None:
    from dali_asr.tools.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(
        json.dumps(
            {
                "asr_task_config": {
                    **TASK,
                    "example_shuffle_window": 300,
                    "batch_shuffle_window": 10,
                },
                "mixture_parquet_storage_config": {
                    "dataset_summary_path": str(espeak_root / "language_distribution_0.tsv"),
                    "beta_corpus": 0.5,
                    "beta_language": 0.5,
                },
            }
        )
    )
    args = [
        "--data",
        str(espeak_root),
        "--config",
        str(config),
        "--tokenizer",
        str(espeak_tokenizer),
    ]

    def plan(*extra: str) -> list[str]:
        out = tmp_path / "out.jsonl"
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["plan", *args, *extra]) == 0
        out.write_text(buf.getvalue())
        return buf.getvalue().splitlines()

    whole = plan("--max-batches", "40")
    state = tmp_path / "state.json"
    first = plan("--max-batches", "15", "--save-state", str(state))
    rest = plan("--max-batches", "25", "--load-state", str(state))
    assert first + rest == whole
    assert json.loads(rest[0])["batch"] == 15


def test_checkpoint_helpers_in_a_plain_loop(small_dataset: Path, espeak_tokenizer, tmp_path):
    from dali_asr.checkpoint import load_checkpoint, save_checkpoint

    cfg = make_config(small_dataset, "LENGTH", True, True)  # training stream, shuffled
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def train(loader, steps: int, start: int = 0) -> list:
        seen = []
        for step, batch in enumerate(loader, start=start + 1):
            seen.append(fingerprint(batch))
            if step == steps:
                save_checkpoint(
                    tmp_path / "ckpt.pt", loader, model=model, optimizer=optimizer, step=step
                )
                break
        return seen

    uninterrupted = [
        fingerprint(b) for b in AsrLoader(small_dataset, "train", cfg, espeak_tokenizer)
    ]
    first = train(AsrLoader(small_dataset, "train", cfg, espeak_tokenizer), 9)
    resumed = AsrLoader(small_dataset, "train", cfg, espeak_tokenizer)
    extra = load_checkpoint(tmp_path / "ckpt.pt", resumed, model=model, optimizer=optimizer)
    assert extra == {"step": 9}
    rest = [fingerprint(b) for b in resumed]
    assert first + rest == uninterrupted


def test_resume_replays_across_the_splits_of_a_comma_separated_pass(
    espeak_root: Path, espeak_tokenizer
) -> None:
    """``dev,test`` is one pass per split in turn; a state saved in the second split whose last
    plan snapshot lies in the first replays across the boundary and continues exactly."""
    from conftest import MILESTONE_TASK

    cfg = config_from_dict(
        {
            "asr_task_config": MILESTONE_TASK,
            "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
            "dali_asr": {"state_every": 1000},
        }
    )
    dev = len(AsrLoader(espeak_root, "dev", cfg, espeak_tokenizer))
    whole = [
        [str(k) for k in b.keys] for b in AsrLoader(espeak_root, "dev,test", cfg, espeak_tokenizer)
    ]
    assert len(whole) > dev + 2
    first = AsrLoader(espeak_root, "dev,test", cfg, espeak_tokenizer)
    it = iter(first)
    for _ in range(dev + 2):
        next(it)
    state = first.state_dict()
    first.close()
    assert state["state_at"] == 0 and state["consumed"] == dev + 2  # all of it replayed
    again = AsrLoader(espeak_root, "dev,test", cfg, espeak_tokenizer)
    again.load_state_dict(state)
    assert [[str(k) for k in b.keys] for b in again] == whole[dev + 2 :]
