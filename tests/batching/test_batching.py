"""Batching parity tests against fairseq2 / Omnilingual-ASR golden vectors (semantics §5)."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import pytest
from helpers.fairseq2_ops import bucket_by_length, static_batches

from dali_asr.batching import (
    LengthBucketer,
    StaticBatcher,
    create_bucket_sizes,
    effective_max_num_elements,
    length_bucket_sizes,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
VECTORS_PATH = REPO_ROOT.parent / "shared" / "reference" / "bucket-vectors.json"


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    if not VECTORS_PATH.is_file():
        pytest.fail(f"golden vectors not found at {VECTORS_PATH} (CI has ../shared)")
    return json.loads(VECTORS_PATH.read_text())


def _as_pairs(buckets: list[list[int]]) -> list[tuple[int, int]]:
    return [(int(b), int(s)) for b, s in buckets]


def _parse_params(params: str) -> dict[str, int]:
    return {k: int(v) for k, v in (kv.split("=") for kv in params.split(","))}


# --- create_bucket_sizes / length_bucket_sizes ---------------------------------------------


def test_every_golden_bucket_table(vectors: dict[str, Any]) -> None:
    cases = vectors["create_bucket_sizes"]
    assert len(cases) >= 10
    for case in cases:
        expected = _as_pairs(case["buckets"])
        assert len(expected) == case["count"]
        effective = case["max_num_elements_effective"]
        requested = case["max_num_elements_requested"]
        assert effective_max_num_elements(requested, case["max_seq_len"]) == effective

        direct = create_bucket_sizes(
            max_num_elements=effective,
            max_seq_len=case["max_seq_len"],
            min_seq_len=case["min_seq_len"],
            num_seqs_multiple_of=case["num_seqs_multiple_of"],
        )
        assert direct == expected, case
        via_omnilingual = length_bucket_sizes(
            min_audio_len=case["min_seq_len"],
            max_audio_len=case["max_seq_len"],
            max_num_elements=requested,
            num_seqs_multiple_of=case["num_seqs_multiple_of"],
            max_bucket_size=None,
        )
        assert via_omnilingual == expected, case


def test_max_bucket_size_golden(vectors: dict[str, Any]) -> None:
    example = vectors["max_bucket_size_filter_example"]
    p = _parse_params(example["params"])
    got = length_bucket_sizes(
        min_audio_len=p["min"],
        max_audio_len=p["max"],
        max_num_elements=p["ne"],
        num_seqs_multiple_of=p["mult"],
        max_bucket_size=p["max_bucket_size"],
    )
    assert got == _as_pairs(example["buckets"])
    assert got[0] == (16, 41739)


@pytest.mark.parametrize(
    ("n", "max_len", "min_len", "mult", "expected"),
    [
        (16, 8, 2, 1, [(8, 2), (5, 3), (4, 4), (3, 5), (2, 8)]),
        (16, 8, 2, 2, [(8, 2), (4, 3), (4, 4), (2, 5), (2, 8)]),
        (16, 16, 2, 1, [(8, 2), (5, 3), (4, 4), (3, 5), (2, 8), (1, 16)]),
    ],
)
def test_fairseq2_unit_vectors(
    n: int, max_len: int, min_len: int, mult: int, expected: list[tuple[int, int]]
) -> None:
    got = create_bucket_sizes(
        max_num_elements=n, max_seq_len=max_len, min_seq_len=min_len, num_seqs_multiple_of=mult
    )
    assert got == expected


def _table(min_len: int, max_len: int, n: int, mult: int) -> list[tuple[int, int]]:
    return length_bucket_sizes(
        min_audio_len=min_len,
        max_audio_len=max_len,
        max_num_elements=n,
        num_seqs_multiple_of=mult,
        max_bucket_size=None,
    )


def test_table_a_complete() -> None:
    expected = [
        (24, 32000),
        (24, 33103),
        (24, 34285),
        (24, 35555),
        (24, 36923),
        (24, 38400),
        (24, 40000),
        (16, 41739),
        (16, 43636),
        (16, 45714),
        (16, 48000),
        (16, 50526),
        (16, 53333),
        (16, 56470),
        (16, 60000),
        (8, 64000),
        (8, 68571),
        (8, 73846),
        (8, 80000),
        (8, 87272),
        (8, 96000),
        (8, 106666),
        (8, 120000),
        (7, 137142),
        (6, 160000),
        (5, 192000),
        (4, 240000),
        (3, 320000),
        (2, 480000),
        (1, 960000),
    ]
    table = _table(32_000, 960_000, 960_000, 8)
    assert table == expected
    assert sum(size - 1 for size, _ in table) == 358  # residency bound quoted in §5.3


def test_table_b_checksums() -> None:
    table = _table(16_000, 1_600_000, 6_400_000, 16)
    assert len(table) == 397
    assert sum(size for size, _ in table) == 77_314
    assert sum(length for _, length in table) == 30_314_038
    assert table[0] == (400, 16000) and table[-1] == (4, 1_600_000)
    assert sum(size - 1 for size, _ in table) == 76_917


def test_table_c_rounds_down_and_checksums(caplog: pytest.LogCaptureFixture) -> None:
    from dali_asr.batching import bucket_sizes

    bucket_sizes._WARNED.clear()  # the warning is once per setting and process
    assert effective_max_num_elements(3_200_000, 960_000) == 2_880_000
    with caplog.at_level(logging.WARNING, logger="dali_asr.batching.bucket_sizes"):
        table = _table(32_000, 960_000, 3_200_000, 8)
    assert "3200000" in caplog.text and "2880000" in caplog.text
    assert len(table) == 88
    assert sum(size for size, _ in table) == 3_809
    assert sum(length for _, length in table) == 10_317_772
    # fairseq2 itself refuses a budget that is not a multiple of max_seq_len.
    with pytest.raises(ValueError, match="max_num_elements"):
        create_bucket_sizes(max_num_elements=3_200_000, max_seq_len=960_000, min_seq_len=32_000)


def test_table_d_and_small_configs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        table = _table(32_000, 960_000, 7_680_000, 8)
    assert caplog.text == ""  # already a multiple: no rounding warning
    assert len(table) == 233
    assert table[0] == (240, 32000)
    assert sum(size - 1 for size, _ in table) == 27_847
    assert next(length for size, length in table if size == 8) == 512_000

    full = _table(1, 960_000, 7_680_000, 8)
    assert len(full) == 5534
    assert full[:2] == [(7_680_000, 1), (3_840_000, 2)]

    llm = _table(32_000, 320_000, 320_000, 8)
    assert llm == [
        (8, 32000),
        (8, 35555),
        (8, 40000),
        (7, 45714),
        (6, 53333),
        (5, 64000),
        (4, 80000),
        (3, 106666),
        (2, 160000),
        (1, 320000),
    ]
    assert len(_table(8_000, 800_000, 1_600_000, 8)) == 199


def test_table_invariants() -> None:
    for min_len, max_len, n, mult in [(1, 1000, 50_000, 8), (7, 97, 97 * 13, 3), (5, 5, 5, 1)]:
        table = _table(min_len, max_len, n, mult)
        lens = [length for _, length in table]
        assert lens == sorted(set(lens))
        assert lens[-1] == max_len
        assert all(size * length <= n and size >= 1 for size, length in table)


def test_create_bucket_sizes_errors() -> None:
    with pytest.raises(ValueError, match="min_seq_len"):
        create_bucket_sizes(max_num_elements=16, max_seq_len=8, min_seq_len=0)
    with pytest.raises(ValueError, match="max_seq_len"):
        create_bucket_sizes(max_num_elements=4, max_seq_len=8)
    with pytest.raises(ValueError, match="min_seq_len"):
        create_bucket_sizes(max_num_elements=16, max_seq_len=8, min_seq_len=9)
    with pytest.raises(ValueError, match="num_seqs_multiple_of"):
        create_bucket_sizes(max_num_elements=16, max_seq_len=8, num_seqs_multiple_of=0)
    with pytest.raises(ValueError, match="max_num_elements"):
        create_bucket_sizes(max_num_elements=17, max_seq_len=8)


def test_length_bucket_sizes_errors() -> None:
    with pytest.raises(ValueError, match=r"max_num_elements.*max_audio_len"):
        _table(32_000, 960_000, 959_999, 8)
    with pytest.raises(ValueError, match=r"max_bucket_size.*smallest bucket size is 1"):
        length_bucket_sizes(
            min_audio_len=32_000,
            max_audio_len=960_000,
            max_num_elements=960_000,
            num_seqs_multiple_of=8,
            max_bucket_size=0,
        )
    with pytest.raises(ValueError, match="min_seq_len"):
        _table(0, 960_000, 960_000, 8)
    with pytest.raises(ValueError, match="max_audio_len"):
        effective_max_num_elements(100, 0)


# --- bucket_by_length ---------------------------------------------------------------------


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_bucket_by_length_golden(vectors: dict[str, Any], drop_remainder: bool) -> None:
    g = vectors["bucket_by_length"]
    assert g["skip_below_min_examples"] and g["skip_above_max_examples"]
    items = list(enumerate(g["input_lengths_by_index"]))
    key = "output_drop_remainder_true" if drop_remainder else "output_drop_remainder_false"
    expected = [[tuple(pair) for pair in batch] for batch in g[key]]

    got = list(
        bucket_by_length(
            items,
            lambda it: it[1],
            _as_pairs(g["bucket_sizes"]),
            min_data_len=g["min_data_len"],
            drop_remainder=drop_remainder,
        )
    )
    assert got == expected


def test_bucketer_counters_and_push() -> None:
    b: LengthBucketer[int] = LengthBucketer(
        [(2, 8), (3, 5), (8, 2), (4, 4), (5, 3)], min_data_len=2, drop_remainder=True
    )  # unsorted on purpose
    assert b.bucket_sizes == [(8, 2), (5, 3), (4, 4), (3, 5), (2, 8)]
    lengths = [3, 3, 8, 2, 5, 3, 3, 3, 4, 8, 7, 1, 9]
    emitted = [batch for i, n in enumerate(lengths) for batch in b.push(i, n)]
    assert emitted == [[0, 1, 5, 6, 7], [2, 9]]
    assert b.num_waiting == 4
    assert list(b.flush()) == [[10, 4]]
    assert b.num_waiting == 0
    assert b.skipped == {"below_min_length": 1, "above_max_length": 1, "remainder_dropped": 2}
    assert list(b.flush()) == []


def test_flush_pops_nearest_bucket_from_the_end() -> None:
    b: LengthBucketer[str] = LengthBucketer([(4, 1), (4, 2), (4, 3), (5, 10)])
    for name, n in [("a1", 1), ("a2", 1), ("b1", 2), ("b2", 2), ("c1", 3), ("d1", 9)]:
        assert b.push(name, n) == []
    # d-bucket needs 4 more: takes c1, then b2, b1 (from the end), then a2.
    assert list(b.flush()) == [["d1", "c1", "b2", "b1", "a2"], ["a1"]]


def test_bucketer_rejects_bad_tables() -> None:
    with pytest.raises(ValueError, match="bucket_sizes"):
        LengthBucketer([])
    with pytest.raises(ValueError, match="bucket_size"):
        LengthBucketer([(0, 4)])


def test_bucket_by_length_property() -> None:
    rng = random.Random(1234)
    tables = [
        _table(1, 64, 512, 8),
        _table(10, 200, 2000, 4),
        [(8, 2), (5, 3), (4, 4), (3, 5), (2, 8)],
        [(3, 7)],
    ]
    for trial in range(200):
        table = tables[trial % len(tables)]
        min_len = rng.choice([1, 2, 5])
        max_len = table[-1][1]
        width_to_size = dict((length, size) for size, length in table)
        lengths = [rng.randint(0, max_len + 5) for _ in range(rng.randint(0, 300))]
        items = list(enumerate(lengths))
        batches = list(bucket_by_length(items, lambda it: it[1], table, min_data_len=min_len))

        in_range = sorted(i for i, n in items if min_len <= n <= max_len)
        assert sorted(i for batch in batches for i, _ in batch) == in_range
        for batch in batches:
            assert batch
            # The bucket is the one the batch's first (own) item was first-fit into.
            width = min(length for _, length in table if length >= batch[0][1])
            assert len(batch) <= width_to_size[width]
            assert max(n for _, n in batch) <= width


# --- static -------------------------------------------------------------------------------


def test_static_batches() -> None:
    assert list(static_batches(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(static_batches(range(7), 3, drop_remainder=True)) == [[0, 1, 2], [3, 4, 5]]
    assert list(static_batches(range(6), 3, drop_remainder=True)) == [[0, 1, 2], [3, 4, 5]]
    assert list(static_batches([], 3)) == []


def test_static_batcher_counters() -> None:
    b: StaticBatcher[int] = StaticBatcher(3, drop_remainder=True)
    out = [batch for i in range(7) for batch in b.push(i)]
    assert out == [[0, 1, 2], [3, 4, 5]]
    assert b.num_waiting == 1
    assert list(b.flush()) == []
    assert b.skipped == {"remainder_dropped": 1}
    assert b.num_waiting == 0
    with pytest.raises(ValueError, match="batch_size"):
        StaticBatcher(0)


@pytest.mark.parametrize("kind", ["length", "static", "sorted"])
def test_every_batcher_exports_and_imports_its_waiting_items(kind: str) -> None:
    """The ``Batcher`` interface: a batcher restored from another's exported rows (keys only)
    and random state emits exactly what the original would have."""
    from dali_asr.batching.sorted_window import SortedWindowBatcher

    def make():
        if kind == "length":
            return LengthBucketer([(3, 10), (2, 20)])
        if kind == "static":
            return StaticBatcher(4)
        return SortedWindowBatcher(window=5, max_num_elements=60, max_len=20, seed=3)

    lengths = [7, 12, 3, 19, 5, 8, 11, 2, 16, 9, 4]
    a = make()
    for i, n in enumerate(lengths[:7]):
        a.push(i, n)
    rows = a.export_waiting(lambda i: [0, 0, i])
    assert all(isinstance(v, int) for row in rows for v in row)
    b = make()
    b.load_state_dict(a.state_dict())
    b.import_waiting(rows, lambda key: key[-1], lambda i: lengths[i])
    assert b.num_waiting == a.num_waiting > 0
    rest_a = [x for i, n in enumerate(lengths[7:], 7) for x in a.push(i, n)] + list(a.flush())
    rest_b = [x for i, n in enumerate(lengths[7:], 7) for x in b.push(i, n)] + list(b.flush())
    assert rest_a == rest_b and rest_a
