"""What a saved state refuses to load into: a loader whose plan-shaping settings differ (every
key of ``plan_config``, one at a time, named in the error), while settings that do not shape
the plan are free to change; and an elastic resume of ``reference_train_stream``, whose
row-group order depends on the world size."""

from __future__ import annotations

import json
import re
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from conftest import MILESTONE_TASK

from dali_asr.config import config_from_dict
from dali_asr.errors import ConfigError
from dali_asr.loader import AsrLoader
from dali_asr.resume.state import LoaderState, plan_config
from dali_asr.storage.examples import example_key
from dali_asr.text import CharTokenizer

BASE: dict[str, Any] = {
    "asr_task_config": dict(MILESTONE_TASK),
    "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
}

TSV = "<the dataset's language_distribution_0.tsv>"

# A valid other value for every key of plan_config (rank and world size aside: a state may
# load on another rank or world size, which is elastic resume's business).
CHANGES: dict[str, Any] = {
    "split": "dev",
    "asr_task_config.min_audio_len": 16_001,
    "asr_task_config.max_audio_len": 320_000,
    "asr_task_config.batching_strategy": "STATIC",
    "asr_task_config.batch_size": 4,
    "asr_task_config.num_seqs_multiple_of": 4,
    "asr_task_config.max_num_elements": 1_440_000,
    "asr_task_config.max_bucket_size": 24,
    "asr_task_config.drop_remainder": True,
    "asr_task_config.filter_long_text_threshold": 400,
    "asr_task_config.remove_unknown": True,
    "asr_task_config.min_samples_per_char": 100,
    "asr_task_config.normalize_audio": True,
    "asr_task_config.use_fbank": True,
    "asr_task_config.spec_aug_p": 0.5,
    "asr_task_config.spec_aug_freq_mask_param": 40,
    "asr_task_config.spec_aug_time_mask_param": 40,
    "asr_task_config.unified_audio_feature_keys": False,
    "asr_task_config.example_shuffle_window": 50,
    "asr_task_config.batch_shuffle_window": 5,
    "asr_task_config.seed": 3,
    "asr_task_config.no_padding": True,
    "asr_task_config.max_num_batches": 10,
    "mixture_parquet_storage_config.sync_batches": False,
    "mixture_parquet_storage_config.sync_mode": "UNTIL_FIRST",
    "mixture_parquet_storage_config.fragment_streaming.parquet_path": "elsewhere",
    "mixture_parquet_storage_config.fragment_streaming.filesystem": "local",
    "mixture_parquet_storage_config.fragment_streaming.name": "mine",
    "mixture_parquet_storage_config.fragment_streaming.weight": 2.0,
    # keeps every file, so the dataset is the same and only the setting differs
    "mixture_parquet_storage_config.fragment_streaming.partition_filters": (
        'pc.field("corpus") != "nothing"'
    ),
    "mixture_parquet_storage_config.fragment_streaming.limit.fraction_of_files": 0.5,
    "mixture_parquet_storage_config.fragment_streaming.limit.nb_files": 1,
    "mixture_parquet_storage_config.fragment_streaming.limit.nb_fragments": 1,
    "mixture_parquet_storage_config.fragment_streaming.limit.nb_rows": 10,
    "mixture_parquet_storage_config.fragment_streaming.split_to_row_groups": False,
    "mixture_parquet_storage_config.fragment_streaming.seed": 3,
    "mixture_parquet_storage_config.fragment_streaming.fragment_shuffle_window": 10,
    "mixture_parquet_storage_config.fragment_streaming.files_circular_shift": True,
    "mixture_parquet_storage_config.fragment_streaming.nb_epochs": 2,
    "mixture_parquet_storage_config.dataset_summary_path": TSV,
    "mixture_parquet_storage_config.beta_corpus": 0.5,
    "mixture_parquet_storage_config.beta_language": 0.5,
    "mixture_parquet_storage_config.pa_cpu_count": 4,
    "mixture_parquet_storage_config.max_workers": 4,
    "mixture_parquet_storage_config.split_column": "part",
    "mixture_parquet_storage_config.num_prefetch": 2,
    "mixture_parquet_storage_config.parquet_path_name": "_path",
    "mixture_parquet_storage_config.sampling_seed": 262,
    "dali_asr.sort_window": 100,
    "dali_asr.reference_train_stream": True,
}


def base_keys() -> set[str]:
    return set(plan_config(config_from_dict(BASE), "train", 0, 1, "any tokenizer"))


# the tokenizer is no setting: its own tests below
PLAN_KEYS = sorted(base_keys() - {"rank", "world_size", "tokenizer"})

# Settings that change how batches are computed or fed, not which: a state loads across them.
FREE: dict[str, Any] = {
    "dali_asr.num_threads": 1,
    "dali_asr.prefetch_queue_depth": 3,
    "dali_asr.decode_batch": 8,
    "dali_asr.decode_samples": 500_000,
    "dali_asr.state_every": 2,
    "dali_asr.dtype": "bfloat16",
    "dali_asr.pad_to_multiple": 160,
    "dali_asr.audio_cache_row_groups": 2,
    "asr_task_config.num_prefetch": 1,
    "asr_task_config.npc": 3,
    "mixture_parquet_storage_config.fragment_loading.nb_prefetch": 3,
    "mixture_parquet_storage_config.fragment_loading.use_threads": True,
    "mixture_parquet_storage_config.fragment_loading.cache": True,
}


def with_setting(key: str, value: Any, root: Path) -> dict[str, Any]:
    """BASE with the dotted ``key`` set to ``value`` (as a YAML file would say it)."""
    doc = json.loads(json.dumps(BASE))
    *path, last = key.split(".")
    node = doc
    for part in path:
        node = node.setdefault(part, {})
    node[last] = str(root.parent / "language_distribution_0.tsv") if value == TSV else value
    return doc


