"""Fixed-size batching, fairseq2's ``DataPipelineBuilder.bucket(batch_size, drop_remainder)``.

Consecutive items are grouped into batches of ``batch_size``; at end of data the last, partial
batch is emitted unless ``drop_remainder`` is set. Used by Omnilingual's STATIC strategy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["StaticBatcher"]

T = TypeVar("T")


class StaticBatcher(Generic[T]):
    """Push-style fixed-size batcher with the same shape as :class:`LengthBucketer`.

    Args:
        batch_size: items per batch (>= 1).
        drop_remainder: at end of data, discard a last batch that has fewer than ``batch_size``
            items instead of emitting it.

    Attributes:
        skipped: ``remainder_dropped`` counts items discarded by :meth:`flush`.
    """

    def __init__(self, batch_size: int, *, drop_remainder: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be greater than zero, but is {batch_size}.")
        self.batch_size = batch_size
        self.drop_remainder = drop_remainder
        self._pending: list[T] = []
        self.skipped: dict[str, int] = {"remainder_dropped": 0}

    @property
    def num_waiting(self) -> int:
        """Items held in the current, not yet full batch."""
        return len(self._pending)

    def push(self, item: T, length: int | None = None) -> list[list[T]]:
        """Add ``item``; ``[batch]`` if it is now full. ``length`` is ignored (the
        ``Batcher`` interface)."""
        self._pending.append(item)
        if len(self._pending) < self.batch_size:
            return []
        batch, self._pending = self._pending, []
        return [batch]

    def largest_batch(self, shortest: int) -> int:
        return self.batch_size

    def export_waiting(self, key: Callable[[T], list[int]]) -> list[list[int]]:
        """The keys of the incomplete batch's items, in arrival order."""
        return [key(item) for item in self._pending]

    def import_waiting(
        self, rows: list[list[int]], lookup: Callable[[list[int]], T], length: object = None
    ) -> None:
        self._pending = [lookup(row) for row in rows]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing random to restore."""

    def flush(self) -> Iterator[list[T]]:
        """Emit the partial last batch (if any and allowed); leaves the batcher empty."""
        batch, self._pending = self._pending, []
        if not batch:
            return
        if self.drop_remainder:
            self.skipped["remainder_dropped"] += len(batch)
            return
        yield batch
