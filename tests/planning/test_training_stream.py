"""The endless training stream: partition weights realised, permutation cycles, seeds, ranks,
and a start that reads metadata only."""

from __future__ import annotations

import logging
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import partition_dir, write_parquet

from dali_asr.config import LoaderConfig, config_from_dict
from dali_asr.loader import AsrLoader
from dali_asr.planning.planners import TrainStreamPlanner
from dali_asr.planning.streaming import (
    PERMUTATIONS_PER_CYCLE,
    Cursor,
    PartitionStream,
    row_group_order,
)
from dali_asr.planning.weights import partition_weights, read_stats_tsv

TASK = {
    "min_audio_len": 16_000,
    "max_audio_len": 480_000,
    "max_num_elements": 960_000,
    "num_seqs_multiple_of": 8,
    "example_shuffle_window": 100,
    "batch_shuffle_window": 5,
}


def train_config(root: Path, **storage: object) -> LoaderConfig:
    return config_from_dict(
        {
            "asr_task_config": TASK,
            "mixture_parquet_storage_config": {
                "dataset_summary_path": str(root / "language_distribution_0.tsv"),
                "beta_corpus": 0.5,
                "beta_language": 0.5,
                **storage,
            },
        }
    )


def plan_keys(loader: AsrLoader, batches: int) -> list[list[tuple[str, int, int]]]:
    planner = loader.planner()
    return [
        [(k.file, k.row_group, k.row) for k in map(planner.key, b)]
        for b in islice(planner.batches(), batches)
    ]


def test_realised_partition_shares_match_weights(espeak_root: Path, espeak_tokenizer) -> None:
    loader = AsrLoader(espeak_root, "train", train_config(espeak_root), espeak_tokenizer)
    planner = loader.planner()
    assert isinstance(planner, TrainStreamPlanner)
    n = 20_000
    files = loader.files.files
    counts = Counter(
        (files[ex.file_index].corpus, files[ex.file_index].language)
        for ex in islice(planner.source.examples(False, None), n)
    )
    hours = read_stats_tsv(espeak_root / "language_distribution_0.tsv")
    target = partition_weights(hours, 0.5, 0.5)
    assert set(counts) == set(target)
    # binomial std at n = 20,000 is at most 0.0035; 0.012 is > 3 sigma
    for key, weight in target.items():
        assert counts[key] / n == pytest.approx(weight, abs=0.012), key


def test_each_cycle_block_is_a_permutation() -> None:
    order = row_group_order(7, seed=3)
    assert len(order) == 7 * PERMUTATIONS_PER_CYCLE
    for block in order.reshape(PERMUTATIONS_PER_CYCLE, 7):
        assert sorted(block.tolist()) == list(range(7))
    # the reference: 100 successive RandomState(seed).permutation calls
    rng = np.random.RandomState(3)
    assert order[7:14].tolist() == (rng.permutation(7), rng.permutation(7))[1].tolist()


def test_same_seeds_same_plan_other_seed_other_plan(small_dataset: Path, espeak_tokenizer) -> None:
    def keys(seed: int = 2, **storage: object) -> list:
        config = train_config(small_dataset.parent, **storage)
        config.asr_task_config.seed = seed
        return plan_keys(AsrLoader(small_dataset, "train", config, espeak_tokenizer), 30)

    first = keys()
    assert first == keys()
    assert first != keys(sampling_seed=262)
    # small_dataset's larger partitions have two row groups, so the permutation seed matters
    assert first != keys(fragment_streaming={"seed": 3})
    assert first != keys(seed=5)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_share_row_groups_disjointly_and_completely(
    small_dataset: Path, espeak_tokenizer, world_size: int
) -> None:
    loaders = [
        AsrLoader(
            small_dataset,
            "train",
            train_config(small_dataset.parent),
            espeak_tokenizer,
            rank=r,
            world_size=world_size,
        )
        for r in range(world_size)
    ]
    cycle = None
    seen: Counter[tuple[int, int, int]] = Counter()
    for loader in loaders:
        planner = loader.planner()
        for part in planner.partitions:
            stream = PartitionStream(
                part, 2 + part.index, planner.reader, False, Cursor([], loader.rank, world_size)
            )
            cycle = len(stream.order)
            reads = (cycle - loader.rank + world_size - 1) // world_size
            for position, _ in islice(stream.positions(), reads):
                ref = stream.ref_at(position)
                seen[(part.index, ref.file_index, ref.row_group)] += 1
    # over one cycle every row group of a partition is read 100 times in all, split among ranks
    assert cycle is not None
    assert set(seen.values()) == {PERMUTATIONS_PER_CYCLE}
    total = sum(len(p.row_groups) for p in loaders[0].planner().partitions)
    assert len(seen) == total


