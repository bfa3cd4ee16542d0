"""The last step of the feeding thread: made batches into the ready queue in plan order, and
what takes the place of a planned batch that lost every example to bad audio."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from dali_asr.batch import Seq2SeqBatch
from dali_asr.planning.epoch_plan import Planned

log = logging.getLogger(__name__)


class Delivery:
    """Hands batches to ``put`` (False: the epoch was stopped) in plan order.

    A planned batch whose examples were all bad is left out on one rank. With ``fill_empty``
    (several ranks, which must each yield their planned number of batches or the job hangs at
    its next collective) a filler takes its place: the last good batch's tensors and keys (or,
    before the epoch's first good batch, that one's), marked ``filler=True`` with the planned
    batch's index and state, for the training loop to weight out."""

    def __init__(self, put: Callable[[Seq2SeqBatch], bool], fill_empty: bool) -> None:
        self.put, self.fill_empty = put, fill_empty
        self.dropped = 0
        """Planned batches every example of which was bad, left out."""
        self.fillers = 0
        """Planned batches every example of which was bad, delivered as fillers."""
        self._last_good: Seq2SeqBatch | None = None
        self._owed: list[Planned] = []  # all-bad batches before the epoch's first good one

    def deliver(self, planned: Planned, batch: Seq2SeqBatch | None) -> bool:
        """``planned``'s batch, or None when every example was bad; False when stopped."""
        if batch is None:
            if not self.fill_empty:
                self.dropped += 1
                return True
            if self._last_good is None:
                self._owed.append(planned)
                return True
            return self.put(self._filler(self._last_good, planned))
        batch.plan_index = planned.index
        batch.plan_state = (planned.state_at, planned.state)
        for owed in self._owed:
            if not self.put(self._filler(batch, owed)):
                return False
        self._owed.clear()
        self._last_good = batch
        return self.put(batch)

    def finish(self) -> None:
        """The epoch's end: fillers still owed had no good batch to stand in for them."""
        if self._owed:
            log.error(
                "every example of the epoch's %d planned batch(es) was bad: nothing to "
                "deliver, not even fillers",
                len(self._owed),
            )
            self.dropped += len(self._owed)
            self._owed.clear()

    def _filler(self, good: Seq2SeqBatch, planned: Planned) -> Seq2SeqBatch:
        self.fillers += 1
        log.warning(
            "planned batch %d lost every example to bad audio: delivered a filler (the "
            "tensors of batch %d, filler=True) so this rank keeps step with the others",
            planned.index,
            good.plan_index,
        )
        state = (planned.state_at, planned.state)
        return replace(good, filler=True, plan_index=planned.index, plan_state=state)
