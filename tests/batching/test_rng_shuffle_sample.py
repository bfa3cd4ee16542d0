"""Golden vectors and resume behaviour for the RNG, block shuffle, weighted sampler, shard and
partition weights (fairseq2n 0.6 / Omnilingual-ASR reference outputs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED
from helpers.fairseq2_ops import sample, shard

from dali_asr.batching.rng import Mt19937
from dali_asr.batching.shuffle import BlockShuffler, block_shuffle
from dali_asr.planning.sampling import WeightedSampler
from dali_asr.planning.weights import partition_weights, read_stats_tsv

VECTORS_PATH = SHARED / "reference" / "bucket-vectors.json"


@pytest.fixture(scope="module")
def vectors() -> dict:
    # A missing file is a failure, not a skip: these vectors are the spec.
    assert VECTORS_PATH.is_file(), f"golden vectors missing: {VECTORS_PATH}"
    return json.loads(VECTORS_PATH.read_text())


def _expand(spec: list) -> list[list]:
    """``"a0..a99"`` → ``["a0", ..., "a99"]``; lists pass through."""
    out = []
    for p in spec:
        if isinstance(p, str):
            first, last = p.split("..")
            prefix = first.rstrip("0123456789")
            lo, hi = int(first[len(prefix) :]), int(last[len(prefix) :])
            out.append([f"{prefix}{i}" for i in range(lo, hi + 1)])
        else:
            out.append(list(p))
    return out


def _factories(pipelines: list[list]) -> list:
    return [(lambda p=p: iter(p)) for p in pipelines]


# --- RNG ------------------------------------------------------------------------------------


def test_mt19937_reference_outputs() -> None:
    rng = Mt19937(5489)
    assert [rng.next_u32(), rng.next_u32()] == [3499211612, 581869302]
    assert Mt19937(5489).random64() == (3499211612 << 32) | 581869302


def test_mt19937_seed_uses_low_32_bits() -> None:
    assert Mt19937(2**40 + 5).next_u32_array(8).tolist() == Mt19937(5).next_u32_array(8).tolist()
    with pytest.raises(ValueError):
        Mt19937(-1)


@pytest.mark.parametrize("seed", [0, 1, 1234, 2**40 + 5, 2**63])
def test_mt19937_matches_torch_generator(seed: int) -> None:
    # torch's CPU randperm is a Fisher-Yates driven by random() (one 32-bit draw per step).
    g = torch.Generator().manual_seed(seed)
    expected = torch.randperm(60, generator=g).tolist()
    rng, perm = Mt19937(seed), list(range(60))
    for i in range(59):
        z = rng.next_u32() % (60 - i)
        perm[i], perm[i + z] = perm[i + z], perm[i]
    assert perm == expected


def test_mt19937_mixed_calls_and_state_round_trip() -> None:
    ref = np.random.MT19937(0)
    ref._legacy_seeding(99)
    expected = ref.random_raw(30000).tolist()

    rng, got, saved = Mt19937(99), [], None
    for step in range(40):
        if step == 17:
            saved = json.loads(json.dumps(rng.state_dict()))
            mark = len(got)
        if step % 3 == 0:
            got.extend(rng.next_u32_array(step * 7).tolist())
        elif step % 3 == 1:
            r = rng.random64()
            got.extend([r >> 32, r & 0xFFFFFFFF])
        else:
            got.extend(rng.next_u32() for _ in range(1100))  # crosses read-ahead chunks
    assert got == expected[: len(got)]

    restored = Mt19937(0)
    restored.load_state_dict(saved)
    assert restored.seed == 99
    rest = restored.next_u32_array(len(got) - mark).tolist()
    assert rest == got[mark:]


# --- shuffle --------------------------------------------------------------------------------


def test_shuffle_vectors(vectors: dict) -> None:
    assert vectors["shuffle"]
    for v in vectors["shuffle"]:
        out = list(block_shuffle(v["input"], v["window"], v["seed"]))
        assert out == v["output"], v


def _reference_block_shuffle(items: list, window: int, seed: int) -> list:
    rng = Mt19937(seed)
    size = len(items) if window == 0 else window
    out = []
    for start in range(0, len(items), max(size, 1)):
        block = items[start : start + size]
        for s in range(len(block), 1, -1):
            idx = rng.random64() % s
            if idx != s - 1:
                block[s - 1], block[idx] = block[idx], block[s - 1]
        out.extend(block)
    return out


@pytest.mark.parametrize("window", [2, 7, 63, 64, 200, 0])
def test_shuffle_large_blocks_match_scalar_fisher_yates(window: int) -> None:
    items = list(range(1000))
    out = list(block_shuffle(items, window, 42))
    assert out == _reference_block_shuffle(items, window, 42)
    assert sorted(out) == items


def test_window_one_is_passthrough_without_randomness() -> None:
    sh: BlockShuffler[int] = BlockShuffler(1, 7)
    before = sh.state_dict()
    assert [x for i in range(50) for x in sh.push(i)] == list(range(50))
    assert sh.flush() == []
    assert sh.state_dict() == before


def test_window_zero_holds_everything_until_flush() -> None:
    sh: BlockShuffler[int] = BlockShuffler(0, 2)
    assert all(sh.push(i) == [] for i in range(10))
    assert sh.num_waiting == 10
    assert sh.flush() == [0, 4, 2, 7, 6, 8, 1, 3, 9, 5]
    assert sh.num_waiting == 0
    assert sh.flush() == []


def test_shuffle_push_emits_complete_blocks() -> None:
    sh: BlockShuffler[int] = BlockShuffler(4, 1234)
    emitted = [sh.push(i) for i in range(1, 10)]
    assert [len(e) for e in emitted] == [0, 0, 0, 4, 0, 0, 0, 4, 0]
    assert sh.num_waiting == 1
    assert [x for e in emitted for x in e] + sh.flush() == [2, 1, 3, 4, 5, 7, 8, 6, 9]


def test_shuffle_rng_continues_across_flush() -> None:
    sh: BlockShuffler[int] = BlockShuffler(0, 5)
    first = [x for i in range(10) for x in sh.push(i)] + sh.flush()
    second = [x for i in range(10) for x in sh.push(i)] + sh.flush()
    assert first == _reference_block_shuffle(list(range(10)), 0, 5)
    assert second != first
    assert first + second == _reference_block_shuffle(list(range(10)) * 2, 10, 5)


def test_shuffle_state_round_trip_mid_stream() -> None:
    items = list(range(103))
    full = list(block_shuffle(items, 10, 11))

    sh: BlockShuffler[int] = BlockShuffler(10, 11)
    out = [x for i in items[:37] for x in sh.push(i)]
    state = json.loads(json.dumps(sh.state_dict()))
    assert state["num_waiting"] == 7 and state["window"] == 10
    waiting = items[37 - state["num_waiting"] : 37]  # the caller's recorded keys

    resumed: BlockShuffler[int] = BlockShuffler(10, 0)
    resumed.load_state_dict(state)
    assert resumed.num_waiting == 0
    for i in waiting + items[37:]:
        out.extend(resumed.push(i))
    out.extend(resumed.flush())
    assert out == full

    with pytest.raises(ValueError, match="window"):
        BlockShuffler(5, 0).load_state_dict(state)


# --- sample ---------------------------------------------------------------------------------


def test_sample_vectors(vectors: dict) -> None:
    assert vectors["sample"]
    for v in vectors["sample"]:
        assert v.get("allow_repeats", True)
        out = list(sample(_factories(_expand(v["pipelines"])), v["weights"], v["seed"]))
        if "output" in v:
            # Ends right after the item whose refill exhausted the last pipeline.
            assert out == v["output"], v
        else:
            assert out[: len(v["first_20"])] == v["first_20"], v


def test_sampler_state_round_trip_mid_stream() -> None:
    weights = [0.5, 0.3, 0.2]
    ref = WeightedSampler(weights, 261)
    picks = [ref.pick() for _ in range(3000)]

    sampler = WeightedSampler(weights, 261)
    for _ in range(1234):
        sampler.pick()
    state = json.loads(json.dumps(sampler.state_dict()))
    restored = WeightedSampler(weights, 0)
    restored.load_state_dict(state)
    assert [restored.pick() for _ in range(3000 - 1234)] == picks[1234:]
    with pytest.raises(ValueError):
        WeightedSampler([1.0, 1.0], 0).load_state_dict(state)


def test_sample_with_restored_sampler_continues_picks() -> None:
    pipes = [[f"a{i}" for i in range(50)], [f"b{i}" for i in range(50)]]
    sampler = WeightedSampler([0.7, 0.3], 3)
    stream = sample(_factories(pipes), None, 0, sampler=sampler)
    head = [next(stream) for _ in range(10)]
    state = sampler.state_dict()
    later = [next(stream) for _ in range(5)]

    restored = WeightedSampler([0.7, 0.3], 99)
    restored.load_state_dict(state)
    # Fresh pipelines restart at item 0 (the look-ahead is not part of the state), but the
    # sequence of picks continues exactly.
    picks = [restored.pick() for _ in range(5)]
    assert [x[0] for x in later] == ["ab"[p] for p in picks]
    assert len(head) == 10


def test_sampler_weight_handling() -> None:
    uniform = WeightedSampler(None, 1, num_pipelines=3)
    assert uniform.cumulative_weights == pytest.approx([1 / 3, 2 / 3, 1.0])
    # Sums within 1e-4 of 1 are not renormalised; the float32 cumsum is kept as is.
    assert WeightedSampler([0.5, 0.49999], 0).cumulative_weights[-1] == float(np.float32(0.99999))
    assert WeightedSampler([2.0, 2.0], 0).cumulative_weights == [0.5, 1.0]
    for bad, index in (([1.0, 0.0], 1), ([-1.0], 0), ([1.0, float("nan")], 1), ([1e39], 0)):
        with pytest.raises(ValueError, match=f"index {index}"):
            WeightedSampler(bad, 0)
    with pytest.raises(ValueError):
        WeightedSampler(None, 0)
    with pytest.raises(ValueError, match="equal"):
        list(sample(_factories([[1], [2]]), [1.0], 0))


def test_sample_empty_pipeline_and_no_pipelines() -> None:
    assert list(sample([], None, 0)) == []
    with pytest.raises(ValueError, match="index 1"):
        list(sample(_factories([[1, 2], []]), None, 0))


# --- shard ----------------------------------------------------------------------------------


def test_shard_vectors(vectors: dict) -> None:
    assert vectors["shard"]
    for v in vectors["shard"]:
        out = list(shard(v["input"], v["shard_idx"], v["num_shards"], v["allow_uneven"]))
        assert out == v["output"], v


def test_shard_more_cases() -> None:
    items = list(range(10))
    assert list(shard(items, 2, 3, allow_uneven=True)) == [2, 5, 8]
    assert list(shard(items, 1, 4)) == [1, 5]
    assert list(shard(items, 1, 4, allow_uneven=True)) == [1, 5, 9]
    assert list(shard(items, 2, 4, allow_uneven=True)) == [2, 6]
    assert list(shard(items, 0, 1)) == items
    for idx, n in ((0, 0), (3, 3), (-1, 2)):
        with pytest.raises(ValueError):
            list(shard(items, idx, n))


# --- partition weights ----------------------------------------------------------------------


def test_partition_weights_example(vectors: dict, tmp_path: Path) -> None:
    ex = vectors["partition_weights_example"]
    tsv = tmp_path / "stats.tsv"
    tsv.write_text(
        "corpus\tlanguage\thours\n"
        + "".join(f"{c}\t{lang}\t{h}\n" for c, lang, h in ex["tsv_rows"])
    )
    hours = read_stats_tsv(tsv)
    assert list(hours) == [(c, lang) for c, lang, _ in ex["tsv_rows"]]
    weights = partition_weights(hours, ex["beta_corpus"], ex["beta_language"])
    expected = {tuple(k.split("/")): w for k, w in ex["weights"].items()}
    assert weights.keys() == expected.keys()
    for key, w in expected.items():
        assert weights[key] == pytest.approx(w, abs=1e-10)
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-12)


def test_partition_weights_edge_cases() -> None:
    hours = {("A", "x"): 3.0, ("A", "y"): 0.0, ("B", "z"): 1.0}
    w = partition_weights(hours, 0.5, 0.5)
    assert w[("A", "y")] == 0.0 and sum(w.values()) == pytest.approx(1.0)
    # beta 0: every corpus equal, every language equal within its corpus (0 ** 0 == 1).
    w0 = partition_weights(hours, 0.0, 0.0)
    assert w0 == {("A", "x"): 0.25, ("A", "y"): 0.25, ("B", "z"): 0.5}
    # beta 1: proportional to hours.
    w1 = partition_weights({("A", "x"): 3.0, ("B", "z"): 1.0}, 1.0, 1.0)
    assert w1 == pytest.approx({("A", "x"): 0.75, ("B", "z"): 0.25})
    assert partition_weights({}, 0.5, 0.5) == {}
    with pytest.raises(ValueError, match="beta"):
        partition_weights(hours, None, 0.5)
    with pytest.raises(ValueError, match="'C'"):
        partition_weights({("A", "x"): 1.0, ("C", "q"): 0.0}, 0.5, 0.5)
    with pytest.raises(ValueError):
        partition_weights({("A", "x"): -1.0}, 0.5, 0.5)


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("corpus\tlang\thours\nA\tx\t1\n", 1, "missing column"),
        ("corpus\tlanguage\thours\nA\tx\n", 2, "expected 3 tab-separated fields"),
        ("corpus\tlanguage\thours\nA\tx\t1\nA\ty\tlots\n", 3, "must be a number"),
        ("corpus\tlanguage\thours\nA\tx\t-2\n", 2, "non-negative"),
        ("corpus\tlanguage\thours\nA\tx\tinf\n", 2, "finite"),
        ("corpus\tlanguage\thours\nA\tx\t1\n\nA\tx\t2\n", 4, "duplicate row .*line 2"),
        ("corpus\tlanguage\thours\n\tx\t1\n", 2, "empty corpus"),
    ],
)
def test_read_stats_tsv_errors(tmp_path: Path, content: str, line: int, message: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(ValueError, match=f"bad.tsv:{line}: .*{message}"):
        read_stats_tsv(path)


def test_read_stats_tsv_column_order_and_odd_codes(tmp_path: Path) -> None:
    path = tmp_path / "stats.tsv"
    path.write_text("hours\tlanguage\tcorpus\textra\r\n2.5\tnan\tA\t?\r\n1e1\tx\tB\t?\r\n")
    assert read_stats_tsv(path) == {("A", "nan"): 2.5, ("B", "x"): 10.0}
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.tsv"):
        read_stats_tsv(empty)
