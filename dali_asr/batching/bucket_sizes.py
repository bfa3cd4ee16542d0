"""Bucket-size tables for length batching, bit-identical to fairseq2 / Omnilingual-ASR.

A bucket is a pair ``(bucket_size, seq_len)``: a batch drawn from it holds at most ``bucket_size``
sequences, each at most ``seq_len`` long, so a padded batch costs at most
``bucket_size * seq_len`` elements (audio samples).

- :func:`create_bucket_sizes` is fairseq2's ``fairseq2.data.data_pipeline.create_bucket_sizes``
  (v0.5.2 - v0.6.0), including its validation order.
- :func:`length_bucket_sizes` is Omnilingual-ASR's ``add_length_batching`` bucket preparation
  (``datasets/utils/batching.py``): round the element budget down to a multiple of
  ``max_audio_len``, build the table, then apply the optional ``max_bucket_size`` cap.
"""

from __future__ import annotations

import logging

__all__ = ["create_bucket_sizes", "effective_max_num_elements", "length_bucket_sizes"]

logger = logging.getLogger(__name__)


def create_bucket_sizes(
    *,
    max_num_elements: int,
    max_seq_len: int,
    min_seq_len: int = 1,
    num_seqs_multiple_of: int = 1,
) -> list[tuple[int, int]]:
    """Return fairseq2's bucket table as ``(bucket_size, seq_len)`` pairs, ascending ``seq_len``.

    Args:
        max_num_elements: padded element budget per batch (``bucket_size * seq_len`` never exceeds
            it). Must be a multiple of ``max_seq_len``.
        max_seq_len: length bound of the last (longest) bucket; longer inputs fit no bucket.
        min_seq_len: buckets whose length bound is below this are omitted (the first kept
            bucket still covers every length from 1 up to its bound).
        num_seqs_multiple_of: bucket sizes larger than this are rounded down to a multiple of it;
            sizes at or below it are left as they are (so long buckets can hold 7, 6, ... 1).

    Raises:
        ValueError: on the same conditions as fairseq2, naming the offending parameter.
    """
    if max_seq_len > max_num_elements:
        raise ValueError(
            f"`max_seq_len` must be less than or equal to `max_num_elements` "
            f"({max_num_elements}), but is {max_seq_len} instead."
        )
    if min_seq_len < 1:
        raise ValueError(f"`min_seq_len` must be greater than zero, but is {min_seq_len} instead.")
    if min_seq_len > max_seq_len:
        raise ValueError(
            f"`min_seq_len` must be less than or equal to `max_seq_len` ({max_seq_len}), "
            f"but is {min_seq_len} instead."
        )
    if num_seqs_multiple_of < 1:
        raise ValueError(
            f"`num_seqs_multiple_of` must be greater than or equal to 1, "
            f"but is {num_seqs_multiple_of} instead."
        )
    if max_num_elements % max_seq_len != 0:
        raise ValueError(
            f"`max_num_elements` must be a multiple of `max_seq_len` ({max_seq_len}), "
            f"but is {max_num_elements} instead."
        )

    buckets: list[tuple[int, int]] = []
    seq_len = 1
    bucket_size = max_num_elements
    # Walks every distinct value of max_num_elements // seq_len (O(sqrt(N)) steps); each step jumps
    # to the longest length that still fits the next smaller count.
    while seq_len < max_seq_len:
        if seq_len >= min_seq_len:
            buckets.append((bucket_size, seq_len))
        bucket_size = max_num_elements // (seq_len + 1)
        seq_len = max_num_elements // bucket_size
    buckets.append((bucket_size, max_seq_len))

    if num_seqs_multiple_of == 1:
        return buckets
    k = num_seqs_multiple_of
    return [(size - size % k if size > k else size, length) for size, length in buckets]


def effective_max_num_elements(max_num_elements: int, max_audio_len: int) -> int:
    """Return ``max_num_elements`` rounded down to a multiple of ``max_audio_len``.

    This is the budget Omnilingual-ASR actually hands to :func:`create_bucket_sizes`. The result
    is 0 when ``max_num_elements < max_audio_len``.

    Raises:
        ValueError: if ``max_audio_len`` is not positive.
    """
    if max_audio_len < 1:
        raise ValueError(f"`max_audio_len` must be greater than zero, but is {max_audio_len}.")
    return (max_num_elements // max_audio_len) * max_audio_len


_WARNED: set[tuple[int, int]] = set()


def length_bucket_sizes(
    *,
    min_audio_len: int,
    max_audio_len: int,
    max_num_elements: int,
    num_seqs_multiple_of: int,
    max_bucket_size: int | None,
) -> list[tuple[int, int]]:
    """Build the bucket table exactly as Omnilingual-ASR's LENGTH batching strategy does.

    Args:
        min_audio_len: shortest kept audio, in samples (``min_seq_len`` of the table; shorter
            examples are later skipped by the bucketer).
        max_audio_len: longest kept audio, in samples (``max_seq_len`` of the table).
        max_num_elements: requested padded-samples budget per batch; rounded down to a multiple
            of ``max_audio_len`` with a logged warning, as Omnilingual does.
        num_seqs_multiple_of: see :func:`create_bucket_sizes`.
        max_bucket_size: if set, drop every bucket holding more sequences than this. Because
            size falls as length grows, this removes the *shortest*-length buckets; their
            examples land in the first surviving bucket.

    Raises:
        ValueError: if ``max_num_elements < max_audio_len`` (the budget would round to 0), if
            ``max_bucket_size`` is below every bucket size, or on any
            :func:`create_bucket_sizes` validation error.
    """
    if max_audio_len >= 1 and max_num_elements < max_audio_len:
        # Omnilingual would round to 0 and fail inside fairseq2 with a confusing message.
        raise ValueError(
            f"`max_num_elements` ({max_num_elements}) must be at least `max_audio_len` "
            f"({max_audio_len}): one batch has to fit one maximum-length example."
        )
    effective = effective_max_num_elements(max_num_elements, max_audio_len)
    if effective != max_num_elements and (max_num_elements, max_audio_len) not in _WARNED:
        # once per setting: a plan is rebuilt every epoch
        _WARNED.add((max_num_elements, max_audio_len))
        logger.warning(
            "`max_num_elements` rounded down from %d to %d (a multiple of max_audio_len=%d)",
            max_num_elements,
            effective,
            max_audio_len,
        )

    buckets = create_bucket_sizes(
        max_num_elements=effective,
        max_seq_len=max_audio_len,
        min_seq_len=min_audio_len,
        num_seqs_multiple_of=num_seqs_multiple_of,
    )
    if max_bucket_size is None:
        return buckets

    kept = [(size, length) for size, length in buckets if size <= max_bucket_size]
    if not kept:
        smallest = min(size for size, _ in buckets)
        raise ValueError(
            f"`max_bucket_size` ({max_bucket_size}) is below every bucket size; the smallest "
            f"bucket size is {smallest}, so `max_bucket_size` must be at least that."
        )
    return kept
