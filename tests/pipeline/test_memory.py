"""What one DALI iteration may decode: consecutive planned batches are grouped up to
``decode_batch`` files and ``decode_samples`` samples, which bounds the memory held by the
iterations in flight (the soak in benchmarks/RESULTS.md). Measured on a real loader: real
parquet rows, the real DALI graph, and DALI's own outputs of every iteration."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.recording import InspectedLoader, Iteration

from dali_asr.config import BatchingStrategy, config_from_dict
from dali_asr.errors import ConfigError
from dali_asr.pipeline.settings import decode_samples


def test_setting_default_and_validation() -> None:
    assert config_from_dict({}).dali_asr.decode_samples is None
    cfg = config_from_dict({"dali_asr": {"decode_samples": 2_000_000}})
    assert cfg.dali_asr.decode_samples == 2_000_000
    with pytest.raises(ConfigError, match=r"dali_asr\.decode_samples"):
        config_from_dict({"dali_asr": {"decode_samples": 0}}).validate()


def test_default_budget_is_eight_of_the_largest_planned_batch() -> None:
    task = config_from_dict(
        {"asr_task_config": {"max_audio_len": 480_000, "max_num_elements": 960_000}}
    ).asr_task_config
    assert decode_samples(task, None) == 8 * 960_000
    assert decode_samples(task, 123) == 123
    task.batching_strategy = BatchingStrategy.STATIC
    task.batch_size = 4
    assert decode_samples(task, None) == 8 * 4 * 480_000


def epoch(root: Path, tokenizer: Path, **dali: object) -> tuple[list[Iteration], list[int]]:
    """One epoch of LENGTH batches of at most 480,000 samples: DALI's iterations, and the
    planned batches' sizes."""
    cfg = config_from_dict(
        {
            "asr_task_config": {
                "min_audio_len": 16_000,
                "max_audio_len": 480_000,
                "max_num_elements": 480_000,
                "example_shuffle_window": 1,
                "batch_shuffle_window": 1,
            },
            "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
            # one epoch's iterations only: none of the next epoch's, planned ahead
            "dali_asr": {"prefetch_queue_depth": 3, "prefetch_next_epoch": False, **dali},
        }
    )
    loader = InspectedLoader(root, "train", cfg, tokenizer)
    planned = [len(b) for b in loader.plan()]
    delivered = [b.batch_size for b in loader]
    assert delivered == planned  # good data: every planned batch, whole
    return loader.recorder.iterations, planned


def test_no_dali_iteration_exceeds_decode_batch_or_decode_samples(
    small_dataset: Path, espeak_tokenizer: Path
) -> None:
    """Every iteration of several planned batches holds at most ``decode_batch`` files and
    ``decode_samples`` samples; a larger planned batch goes whole (LENGTH's buckets here hold
    up to 16 files)."""
    iterations, planned = epoch(
        small_dataset, espeak_tokenizer, decode_batch=12, decode_samples=1_200_000
    )
    # each decoded once (the two pipelines' iterations interleave: delivery is in plan order)
    assert sorted(n for it in iterations for n in it.batches) == sorted(planned)
    for it in iterations:
        assert it.files == sum(it.batches)
        assert (it.files <= 12 and it.samples <= 1_200_000) or len(it.batches) == 1, it
    assert max(len(it.batches) for it in iterations) >= 2  # batches did share iterations
    assert max(planned) > 12  # and one batch went whole


def test_a_planned_batch_is_never_split_and_goes_whole_over_the_budget(
    small_dataset: Path, espeak_tokenizer: Path
) -> None:
    """A budget of one sample or one file: every iteration is exactly one planned batch (the
    first batch of a group always goes whole), however many wait."""
    for dali in ({"decode_samples": 1}, {"decode_batch": 1}):
        iterations, planned = epoch(small_dataset, espeak_tokenizer, **dali)
        assert sorted(it.batches for it in iterations) == sorted([n] for n in planned), dali
        assert max(planned) > 1
