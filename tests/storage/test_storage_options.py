"""Storage options on real data: filesystems, comma-separated splits, partition filters on
every split, row-group read-ahead, the row-group cache, rank sharding of a single pass, and
LENGTH_SORTED batching."""

from __future__ import annotations

import tempfile
from itertools import islice
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from conftest import MILESTONE_TASK

from dali_asr.config import config_from_dict
from dali_asr.errors import DatasetError
from dali_asr.loader import AsrLoader

TASK = MILESTONE_TASK


def config(task: dict | None = None, **storage: object):
    return config_from_dict(
        {
            "asr_task_config": {**TASK, **(task or {})},
            "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST", **storage},
        }
    )


def keys(loader: AsrLoader, limit: int | None = None) -> list[list[tuple[str, int, int]]]:
    planner = loader.planner()
    return [
        [(k.file, k.row_group, k.row) for k in map(planner.key, batch)]
        for batch in islice(planner.batches(), limit)
    ]


def test_filesystem_object_gives_the_same_plan(espeak_root: Path, espeak_tokenizer) -> None:
    local = AsrLoader(espeak_root, "dev", config(), espeak_tokenizer)
    fs = pafs.SubTreeFileSystem(str(espeak_root), pafs.LocalFileSystem())
    remote = AsrLoader("", "dev", config(), espeak_tokenizer, filesystem=fs)
    assert remote.filesystem is fs
    assert keys(remote) == keys(local)
    first = next(iter(remote))
    assert first.batch_size == len(keys(local)[0])


def test_comma_separated_splits_make_one_pass_each(espeak_root: Path, espeak_tokenizer) -> None:
    both = AsrLoader(espeak_root, "dev,test", config(), espeak_tokenizer)
    dev = AsrLoader(espeak_root, "dev", config(), espeak_tokenizer)
    test = AsrLoader(espeak_root, "test", config(), espeak_tokenizer)
    assert keys(both) == keys(dev) + keys(test)
    assert len(both) == len(dev) + len(test)
    splits = {s for b in both for s in b.split}
    assert splits == {"dev", "test"}


def test_partition_filters_apply_to_a_validation_split(espeak_root: Path, espeak_tokenizer) -> None:
    flt = 'pc.field("corpus").isin(["espeak_fast"]) & (pc.field("language") != "rus_Cyrl")'
    loader = AsrLoader(
        espeak_root,
        "dev",
        config(fragment_streaming={"partition_filters": flt}),
        espeak_tokenizer,
    )
    assert {(f.corpus, f.language) for f in loader.files.files} == {
        ("espeak_fast", "eng_Latn"),
        ("espeak_fast", "fra_Latn"),
        ("espeak_fast", "swh_Latn"),
    }
    nothing = config(fragment_streaming={"partition_filters": 'pc.field("corpus") == "x"'})
    with pytest.raises(DatasetError, match="leave no files"):
        AsrLoader(espeak_root, "dev", nothing, espeak_tokenizer)


def test_read_ahead_does_not_change_the_plan(small_dataset: Path, espeak_tokenizer) -> None:
    plans = [
        keys(
            AsrLoader(
                small_dataset,
                "train",
                config(fragment_loading={"nb_prefetch": n}),
                espeak_tokenizer,
            )
        )
        for n in (0, 1, 3)
    ]
    assert plans[0] == plans[1] == plans[2]


def test_row_group_cache_in_the_training_stream(
    small_dataset: Path, espeak_tokenizer, tmp_path: Path
) -> None:
    def train_config(cache: bool, cache_dir: str | None = None):
        return config_from_dict(
            {
                "asr_task_config": {**TASK, "max_num_batches": 12},
                "mixture_parquet_storage_config": {
                    "fragment_loading": {"cache": cache, "cache_dir": cache_dir}
                },
            }
        )

    cached = AsrLoader(
        small_dataset, "train", train_config(True, str(tmp_path / "c")), espeak_tokenizer
    )
    plain = AsrLoader(small_dataset, "train", train_config(False), espeak_tokenizer)
    got = [(b.keys, b.source_seqs.sum().item()) for b in cached]
    want = [(b.keys, b.source_seqs.sum().item()) for b in plain]
    assert got == want and len(got) == 12
    # stopped first: their threads went on planning the next epoch, writing copies meanwhile
    cached.close()
    plain.close()
    assert list((tmp_path / "c").iterdir()) == []  # mapped copies are unlinked at once
    before = set(Path(tempfile.gettempdir()).glob("dali-asr-cache-*"))
    temporary = AsrLoader(small_dataset, "train", train_config(True), espeak_tokenizer)
    next(iter(temporary))
    (path,) = set(Path(tempfile.gettempdir()).glob("dali-asr-cache-*")) - before
    temporary.close()
    assert not path.exists()


@pytest.mark.parametrize("world_size", [2, 3])
def test_single_pass_ranks_are_disjoint_complete_and_equal(
    small_dataset: Path, espeak_tokenizer, world_size: int
) -> None:
    whole = {
        k for b in AsrLoader(small_dataset, "train", config(), espeak_tokenizer) for k in b.keys
    }
    loaders = [
        AsrLoader(small_dataset, "train", config(), espeak_tokenizer, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    parts = [[b.keys for b in loader] for loader in loaders]
    assert len({len(p) for p in parts}) == 1  # the same number of batches on every rank
    assert len(parts[0]) == len(loaders[0])
    keys = [k for p in parts for b in p for k in b]
    assert len(keys) == len(set(keys)) and set(keys) == whole


def test_length_sorted_pads_less_on_the_training_stream(
    espeak_root: Path, espeak_tokenizer
) -> None:
    def efficiency(strategy: str) -> float:
        cfg = config_from_dict(
            {
                "asr_task_config": {**TASK, "batching_strategy": strategy},
                "mixture_parquet_storage_config": {
                    "dataset_summary_path": str(espeak_root / "language_distribution_0.tsv"),
                    "beta_corpus": 0.5,
                    "beta_language": 0.5,
                },
                "dali_asr": {"sort_window": 1000},
            }
        )
        planner = AsrLoader(espeak_root, "train", cfg, espeak_tokenizer).planner()
        real = padded = 0
        for batch in islice(planner.batches(), 600):
            sizes = [ex.audio_size for ex in batch]
            assert len(sizes) * max(sizes) <= 960_000
            real += sum(sizes)
            padded += len(sizes) * max(sizes)
        return real / padded

    sorted_eff, first_fit = efficiency("LENGTH_SORTED"), efficiency("LENGTH")
    assert sorted_eff >= 0.97
    assert sorted_eff > first_fit
