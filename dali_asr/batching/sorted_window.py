"""Window-sorted length batching (the opt-in ``LENGTH_SORTED`` strategy).

First-fit bucketing (:mod:`dali_asr.batching.length`) puts an item into the first bucket whose
bound fits it, so a batch mixes lengths from the whole bucket range. Here a window of items is
sorted by length and *consecutive* runs are cut into batches, so neighbours in a batch have
nearly equal lengths. The budget rules are those of LENGTH: a batch of ``b`` items whose longest
is ``L`` satisfies ``b * L <= budget`` (``budget`` = ``max_num_elements`` rounded down to a
multiple of ``max_len``, as Omnilingual does), and ``b`` is a multiple of ``num_seqs_multiple_of``
whenever ``b > num_seqs_multiple_of``. ``capacity(L)`` is the largest such ``b``.

Cutting: greedy, alternating direction between windows. Even cuts go from the longest item down
(each batch takes ``capacity`` of its first, longest item); odd cuts go from the shortest up
(each batch grows while the next, longer item still fits, then rounds down to the multiple rule).
A batch that ran out of items before reaching its budget (the *supply-limited tail*: shortest
items on even cuts, longest on odd ones) is not emitted but carried into the next window, where
the other direction puts it at the start of the cut. So mid-stream batches are budget-limited, as
with LENGTH. An item is carried at most once (a tail holding carried items, or the whole window,
is cut and emitted in full), so every item leaves by the second cut after it arrived.
Greedy cutting needs (tail aside) the fewest batches a contiguous run partition allows; an exact
dynamic program minimising (batches, padding) per window gained only ~0.001 padding efficiency.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from dali_asr.batching.bucket_sizes import effective_max_num_elements

__all__ = ["SortedWindowBatcher"]

T = TypeVar("T")

# (length, carried once already, item)
_Entry = tuple[int, bool, Any]
_Cut = tuple[list[list[_Entry]], list[_Entry]]  # (batches, supply-limited tail)


class SortedWindowBatcher(Generic[T]):
    """Push-style window-sorted batcher; feed items with :meth:`push`, drain with :meth:`flush`.

    Holds at most ``window`` items (carried items count towards the window).

    Args:
        window: items collected before a sort-and-cut (~1000 works well; must be >= 1).
        max_num_elements: padded-element budget per batch, rounded down to a multiple of
            ``max_len``; must be >= ``max_len``.
        max_len: longer items are skipped. min_len: shorter items are skipped (>= 1).
        num_seqs_multiple_of: batch sizes above it are multiples of it.
        drop_remainder: at end of data, drop the supply-limited tail instead of emitting it.
        seed: seeds the batch-order shuffle.

    Batches list their items by ascending length (ties in arrival order). The batches of one cut
    are shuffled with a ``random.Random`` seeded from ``(seed, cut index)``, so long and short
    batches interleave and the order is deterministic; :meth:`state_dict` is that index.

    Attributes:
        skipped: ``below_min_length``, ``above_max_length`` (items rejected by :meth:`push`) and
            ``remainder_dropped`` (items discarded by :meth:`flush`).
    """

    def __init__(
        self,
        *,
        window: int,
        max_num_elements: int,
        max_len: int,
        min_len: int = 1,
        num_seqs_multiple_of: int = 1,
        drop_remainder: bool = False,
        seed: int = 0,
    ) -> None:
        if window < 1:
            raise ValueError(f"`window` must be >= 1, but is {window}.")
        if min_len < 1:
            raise ValueError(f"`min_len` must be >= 1, but is {min_len}.")
        if max_len < min_len:
            raise ValueError(f"`max_len` must be >= `min_len` ({min_len}), but is {max_len}.")
        if max_num_elements < max_len:
            raise ValueError(
                f"`max_num_elements` ({max_num_elements}) must be at least `max_len` "
                f"({max_len}): one batch has to fit one maximum-length item."
            )
        if num_seqs_multiple_of < 1:
            raise ValueError(f"`num_seqs_multiple_of` must be >= 1, but is {num_seqs_multiple_of}.")
        self.window = window
        self.budget = effective_max_num_elements(max_num_elements, max_len)
        self.max_len = max_len
        self.min_len = min_len
        self.num_seqs_multiple_of = num_seqs_multiple_of
        self.drop_remainder = drop_remainder
        self.seed = seed
        self._num_cuts = 0
        self._buffer: list[_Entry] = []
        self.skipped: dict[str, int] = {
            "below_min_length": 0,
            "above_max_length": 0,
            "remainder_dropped": 0,
        }

    @property
    def num_waiting(self) -> int:
        """Items held in the window (new and carried)."""
        return len(self._buffer)

    def capacity(self, length: int) -> int:
        """Largest batch size allowed when the longest item has ``length``."""
        return self._round(self.budget // length)

    def _round(self, count: int) -> int:
        k = self.num_seqs_multiple_of
        return count - count % k if count > k else count

    def push(self, item: T, length: int) -> list[list[T]]:
        """Add ``item``; return the batches this completed (usually ``[]``).

        Every ``window``-th kept item triggers a cut, which returns many batches at once.
        """
        if length < self.min_len:
            self.skipped["below_min_length"] += 1
            return []
        if length > self.max_len:
            self.skipped["above_max_length"] += 1
            return []
        self._buffer.append((length, False, item))
        if len(self._buffer) < self.window:
            return []
        entries = self._take_sorted()
        batches, tail = self._cut(entries, force=False)
        if tail and (len(tail) == len(entries) or any(carried for _, carried, _ in tail)):
            # Bounded residency: never carry twice, and always free room for new items.
            batches += self._cut(tail, force=True)[0]
            tail = []
        self._buffer = [(length, True, item) for length, _, item in tail]
        return self._emit(batches)

    def flush(self) -> Iterator[list[T]]:
        """Cut everything left at end of data (eagerly; the window is empty on return).

        With ``drop_remainder`` the supply-limited tail (items too few to fill a batch of the
        capacity their cut allows) is dropped and counted; otherwise it is emitted as smaller
        batches that still obey the budget and multiple rules.
        """
        if not self._buffer:
            return iter([])
        entries = self._take_sorted()
        batches, tail = self._cut(entries, force=not self.drop_remainder)
        self.skipped["remainder_dropped"] += len(tail)
        return iter(self._emit(batches))

    def clear(self) -> None:
        """Discard every waiting item without emitting it (counters are kept)."""
        self._buffer = []

    def largest_batch(self, shortest: int) -> int:
        return self.capacity(shortest)

    def export_waiting(self, key: Callable[[T], list[int]]) -> list[list[int]]:
        """``[carried once, *key]`` of every item in the window, in window order."""
        return [[int(carried), *key(item)] for _, carried, item in self._buffer]

    def import_waiting(
        self, rows: list[list[int]], lookup: Callable[[list[int]], T], length: Callable[[T], int]
    ) -> None:
        items = [lookup(row[1:]) for row in rows]
        self._buffer = [
            (int(length(item)), bool(row[0]), item) for row, item in zip(rows, items, strict=True)
        ]

    def state_dict(self) -> dict[str, int]:
        """JSON-serialisable shuffle state. Waiting items are not part of it."""
        return {"seed": self.seed, "num_cuts": self._num_cuts}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore :meth:`state_dict` output (replaces ``seed`` too)."""
        self.seed = int(state["seed"])
        self._num_cuts = int(state["num_cuts"])

    def _take_sorted(self) -> list[_Entry]:
        # Stable: equal lengths keep arrival order (carried items sit first, they came first).
        entries = sorted(self._buffer, key=lambda e: e[0])
        self._buffer = []
        return entries

    def _cut(self, entries: list[_Entry], *, force: bool) -> _Cut:
        """Greedy cut of ascending ``entries``; returns (batches, supply-limited tail).

        With ``force`` the tail is cut too (smaller batches) and the returned tail is empty.
        """
        batches: list[list[_Entry]] = []
        n = len(entries)
        if self._num_cuts % 2 == 0:
            end = n  # longest first: each batch is sized by its first (longest) item
            while end > 0:
                size = self.capacity(entries[end - 1][0])
                if end < size:
                    if not force:
                        break
                    size = self._round(end)
                batches.append(entries[end - size : end])
                end -= size
            return batches, entries[:end]
        start = 0  # shortest first: grow while the next, longer item keeps the batch in budget
        while start < n:
            count = 1
            while start + count < n and count < self.capacity(entries[start + count][0]):
                count += 1
            if start + count == n and count < self.capacity(entries[n - 1][0]) and not force:
                break
            size = self._round(count)
            batches.append(entries[start : start + size])
            start += size
        return batches, entries[start:]

    def _emit(self, batches: list[list[_Entry]]) -> list[list[T]]:
        rng = random.Random(f"sorted_window:{self.seed}:{self._num_cuts}")
        self._num_cuts += 1
        out = [[item for _, _, item in batch] for batch in batches]
        rng.shuffle(out)
        return out
