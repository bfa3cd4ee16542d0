"""Greedy length bucketing, a re-implementation of fairseq2n's ``bucket_by_length``.

Semantics (fairseq2n v0.6 ``bucket_by_length_data_source.cc``, with Omnilingual's settings
``skip_below_min_examples=True`` and ``skip_above_max_examples=True``):

- Buckets are sorted by ``seq_len`` ascending. An item of length ``L`` goes into the *first* bucket
  whose ``seq_len >= L``; the bucket is emitted (items in arrival order) the moment it holds its
  ``bucket_size`` items. Nothing else (time, memory) ever triggers emission.
- Items shorter than ``min_data_len`` or longer than the last bucket's ``seq_len`` are skipped.
- At end of data, the non-empty bucket with the largest ``seq_len`` is topped up by popping items
  from the *end* of the next-shorter buckets (nearest first) until full or all shorter buckets are
  empty, then emitted; repeat. Only shorter items are added, so the width bound still holds. With
  ``drop_remainder`` the first topped-up batch that is still short is discarded, which ends the
  flush (every shorter bucket is empty by then).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["LengthBucketer"]

T = TypeVar("T")


class LengthBucketer(Generic[T]):
    """Push-style length bucketer; feed items with :meth:`push`, drain with :meth:`flush`.

    Args:
        bucket_sizes: ``(bucket_size, seq_len)`` pairs, any order (sorted stably by ``seq_len``;
            fairseq2 uses an unstable sort, so duplicate ``seq_len`` values are the only case
            where the two could differ). ``bucket_size`` is the number of items per emitted
            batch, ``seq_len`` the longest item length the bucket accepts.
        min_data_len: items shorter than this are skipped (counted in ``skipped``).
        drop_remainder: at end of data, discard the final batch if it cannot be topped up to
            its bucket's full size.

    Attributes:
        skipped: counters ``below_min_length``, ``above_max_length`` (items rejected by
            :meth:`push`) and ``remainder_dropped`` (items discarded by :meth:`flush`).
    """

    def __init__(
        self,
        bucket_sizes: Sequence[tuple[int, int]],
        *,
        min_data_len: int = 1,
        drop_remainder: bool = False,
    ) -> None:
        if len(bucket_sizes) == 0:
            raise ValueError("`bucket_sizes` must contain at least one (bucket_size, seq_len).")
        ordered = sorted(((int(b), int(s)) for b, s in bucket_sizes), key=lambda bs: bs[1])
        for size, seq_len in ordered:
            if size < 1:
                raise ValueError(
                    f"every bucket_size in `bucket_sizes` must be >= 1, but got {size} "
                    f"(seq_len {seq_len})."
                )
            if seq_len < 0:
                raise ValueError(f"every seq_len in `bucket_sizes` must be >= 0, got {seq_len}.")
        if min_data_len < 0:
            raise ValueError(f"`min_data_len` must be >= 0, but is {min_data_len}.")

        self._bucket_sizes: list[tuple[int, int]] = ordered
        self._sizes: list[int] = [size for size, _ in ordered]
        # Separate seq_len list so push() can bisect it directly (5k+ buckets are realistic).
        self._seq_lens: list[int] = [seq_len for _, seq_len in ordered]
        self._max_len: int = self._seq_lens[-1]
        self._buckets: list[list[T]] = [[] for _ in ordered]
        self._num_waiting = 0
        self.min_data_len = min_data_len
        self.drop_remainder = drop_remainder
        self.skipped: dict[str, int] = {
            "below_min_length": 0,
            "above_max_length": 0,
            "remainder_dropped": 0,
        }

    @property
    def bucket_sizes(self) -> list[tuple[int, int]]:
        """The bucket table in the order used for first-fit (ascending ``seq_len``)."""
        return list(self._bucket_sizes)

    @property
    def max_len(self) -> int:
        """Longest accepted item length (the last bucket's ``seq_len``)."""
        return self._max_len

    @property
    def num_waiting(self) -> int:
        """Items currently held in partially filled buckets."""
        return self._num_waiting

    def push(self, item: T, length: int) -> list[list[T]]:
        """Add ``item`` of the given ``length``; ``[batch]`` if this filled its bucket."""
        if length < self.min_data_len:
            self.skipped["below_min_length"] += 1
            return []
        if length > self._max_len:
            self.skipped["above_max_length"] += 1
            return []

        idx = bisect_left(self._seq_lens, length)
        bucket = self._buckets[idx]
        bucket.append(item)
        if len(bucket) < self._sizes[idx]:
            self._num_waiting += 1
            return []
        self._buckets[idx] = []
        self._num_waiting -= len(bucket) - 1
        return [bucket]

    def flush(self) -> Iterator[list[T]]:
        """Drain the buckets at end of data (fairseq2's leftover chunking); leaves them empty."""
        # Stack of non-empty bucket indices, ascending: the top is always the longest non-empty
        # bucket, and the entries just below it are the "nearest shorter" donors. Skipping empty
        # buckets keeps the flush O(#buckets + #items) instead of O(#buckets^2).
        nonempty = [i for i, bucket in enumerate(self._buckets) if bucket]
        while nonempty:
            idx = nonempty.pop()
            batch = self._buckets[idx]
            self._buckets[idx] = []
            remaining = self._sizes[idx] - len(batch)
            while remaining > 0 and nonempty:
                donor = self._buckets[nonempty[-1]]
                take = min(remaining, len(donor))
                # Pop from the end, one at a time, exactly like fairseq2 (reversed order).
                batch.extend(reversed(donor[len(donor) - take :]))
                del donor[len(donor) - take :]
                remaining -= take
                if not donor:
                    nonempty.pop()
            self._num_waiting -= len(batch)
            if self.drop_remainder and remaining > 0:
                self.skipped["remainder_dropped"] += len(batch)
                return
            yield batch

    def clear(self) -> None:
        """Discard every waiting item without emitting it (counters are kept)."""
        self._buckets = [[] for _ in self._bucket_sizes]
        self._num_waiting = 0

    def largest_batch(self, shortest: int) -> int:
        return max(self._sizes)

    def export_waiting(self, key: Callable[[T], list[int]]) -> list[list[int]]:
        """``[bucket index, *key]`` of every waiting item, each bucket in arrival order."""
        return [[i, *key(item)] for i, bucket in enumerate(self._buckets) for item in bucket]

    def import_waiting(
        self, rows: list[list[int]], lookup: Callable[[list[int]], T], length: object = None
    ) -> None:
        self.clear()
        for row in rows:
            self._buckets[row[0]].append(lookup(row[1:]))
        self._num_waiting = len(rows)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing random to restore."""
