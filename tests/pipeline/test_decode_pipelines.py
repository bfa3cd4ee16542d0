"""``decode_pipelines``: DALI pipelines decoding in turn deliver exactly what one pipeline
delivers, in plan order, though each finishes its iterations out of that order. On a real
loader: real parquet rows, the real DALI graph."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from helpers.recording import InspectedLoader

from dali_asr.batch import Seq2SeqBatch
from dali_asr.config import config_from_dict
from dali_asr.errors import ConfigError
from dali_asr.pipeline.settings import decode_pipelines


def epoch(root: Path, tokenizer: Path, pipelines: int) -> tuple[InspectedLoader, list]:
    cfg = config_from_dict(
        {
            "asr_task_config": {
                "min_audio_len": 16_000,
                "max_audio_len": 480_000,
                "max_num_elements": 480_000,
            },
            "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
            # small iterations: many of them, for the two pipelines to interleave
            "dali_asr": {"decode_pipelines": pipelines, "decode_batch": 12},
        }
    )
    loader = InspectedLoader(root, "train", cfg, tokenizer)
    return loader, list(loader)


def same(a: Seq2SeqBatch, b: Seq2SeqBatch) -> bool:
    return (
        a.keys == b.keys
        and a.plan_index == b.plan_index
        and np.array_equal(a.source_seqs.numpy(), b.source_seqs.numpy())
        and np.array_equal(a.source_padding_mask.numpy(), b.source_padding_mask.numpy())
        and np.array_equal(a.target_seqs.numpy(), b.target_seqs.numpy())
    )


def test_two_pipelines_deliver_what_one_delivers_in_plan_order(
    small_dataset: Path, espeak_tokenizer: Path
) -> None:
    loader, one = epoch(small_dataset, espeak_tokenizer, 1)
    planned = [len(b) for b in loader.plan()]
    loader2, two = epoch(small_dataset, espeak_tokenizer, 2)
    iterations = loader2.recorder.iterations
    pipes = [it.pipe for it in iterations]
    # both pipelines decoded, in turn: iterations came back out of plan order
    assert len(set(pipes)) == 2
    assert sum(a != b for a, b in pairwise(pipes)) >= len(pipes) // 2
    assert [n for it in iterations for n in it.batches] != planned
    # and the batches left in plan order, each as one pipeline makes it
    assert [b.batch_size for b in two] == planned
    assert len(one) == len(two) and all(same(a, b) for a, b in zip(one, two, strict=True))
    assert [b.plan_index for b in two] == list(range(len(planned)))


def test_setting_default_and_validation() -> None:
    assert config_from_dict({}).dali_asr.decode_pipelines is None
    with pytest.raises(ConfigError, match=r"dali_asr\.decode_pipelines"):
        config_from_dict({"dali_asr": {"decode_pipelines": 0}}).validate()


def test_two_pipelines_where_a_core_is_left_beside_dali_and_the_loader() -> None:
    assert decode_pipelines(None, num_threads=2, cores=2) == 1  # the project's CPU machine
    assert decode_pipelines(None, num_threads=2, cores=4) == 1
    assert decode_pipelines(None, num_threads=2, cores=5) == 2
    assert decode_pipelines(None, num_threads=8, cores=16) == 2  # a GPU node
    assert decode_pipelines(None, num_threads=14, cores=16) == 1
    assert decode_pipelines(3, num_threads=2, cores=2) == 3  # the setting wins
