"""The resume state's schema and its parts: ``AsrLoader.state_dict()`` holds exactly the typed
``LoaderState`` keys as plain JSON, each stateful part of a plan (example sources, stages,
planners) saves and loads its own state, and a malformed state is an error naming what is
wrong."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pytest

from dali_asr.config import config_from_dict
from dali_asr.errors import ConfigError
from dali_asr.loader import AsrLoader
from dali_asr.planning.planners import SinglePassPlanner, TrainStreamPlanner
from dali_asr.resume.state import FORMAT_VERSION, LoaderState
from dali_asr.storage.examples import example_key

TASK = {
    "min_audio_len": 16_000,
    "max_audio_len": 480_000,
    "max_num_elements": 960_000,
    "example_shuffle_window": 50,
    "batch_shuffle_window": 5,
}


def _loader(root: Path, tokenizer: Path, train: bool) -> AsrLoader:
    storage = (
        {
            "dataset_summary_path": str(root.parent / "language_distribution_0.tsv"),
            "beta_corpus": 0.5,
            "beta_language": 0.5,
        }
        if train
        else {"sync_mode": "UNTIL_LAST"}
    )
    cfg = config_from_dict({"asr_task_config": TASK, "mixture_parquet_storage_config": storage})
    return AsrLoader(root, "train", cfg, tokenizer)


def _keys(loader: AsrLoader, batches) -> list[list[str]]:
    return [[str(example_key(loader.files.files, ex)) for ex in b] for b in batches]


@pytest.mark.parametrize("train", [False, True], ids=["single_pass", "train_stream"])
def test_state_dict_is_the_typed_schema_in_plain_json(
    small_dataset: Path, espeak_tokenizer: Path, train: bool
) -> None:
    loader = _loader(small_dataset, espeak_tokenizer, train)
    plan = loader.plan()
    list(islice(plan, 3))
    state = loader.plan_state()
    assert set(state) == set(LoaderState.__annotations__)
    assert state["format_version"] == FORMAT_VERSION
    assert json.loads(json.dumps(state)) == state
    source = state["plan_state"]["source"]
    expected = {"prefix", "streams", "sampler"} if train else {"row_group_index", "rows_consumed"}
    assert set(source) == expected


@pytest.mark.parametrize("train", [False, True], ids=["single_pass", "train_stream"])
def test_each_planner_continues_from_its_own_state(
    small_dataset: Path, espeak_tokenizer: Path, train: bool
) -> None:
    """The planner protocol on its own, no loader around it: a fresh planner loaded with
    another's ``state_dict()`` (through JSON) plans exactly the batches that came next."""
    loader = _loader(small_dataset, espeak_tokenizer, train)
    planner = loader.planner()
    assert isinstance(planner, TrainStreamPlanner if train else SinglePassPlanner)
    plan = planner.batches()
    list(islice(plan, 4))
    state = json.loads(json.dumps(planner.state_dict()))
    expected = _keys(loader, islice(plan, 6))
    plan.close()
    fresh = loader.planner()
    fresh.load_state_dict(state)
    assert _keys(loader, islice(fresh.batches(), 6)) == expected


@pytest.mark.parametrize("train", [False, True], ids=["single_pass", "train_stream"])
def test_each_source_continues_from_its_own_state(
    small_dataset: Path, espeak_tokenizer: Path, train: bool
) -> None:
    """Example sources alone: the examples after a saved position are those a fresh source
    loaded with it gives."""
    loader = _loader(small_dataset, espeak_tokenizer, train)
    source = loader.planner().source
    examples = source.examples(False, None)
    list(islice(examples, 57))  # mid row group (row groups of 40 rows)
    state = json.loads(json.dumps(source.state_dict()))
    expected = [(e.file_index, e.row_group, e.row) for e in islice(examples, 30)]
    fresh = loader.planner().source
    fresh.load_state_dict(state)
    got = [(e.file_index, e.row_group, e.row) for e in islice(fresh.examples(False, None), 30)]
    assert got == expected


def test_a_malformed_state_names_what_is_wrong(small_dataset: Path, espeak_tokenizer) -> None:
    loader = _loader(small_dataset, espeak_tokenizer, False)
    next(iter(loader))
    state = loader.state_dict()
    loader.close()
    fresh = _loader(small_dataset, espeak_tokenizer, False)
    without = {k: v for k, v in state.items() if k != "consumed"}
    with pytest.raises(ConfigError, match=r"lacks the keys \['consumed'\]"):
        fresh.load_state_dict(without)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must be a dict"):
        fresh.load_state_dict([json.dumps(state)])  # type: ignore[list-item]
    fresh.load_state_dict(state)  # and the whole one loads


def test_pyarrow_pools_are_sized_only_when_asked(small_dataset: Path, espeak_tokenizer) -> None:
    """pa_cpu_count sizes the process's pyarrow pools: a library loader leaves them alone, one
    asked to (the CLI's) sizes them as the reference does."""
    before = (pa.cpu_count(), pa.io_thread_count())
    cfg = config_from_dict(
        {"asr_task_config": TASK, "mixture_parquet_storage_config": {"pa_cpu_count": 3}}
    )
    try:
        AsrLoader(small_dataset, "train", cfg, espeak_tokenizer).close()
        assert (pa.cpu_count(), pa.io_thread_count()) == before
        AsrLoader(small_dataset, "train", cfg, espeak_tokenizer, size_pyarrow_pools=True).close()
        assert (pa.cpu_count(), pa.io_thread_count()) == (3, 3)
    finally:
        pa.set_cpu_count(before[0])
        pa.set_io_thread_count(before[1])