def test_start_reads_metadata_only(tmp_path: Path, espeak_tokenizer) -> None:
    """300 tiny partitions: footers are read at start, but row groups only as batches need."""
    root = tmp_path / "many"
    blob = (tmp_path / "x").write_bytes(b"") or b"fLaC" + bytes(60)
    lines = ["corpus\tlanguage\thours"]
    for c in range(3):
        for lang in range(100):
            table = pa.table(
                {
                    "text": ["hello world"] * 6,
                    "audio_bytes": pa.array([list(blob)] * 6, pa.list_(pa.int8())),
                    "audio_size": pa.array([16_000 + 1_000 * i for i in range(6)], pa.int64()),
                }
            )
            name = f"l{lang:03d}_Latn"
            write_parquet(partition_dir(root, f"c{c}", "train", name) / "part-0.parquet", table, 3)
            lines.append(f"c{c}\t{name}\t{1 + lang % 7}")
    (tmp_path / "stats.tsv").write_text("\n".join(lines) + "\n")
    config = config_from_dict(
        {
            "asr_task_config": {
                **TASK,
                "batching_strategy": "STATIC",
                "batch_size": 8,
                "example_shuffle_window": 1,
                "batch_shuffle_window": 1,
            },
            "mixture_parquet_storage_config": {
                "dataset_summary_path": str(tmp_path / "stats.tsv"),
                "beta_corpus": 0.5,
                "beta_language": 0.5,
            },
        }
    )
    loader = AsrLoader(root, "train", config, espeak_tokenizer)
    planner = loader.planner()
    assert len(planner.partitions) == 300 and loader.files.row_groups_read == 0
    first = next(iter(planner.batches()))
    assert len(first) == 8
    # eight picks read at most eight row groups (plus one read ahead each), not one per partition
    assert 1 <= loader.files.row_groups_read <= 16


