"""The feeding thread's DALI pipelines, which decode in turn, and the plan order their batches
leave in.

Each pipeline (a ``Lane``) takes the next group of planned batches whenever DALI schedules an
iteration, so the lanes finish the plan's batches out of its order: a batch waits in
``InPlanOrder`` till every batch planned before it has been made."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dali_asr.batch import Seq2SeqBatch
from dali_asr.planning.epoch_plan import EpochEnd, Planned


@dataclass
class Lane:
    """One DALI pipeline and the groups of planned batches it is decoding, oldest first."""

    in_dali: deque[list[Planned | EpochEnd]] = field(default_factory=deque)
    pipe: Any = None


class InPlanOrder:
    """Planned batches from when the feeding thread takes them off the plan's queue until they
    are due: made, and every one taken before them due too."""

    def __init__(self) -> None:
        self._taken: deque[Planned | EpochEnd] = deque()
        self._made: dict[int, Seq2SeqBatch | None] = {}  # by id(): held in _taken till due

    def taken(self, planned: Planned | EpochEnd) -> None:
        self._taken.append(planned)

    def made(self, planned: Planned | EpochEnd, batch: Seq2SeqBatch | None) -> None:
        """``planned``'s batch (None: it has none, an ``EpochEnd`` or every example bad)."""
        self._made[id(planned)] = batch

    def due(self) -> Iterator[tuple[Planned | EpochEnd, Seq2SeqBatch | None]]:
        """The planned batches now due with their batches, in plan order."""
        while self._taken and id(self._taken[0]) in self._made:
            planned = self._taken.popleft()
            yield planned, self._made.pop(id(planned))
