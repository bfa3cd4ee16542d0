"""Tests for the window-sorted batcher (``LENGTH_SORTED``)."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter

import numpy as np
import pytest
from conftest import ESPEAK_ROOT as CORPUS

from dali_asr.batching.bucket_sizes import effective_max_num_elements, length_bucket_sizes
from dali_asr.batching.length import LengthBucketer
from dali_asr.batching.sorted_window import SortedWindowBatcher

ESPEAK = CORPUS / "version=0"
# The demo task (cli.DEMO_TASK): 1 s .. 30 s at 16 kHz, 60 s of padded audio per batch.
MIN_LEN, MAX_LEN, BUDGET, MULTIPLE = 16_000, 480_000, 960_000, 8


def run(batcher: SortedWindowBatcher[int], lengths: list[int]) -> tuple[list[list[int]], int]:
    """Push item ids ``0..n-1``; return all batches and how many came from :meth:`flush`."""
    out: list[list[int]] = []
    for i, length in enumerate(lengths):
        out += batcher.push(i, length)
    flushed = list(batcher.flush())
    return out + flushed, len(flushed)


def make(**kw: int | bool) -> SortedWindowBatcher[int]:
    args: dict = {"window": 1000, "max_num_elements": BUDGET, "max_len": MAX_LEN}
    args |= {"min_len": MIN_LEN, "num_seqs_multiple_of": MULTIPLE}
    args.update(kw)
    return SortedWindowBatcher(**args)


def efficiency(batches: list[list[int]], lengths: list[int]) -> float:
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return real / padded


def first_fit(lengths: list[int]) -> list[list[int]]:
    table = length_bucket_sizes(
        min_audio_len=MIN_LEN,
        max_audio_len=MAX_LEN,
        max_num_elements=BUDGET,
        num_seqs_multiple_of=MULTIPLE,
        max_bucket_size=None,
    )
    bucketer: LengthBucketer[int] = LengthBucketer(table, min_data_len=MIN_LEN)
    out = [b for i, n in enumerate(lengths) for b in bucketer.push(i, n)]
    return out + list(bucketer.flush())


def lognormal_lengths(n: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    values = rng.lognormal(np.log(80_000), 0.8, size=3 * n).astype(int)
    return [int(v) for v in values[(values >= MIN_LEN) & (values <= MAX_LEN)][:n]]


def check_rules(batches: list[list[int]], lengths: list[int], budget: int, k: int) -> None:
    for b in batches:
        assert b, "empty batch"
        lens = [lengths[i] for i in b]
        assert len(b) * max(lens) <= budget
        assert len(b) <= k or len(b) % k == 0
        assert lens == sorted(lens)  # ascending inside a batch


@pytest.mark.parametrize(
    ("window", "max_len", "budget", "k", "min_len"),
    [(1000, 480, 960, 8, 16), (37, 100, 1000, 1, 1), (5, 50, 1000, 4, 3), (1, 10, 35, 2, 1)],
)
def test_every_item_once_and_rules(window: int, max_len: int, budget: int, k: int, min_len: int):
    rng = random.Random(window)
    lengths = [rng.randint(0, max_len + 20) for _ in range(5000)]
    b = SortedWindowBatcher[int](
        window=window,
        max_num_elements=budget,
        max_len=max_len,
        min_len=min_len,
        num_seqs_multiple_of=k,
    )
    batches, _ = run(b, lengths)
    kept = [i for i, n in enumerate(lengths) if min_len <= n <= max_len]
    assert sorted(i for batch in batches for i in batch) == kept
    check_rules(batches, lengths, effective_max_num_elements(budget, max_len), k)
    assert b.skipped["below_min_length"] == sum(n < min_len for n in lengths)
    assert b.skipped["above_max_length"] == sum(n > max_len for n in lengths)
    assert b.skipped["remainder_dropped"] == 0 and b.num_waiting == 0


def test_budget_rounded_down_like_omnilingual():
    b = SortedWindowBatcher[int](window=10, max_num_elements=1050, max_len=100)
    assert b.budget == 1000 and b.capacity(100) == 10 and b.capacity(101) == 9
    assert make(num_seqs_multiple_of=8).capacity(60_001) == 8  # 15 -> 8
    assert make(num_seqs_multiple_of=8).capacity(160_000) == 6  # <= multiple: kept as is


def test_residency_bounded_and_window_memory():
    lengths = lognormal_lengths(20_000, seed=3)
    b = make(window=500)
    arrival_to_emit = {}
    for i, n in enumerate(lengths):
        for batch in b.push(i, n):
            for j in batch:
                arrival_to_emit[j] = i
        assert b.num_waiting < 500
    for j, emitted_at in arrival_to_emit.items():
        assert emitted_at - j < 2 * 500
    assert len(arrival_to_emit) + b.num_waiting == len(lengths)


def test_mid_stream_batches_are_mostly_full():
    lengths = lognormal_lengths(20_000, seed=4)
    b = make()
    mid = [batch for i, n in enumerate(lengths) for batch in b.push(i, n)]
    full = sum(len(x) == b.capacity(max(lengths[i] for i in x)) for x in mid)
    assert full / len(mid) > 0.9


def test_drop_remainder():
    lengths = [20_000] * 50  # capacity(20_000) = 48: one full batch, two left over
    b = make(drop_remainder=True)
    batches, flushed = run(b, lengths)
    assert [len(x) for x in batches] == [48] and flushed == 1
    assert b.skipped["remainder_dropped"] == 2
    keep = make()
    assert sorted(len(x) for x in run(keep, lengths)[0]) == [2, 48]
    assert list(make(drop_remainder=True).flush()) == []


def test_deterministic_per_seed_and_state_dict():
    lengths = lognormal_lengths(10_000, seed=5)
    first = run(make(seed=1), lengths)[0]
    assert first == run(make(seed=1), lengths)[0]
    assert first != run(make(seed=2), lengths)[0]
    assert sorted(map(sorted, first)) == sorted(map(sorted, run(make(seed=2), lengths)[0]))

    # Resume: after a flush the window is empty, so the RNG state is all that is needed.
    a = make(seed=7)
    run(a, lengths[:3000])
    state = json.loads(json.dumps(a.state_dict()))
    b = make(seed=99)
    b.load_state_dict(state)
    assert run(a, lengths[3000:]) == run(b, lengths[3000:])


def test_batches_of_a_window_are_shuffled():
    lengths = lognormal_lengths(5000, seed=6)
    b = make()
    maxima = [max(lengths[i] for i in x) for i, n in enumerate(lengths) for x in b.push(i, n)]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)
    rises = sum(x < y for x, y in itertools.pairwise(maxima))
    assert 0.3 < rises / (len(maxima) - 1) < 0.7


def test_validation():
    with pytest.raises(ValueError, match="window"):
        SortedWindowBatcher[int](window=0, max_num_elements=10, max_len=5)
    with pytest.raises(ValueError, match="max_num_elements"):
        SortedWindowBatcher[int](window=5, max_num_elements=4, max_len=5)
    with pytest.raises(ValueError, match="min_len"):
        SortedWindowBatcher[int](window=5, max_num_elements=10, max_len=5, min_len=0)
    with pytest.raises(ValueError, match="max_len"):
        SortedWindowBatcher[int](window=5, max_num_elements=10, max_len=5, min_len=6)
    with pytest.raises(ValueError, match="num_seqs_multiple_of"):
        SortedWindowBatcher[int](window=5, max_num_elements=10, max_len=5, num_seqs_multiple_of=0)


def compare(name: str, lengths: list[int]) -> tuple[float, float]:
    ours, _ = run(make(window=1000), lengths)
    theirs = first_fit(lengths)
    check_rules(ours, lengths, BUDGET, MULTIPLE)
    assert Counter(i for b in ours for i in b) == Counter(range(len(lengths)))
    e_sorted, e_ff = efficiency(ours, lengths), efficiency(theirs, lengths)
    print(
        f"{name}: {len(lengths)} items; sorted window 1000: efficiency {e_sorted:.4f}, "
        f"{len(ours)} batches; first-fit: efficiency {e_ff:.4f}, {len(theirs)} batches"
    )
    return e_sorted, e_ff


def test_padding_efficiency_lognormal():
    e_sorted, e_ff = compare("log-normal", lognormal_lengths(50_000))
    assert e_sorted >= 0.97 and e_sorted >= e_ff


def test_padding_efficiency_espeak_mini():
    import pyarrow.parquet as pq

    files = sorted(ESPEAK.glob("**/split=train/**/*.parquet"))
    assert files, f"espeak-mini not found at {ESPEAK}"
    columns = [pq.read_table(f, columns=["audio_size"])["audio_size"] for f in files]
    base = [n for column in columns for n in column.to_pylist()]
    base = [n for n in base if MIN_LEN <= n <= MAX_LEN]
    rng = random.Random(0)
    lengths: list[int] = []
    for _ in range(20):  # emulate a long training stream: 20 shuffled epochs
        rng.shuffle(base)
        lengths += base
    e_sorted, e_ff = compare("espeak-mini train x20", lengths)
    assert e_sorted >= 0.97 and e_sorted >= e_ff