def test_tsv_and_disk_mismatches_are_named(
    small_dataset: Path, espeak_tokenizer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tsv = tmp_path / "stats.tsv"
    tsv.write_text(
        "corpus\tlanguage\thours\n"
        "espeak_read\teng_Latn\t1.0\n"
        "espeak_read\tfra_Latn\t2.0\n"
        "espeak_read\tdeu_Latn\t3.0\n"  # in the TSV, not on disk
    )  # espeak_fast/* are on disk, not in the TSV
    config = config_from_dict(
        {
            "asr_task_config": TASK,
            "mixture_parquet_storage_config": {
                "dataset_summary_path": str(tsv),
                "beta_corpus": 0.5,
                "beta_language": 0.5,
            },
        }
    )
    with caplog.at_level(logging.WARNING, logger="dali_asr"):
        planner = AsrLoader(small_dataset, "train", config, espeak_tokenizer).planner()
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "espeak_read/deu_Latn" in text
    assert "espeak_fast/eng_Latn" in text and "espeak_fast/rus_Cyrl" in text
    assert [p.name for p in planner.partitions] == ["espeak_read/eng_Latn", "espeak_read/fra_Latn"]
    assert [p.index for p in planner.partitions] == [1, 2]


def test_remove_unknown_drops_unk_tokens(small_dataset: Path) -> None:
    from dali_asr.text import CharTokenizer

    # a vocabulary without the letter "e": those characters become <unk>
    tokenizer = CharTokenizer.from_texts(["abcdfghijklmnopqrstuvwxyz '"])
    cfg = config_from_dict(
        {
            "asr_task_config": {**TASK, "remove_unknown": True, "max_num_batches": 3},
            "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
        }
    )
    planner = AsrLoader(small_dataset, "train", cfg, tokenizer).planner()
    for batch in planner.batches():
        for ex in batch:
            assert tokenizer.unk_idx not in ex.tokens.tolist()
            assert len(ex.tokens) == len(ex.text) - ex.text.count("e") - sum(
                c not in "abcdfghijklmnopqrstuvwxyz '" for c in ex.text if c != "e"
            )


def test_rank_and_world_size_come_from_torch_distributed(small_dataset: Path) -> None:
    import socket

    import torch.distributed as dist

    from dali_asr.planning.sharding import resolve_rank

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        assert resolve_rank(None, None) == (0, 1)
        assert resolve_rank(1, 3) == (1, 3)  # explicit values win
    finally:
        dist.destroy_process_group()
    assert resolve_rank(None, None) == (0, 1)
    with pytest.raises(ValueError, match="rank 3"):
        resolve_rank(3, 2)


def test_the_stream_plans_from_metadata_and_reads_audio_per_planned_batch(
    espeak_root: Path, espeak_tokenizer: Path
) -> None:
    """A training stream's first batch waits for its own row groups' audio, not for the
    shuffle window's: audio is read when a planned batch needs it, once per row group while
    the cache holds it, and it is each row's own bytes."""
    from dali_asr.planning.epoch_plan import planned_batches
    from dali_asr.storage.examples import AudioCache

    config = train_config(espeak_root)
    config.asr_task_config.example_shuffle_window = 1000
    loader = AsrLoader(espeak_root / "version=0", "train", config, espeak_tokenizer)
    planner = loader.planner()
    audio = AudioCache(loader.files, planner.audio_cache_size())
    plan = planned_batches(planner, audio, None, 0, None, [])
    first = next(plan).examples
    groups = {(ex.file_index, ex.row_group) for ex in first}
    assert audio.reads == len(groups) < len(loader.files.row_groups())
    seen = set(groups)
    for planned in islice(plan, 40):
        seen |= {(ex.file_index, ex.row_group) for ex in planned.examples}
    plan.close()
    assert audio.reads == len(seen)  # each read once: the cache holds every row group here
    for ex in first:
        path = loader.files.files[ex.file_index].path
        table = pq.ParquetFile(path).read_row_group(ex.row_group, columns=["audio_bytes"])
        expected = np.asarray(table.column(0)[ex.row].as_py(), dtype=np.int8).view(np.uint8)
        assert np.array_equal(ex.audio, expected)


def test_an_audio_cache_too_small_reads_again_and_stays_bounded(
    espeak_root: Path, espeak_tokenizer: Path
) -> None:
    from dali_asr.planning.epoch_plan import planned_batches
    from dali_asr.storage.examples import AudioCache

    loader = AsrLoader(
        espeak_root / "version=0", "train", train_config(espeak_root), espeak_tokenizer
    )
    planner = loader.planner()
    audio = AudioCache(loader.files, 1)
    plan = planned_batches(planner, audio, None, 0, None, [])
    batches = [p.examples for p in islice(plan, 30)]
    plan.close()
    per_batch = [len({(ex.file_index, ex.row_group) for ex in b}) for b in batches]
    assert audio.reads > len({(ex.file_index, ex.row_group) for b in batches for ex in b})
    assert audio.reads <= sum(per_batch)
    assert len(audio) == 1
    assert all(ex.audio is not None and len(ex.audio) > 0 for b in batches for ex in b)


def test_a_row_group_met_again_is_not_read_again(espeak_root: Path, espeak_tokenizer) -> None:
    """espeak-mini's partitions are one row group each: the stream comes back to them every
    few batches, and plans from the metadata it read the first time."""
    loader = AsrLoader(
        espeak_root / "version=0", "train", train_config(espeak_root), espeak_tokenizer
    )
    planner = loader.planner()
    picked = Counter(
        (ex.file_index, ex.row_group) for b in islice(planner.batches(), 60) for ex in b
    )
    rows = {(r.file_index, r.row_group): r.num_rows for r in loader.files.row_groups()}
    assert any(picked[key] > rows[key] for key in picked)  # some were served more than once
    assert loader.files.row_groups_read == len(rows)


def test_the_metadata_cache_is_bounded_and_gives_new_examples(
    espeak_root: Path, espeak_tokenizer: Path
) -> None:
    from dali_asr.storage.examples import ExampleReader

    loader = AsrLoader(
        espeak_root / "version=0", "train", train_config(espeak_root), espeak_tokenizer
    )
    files, refs = loader.files, loader.files.row_groups()[:2]
    text_filter = loader.planner().reader.text_filter
    reader = ExampleReader(files, text_filter, cache_rows=max(r.num_rows for r in refs))
    first = reader.read(refs[0], False)
    again = reader.read(refs[0], False)
    assert files.row_groups_read == 1
    assert [(e.row, e.text, e.audio_size, e.reject) for e in again] == [
        (e.row, e.text, e.audio_size, e.reject) for e in first
    ]
    assert all(a is not b for a, b in zip(first, again, strict=True))
    first[0].audio = np.zeros(4, np.uint8)  # planning fills in one list's audio ...
    assert again[0].audio is None  # ... not the other's
    reader.read(refs[1], False)  # no room for both: refs[0] goes
    reader.read(refs[0], False)
    assert files.row_groups_read == 3