def saved_state(root: Path, tokenizer: Path) -> LoaderState:
    """BASE's state after three planned batches (from metadata; no audio needed)."""
    loader = AsrLoader(root, "train", config_from_dict(BASE), tokenizer)
    list(islice(loader.plan(), 3))
    return json.loads(json.dumps(loader.plan_state()))


@pytest.fixture(scope="module")
def state(small_dataset: Path, espeak_tokenizer: Path) -> LoaderState:
    return saved_state(small_dataset, espeak_tokenizer)


def test_the_table_covers_every_plan_shaping_key() -> None:
    assert sorted(CHANGES) == PLAN_KEYS
    assert not set(FREE) & base_keys()


@pytest.mark.parametrize("key", PLAN_KEYS)
def test_a_changed_plan_setting_is_refused_by_name(
    small_dataset: Path, espeak_tokenizer: Path, state: LoaderState, key: str
) -> None:
    if key == "split":
        loader = AsrLoader(small_dataset, CHANGES[key], config_from_dict(BASE), espeak_tokenizer)
    else:
        doc = with_setting(key, CHANGES[key], small_dataset)
        loader = AsrLoader(small_dataset, "train", config_from_dict(doc), espeak_tokenizer)
    saved = state["config"][key]
    now = plan_config(
        loader.config, loader.split, loader.rank, loader.world_size, loader.tokenizer.fingerprint()
    )[key]
    assert now != saved
    with pytest.raises(ConfigError, match=re.escape(f"{key}: {saved!r} -> {now!r}")):
        loader.load_state_dict(state)
    loader.close()


def planned_keys(loader: AsrLoader) -> list[list[str]]:
    return [[str(example_key(loader.files.files, ex)) for ex in b] for b in loader.plan()]


@pytest.mark.parametrize("key", sorted(FREE))
def test_a_setting_that_does_not_shape_the_plan_is_accepted(
    small_dataset: Path, espeak_tokenizer: Path, state: LoaderState, key: str
) -> None:
    """The state loads, and the plan continues with the batches the saving loader's plan had
    next."""
    base = AsrLoader(small_dataset, "train", config_from_dict(BASE), espeak_tokenizer)
    expected = planned_keys(base)[3:]
    doc = with_setting(key, FREE[key], small_dataset)
    loader = AsrLoader(small_dataset, "train", config_from_dict(doc), espeak_tokenizer)
    loader.load_state_dict(state)
    assert planned_keys(loader) == expected and expected
    loader.close()


def test_another_tokenizer_is_refused_by_name(
    small_dataset: Path, espeak_tokenizer: Path, state: LoaderState
) -> None:
    """Another vocabulary counts other tokens, so the text filters keep other examples: the
    state names both tokenizers."""
    other = CharTokenizer.from_dataset(small_dataset)
    loader = AsrLoader(small_dataset, "train", config_from_dict(BASE), other)
    with pytest.raises(
        ConfigError,
        match=r"tokenizer: 'SentencePiece model sha256 \w+' -> "
        r"'CharTokenizer code points sha256 \w+'",
    ):
        loader.load_state_dict(state)
    loader.close()


def test_the_same_tokenizer_from_another_path_is_accepted(
    small_dataset: Path, espeak_tokenizer: Path, state: LoaderState, tmp_path: Path
) -> None:
    """The model's contents identify it, not where it was loaded from (a job moved to another
    node resumes); a state saved before dali-asr recorded the tokenizer loads too."""
    copy = tmp_path / "moved.model"
    copy.write_bytes(espeak_tokenizer.read_bytes())
    base = AsrLoader(small_dataset, "train", config_from_dict(BASE), espeak_tokenizer)
    expected = planned_keys(base)[3:]
    older = json.loads(json.dumps(state))
    del older["config"]["tokenizer"]
    for saved in (state, older):
        loader = AsrLoader(small_dataset, "train", config_from_dict(BASE), copy)
        loader.load_state_dict(saved)
        assert planned_keys(loader) == expected and expected
        loader.close()


def test_reference_train_stream_cannot_change_world_size(
    small_dataset: Path, espeak_tokenizer: Path
) -> None:
    """Its row-group order is seeded with the world size (the reference's quirk): the states of
    two ranks load on two ranks, and loading them on three is an error naming the setting (the
    same states without the quirk load on three)."""

    def loader(reference: bool, rank: int, world: int) -> AsrLoader:
        doc = {
            "asr_task_config": BASE["asr_task_config"],
            "mixture_parquet_storage_config": {
                "dataset_summary_path": str(small_dataset.parent / "language_distribution_0.tsv"),
                "beta_corpus": 0.5,
                "beta_language": 0.5,
            },
            "dali_asr": {"reference_train_stream": reference},
        }
        config = config_from_dict(doc)
        return AsrLoader(small_dataset, "train", config, espeak_tokenizer, rank, world)

    def states(reference: bool) -> list[LoaderState]:
        out = []
        for rank in range(2):
            saving = loader(reference, rank, 2)
            list(islice(saving.plan(), 3))
            out.append(json.loads(json.dumps(saving.plan_state())))
        return out

    quirky, plain = states(True), states(False)
    for rank in range(2):
        loader(True, rank, 2).load_state_dict(quirky)
    for rank in range(3):
        with pytest.raises(ConfigError, match=r"dali_asr\.reference_train_stream"):
            loader(True, rank, 3).load_state_dict(quirky)
        loader(False, rank, 3).load_state_dict(plain)
