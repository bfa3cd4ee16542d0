"""One epoch as the training loop iterates it, over the threads of a ``Feeder``."""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator

from dali_asr.batch import Seq2SeqBatch
from dali_asr.pipeline.feeding import Feeder
from dali_asr.pipeline.gpu_collate import hand_over
from dali_asr.pipeline.plan_thread import END, Failure
from dali_asr.planning.epoch_plan import EpochEnd, EpochRun, Resume
from dali_asr.report import HeldReport, SkipReport
from dali_asr.telemetry import Telemetry


class Epoch(Iterator[Seq2SeqBatch]):
    """One pass, as the training loop sees it. Its threads live in a ``Feeder`` that holds no
    reference back, so dropping the iterator (or the loader) mid-epoch stops them. It keeps
    where the training loop is in the plan, for ``AsrLoader.state_dict``. ``owner`` is the
    loader, kept alive by its iterator while the epoch runs (``for b in AsrLoader(...)`` keeps
    only the iterator) and let go when it ends, so a loader dropped after an epoch is freed at
    once, and its threads (planning the next epoch) stopped, without waiting for the garbage
    collector; ``report`` and ``telemetry`` are the loader's."""

    def __init__(
        self,
        feeder: Feeder,
        resume: Resume | None,
        final: list,
        owner: object,
        report: SkipReport,
        telemetry: Telemetry,
        world_size: int = 1,
    ) -> None:
        self._feeder = feeder
        self._owner, self._report, self._telemetry = owner, report, telemetry
        self.final = final  # the plan's RNG states at its end, filled by the planning thread
        self._finalizer = weakref.finalize(self, feeder.stop)
        self.finished = False
        self._next_run: EpochRun | None = None  # the epoch its feeder went on with
        # the last plan state seen, and how many batches the loop has received
        self._world = world_size
        start = resume if resume is not None else Resume(0, None, 0)
        self._state_at, self._state = start.at, start.state
        self._consumed = start.at + start.skip

    def resume_point(self) -> Resume:
        return Resume(self._state_at, self._state, self._consumed - self._state_at)

    def following(self, owner: object) -> Epoch | None:
        """The next epoch of ``owner``, when this one ended with it planned ahead by the same
        feeder."""
        run, self._next_run = self._next_run, None
        if run is None:
            return None
        self._finalizer.detach()  # the feeder is the next epoch's now
        assert isinstance(run.report, HeldReport)
        run.report.release(self._report)
        return Epoch(
            self._feeder, None, run.final, owner, self._report, self._telemetry, self._world
        )

    def __next__(self) -> Seq2SeqBatch:
        if self.finished:
            raise StopIteration
        asked = time.perf_counter()
        try:
            item = self._feeder.get()
        except BaseException:
            # KeyboardInterrupt while waiting for a batch: stop every thread, then re-raise.
            self.close()
            raise
        if isinstance(item, EpochEnd):
            self.finished, self._next_run, self._owner = True, item.run, None
            raise StopIteration
        if item is END:
            self.finished = True
            self.close()
            raise StopIteration
        if isinstance(item, Failure):
            self.close()
            raise item.error
        batch: Seq2SeqBatch = item  # type: ignore[assignment]
        # Ranks move in lockstep: once this rank has its batch of a round of ``world_size``
        # global batches, the whole round counts as consumed.
        self._consumed = (batch.plan_index // self._world + 1) * self._world
        if batch.plan_state is not None:
            self._state_at, self._state = batch.plan_state
        hand_over(batch)
        source_lens, target_lens = batch.host_lengths or (None, None)
        self._telemetry.record(
            batch, time.perf_counter() - asked, source_lens=source_lens, target_lens=target_lens
        )
        return batch

    def close(self) -> None:
        self._finalizer()
        self._owner = None
