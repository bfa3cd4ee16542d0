"""``prefetch_next_epoch``: when an epoch's plan ends, the same threads and DALI pipeline go on
with the next epoch, which must be the epoch a fresh ``iter()`` would have started: the same
batches, skips counted only once the loop starts it, nothing kept alive once the loader is
dropped, and a resume state taken between two epochs that still means the next one."""

from __future__ import annotations

import functools
import gc
import threading
from pathlib import Path

import pytest
import torch
from conftest import MILESTONE_TASK
from helpers.loader_threads import loader_threads, still_running, threads_before, wait_for

from dali_asr.config import LoaderConfig, config_from_dict
from dali_asr.loader import AsrLoader

# Shuffled, so that an epoch depends on the RNG states the previous one ended with.
SHUFFLED = {**MILESTONE_TASK, "example_shuffle_window": 10, "batch_shuffle_window": 3}


def config(ahead: bool, **task: object) -> LoaderConfig:
    return config_from_dict(
        {
            "asr_task_config": {**SHUFFLED, **task},
            "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
            "dali_asr": {"prefetch_next_epoch": ahead},
        }
    )


def epoch_threads(before: set[threading.Thread]) -> set[threading.Thread]:
    """Planning and feeding threads not in ``before`` (each plan has its own readers)."""
    return {t for t in loader_threads() - before if t.name in ("dali-asr-plan", "dali-asr-feed")}


def planned_ahead(loader: AsrLoader) -> bool:
    """The loader's threads have planned at least one batch of the next epoch."""
    epoch = loader._epoch
    return epoch is not None and epoch._feeder._planned.qsize() > 0


def test_epochs_planned_ahead_are_the_epochs_iter_starts(
    small_dataset: Path, espeak_tokenizer: Path
) -> None:
    """Three shuffled epochs: the same keys and audio either way, and with planning ahead
    the second and third epochs run on the first epoch's threads."""
    epochs: dict[bool, list[list[list]]] = {}
    audio: dict[bool, torch.Tensor] = {}
    before = threads_before()
    for ahead in (False, True):
        loader = AsrLoader(small_dataset, "train", config(ahead), espeak_tokenizer)
        epochs[ahead] = []
        threads = []
        for _ in range(3):
            batches = list(loader)
            epochs[ahead].append([b.keys for b in batches])
            audio[ahead] = batches[-1].source_seqs
            threads.append(epoch_threads(before))
        if ahead:
            assert threads[0] and threads[0] == threads[1] == threads[2]
        else:
            assert not (threads[0] & threads[1]) and not (threads[1] & threads[2])
        loader.close()
    assert epochs[True] == epochs[False]
    assert epochs[True][0] != epochs[True][1]  # the shuffles differ from epoch to epoch
    assert torch.equal(audio[True], audio[False])


def test_skips_of_an_epoch_planned_ahead_count_once_it_starts(
    small_dataset: Path, espeak_tokenizer: Path
) -> None:
    """Examples the length filter drops: after one epoch the report holds that epoch's, even
    when the next epoch's plan has already passed them; after two, twice as many."""
    task = {"min_audio_len": 48_000}  # drops the shortest clips of small_dataset
    plain = AsrLoader(small_dataset, "train", config(False, **task), espeak_tokenizer)
    list(plain)
    once = dict(plain.report.counts)
    plain.close()
    assert once.get("audio_too_short", 0) > 0

    loader = AsrLoader(small_dataset, "train", config(True, **task), espeak_tokenizer)
    list(loader)
    assert wait_for(lambda: planned_ahead(loader))
    assert dict(loader.report.counts) == once
    list(loader)
    assert dict(loader.report.counts) == {k: 2 * v for k, v in once.items()}
    loader.close()


def test_state_between_epochs_means_the_next_epoch(
    small_dataset: Path, espeak_tokenizer: Path
) -> None:
    """A state saved after an epoch (the next one already planned ahead) restores to that
    next epoch; loading a state drops what was planned ahead."""
    loader = AsrLoader(small_dataset, "train", config(True), espeak_tokenizer)
    start = loader.state_dict()
    first = [b.keys for b in loader]
    assert wait_for(lambda: planned_ahead(loader))
    between = loader.state_dict()
    second = [b.keys for b in loader]

    restored = AsrLoader(small_dataset, "train", config(True), espeak_tokenizer)
    restored.load_state_dict(between)
    assert [b.keys for b in restored] == second
    restored.close()

    list(loader)
    assert wait_for(lambda: planned_ahead(loader))
    loader.load_state_dict(start)
    assert [b.keys for b in loader] == first
    loader.close()


def test_an_empty_plan_is_not_followed(small_dataset: Path, espeak_tokenizer: Path) -> None:
    """A split that plans no batch ends its threads instead of planning empty epochs
    without end."""
    before = threads_before()
    task = {"min_audio_len": 470_000, "max_audio_len": 480_000}  # no clip is this long
    loader = AsrLoader(small_dataset, "train", config(True, **task), espeak_tokenizer)
    epochs: list[list] = []
    # in a thread: an epoch that never ends fails the test instead of hanging it
    worker = threading.Thread(target=lambda: epochs.extend([list(loader), list(loader)]))
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive() and epochs == [[], []]
    assert not still_running(before, 20.0)
    loader.close()


@pytest.mark.parametrize("mid_epoch", [False, True], ids=["between-epochs", "mid-epoch"])
def test_dropping_the_loader_stops_the_threads_planning_ahead(
    small_dataset: Path, espeak_tokenizer: Path, mid_epoch: bool
) -> None:
    before = threads_before()
    loader = AsrLoader(small_dataset, "train", config(True), espeak_tokenizer)
    list(loader)
    it = iter(loader)
    if mid_epoch:
        next(it)
    assert wait_for(functools.partial(planned_ahead, loader))
    del loader, it
    gc.collect()
    assert not still_running(before, 20.0)
