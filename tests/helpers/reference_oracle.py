"""The reference's LENGTH bucketing written from Omnilingual's and fairseq2's behaviour as
../shared/reference/omnilingual-semantics.md describes it (sections 5.1-5.3), sharing no code
with dali_asr: the oracle that test_loader's and test_stats' plans are held to, itself held to
the reference's own outputs (fairseq2's bucket vectors, Omnilingual's recorded plans)."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def oracle_bucket_sizes(
    min_len: int, max_len: int, max_num_elements: int, multiple: int
) -> list[tuple[int, int]]:
    """(batch size, length bound) buckets: Omnilingual's round-down of the budget to a multiple
    of ``max_len``, then fairseq2's ``create_bucket_sizes``: for every distinct count
    ``budget // length``, the longest length that fits it, counts above ``multiple`` rounded
    down to a multiple of it."""
    budget = max_num_elements - max_num_elements % max_len
    buckets = []
    count, length = budget, 1
    while length < max_len:
        if length >= min_len:
            buckets.append((count, length))
        count = budget // (length + 1)
        length = budget // count
    buckets.append((count, max_len))
    return [(c - c % multiple if c > multiple else c, n) for c, n in buckets]


def oracle_batches(
    items: list[tuple[T, int]], buckets: list[tuple[int, int]], min_len: int
) -> list[list[T]]:
    """fairseq2's ``bucket_by_length`` (skipping items outside [min_len, longest bound]): each
    item joins the first bucket whose bound covers it, a full bucket is a batch at once; at the
    end the longest non-empty bucket, topped up with the last items of the nearest shorter
    buckets, is a batch, until none is left."""
    waiting: list[list[T]] = [[] for _ in buckets]
    out = []
    for item, length in items:
        if not min_len <= length <= buckets[-1][1]:
            continue
        i = min(j for j, (_, bound) in enumerate(buckets) if length <= bound)
        waiting[i].append(item)
        if len(waiting[i]) == buckets[i][0]:
            out.append(waiting[i])
            waiting[i] = []
    while any(waiting):
        i = max(j for j, w in enumerate(waiting) if w)
        batch, waiting[i] = waiting[i], []
        for j in range(i - 1, -1, -1):
            while len(batch) < buckets[i][0] and waiting[j]:
                batch.append(waiting[j].pop())
        out.append(batch)
    return out


def golden_plan_task(golden: dict, batching: str, shuffled: bool) -> dict:
    """``asr_task_config`` of the plans the reference recorded (tests/golden/reference-plans
    .json): its LENGTH settings and STATIC batch size, the recipe's shuffle windows or none."""
    lb = golden["length_batching"]
    return {
        **{k: lb[k] for k in ("min_audio_len", "max_audio_len", "max_num_elements")},
        "num_seqs_multiple_of": lb["num_seqs_multiple_of"],
        "batching_strategy": batching.upper(),
        "batch_size": golden["static_batch_size"],
        "example_shuffle_window": 1000 if shuffled else 1,
        "batch_shuffle_window": 20 if shuffled else 1,
        "seed": 2,
    }
