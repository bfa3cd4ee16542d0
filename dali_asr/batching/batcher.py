"""The one interface every batcher has (LENGTH buckets, STATIC, LENGTH_SORTED windows), so the
planner, the projection of ``dali-asr stats`` and the resume state drive any of them the same
way: push items, take the batches each push finished, flush at the end, save and restore what
is waiting by key."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
Key = list[int]


class Batcher(Protocol[T]):
    skipped: dict[str, int]
    """Items dropped, by reason (``below_min_length``, ``remainder_dropped``, ...)."""

    @property
    def num_waiting(self) -> int:
        """Items held, not yet in an emitted batch."""
        ...

    def push(self, item: T, length: int) -> list[list[T]]:
        """Add ``item`` of ``length``; the batches this push finished (often none)."""
        ...

    def flush(self) -> Iterator[list[T]]:
        """At end of data: everything waiting as batches (or dropped and counted)."""
        ...

    def largest_batch(self, shortest: int) -> int:
        """The most items one batch can hold, items at least ``shortest`` long."""
        ...

    def export_waiting(self, key: Callable[[T], Key]) -> list[Key]:
        """The waiting items as rows of plain ints ending in each item's ``key``."""
        ...

    def import_waiting(
        self, rows: list[Key], lookup: Callable[[Key], T], length: Callable[[T], int]
    ) -> None:
        """Put :meth:`export_waiting` rows back into an empty batcher of the same settings."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The batcher's own random state (empty for a deterministic one)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
