"""The threads behind an epoch: planning, and feeding DALI and collating its outputs.

A planning thread (``plan_thread``) puts planned batches in a bounded queue, the next epoch's
after this one's. A feeding thread owns the DALI pipelines (``decode_pipelines`` lanes, run in
turn): DALI calls ``_source`` for each iteration it schedules (so its threads decode
``prefetch_queue_depth`` batches ahead), and the feeding thread collates each output into a
``Seq2SeqBatch`` for a second bounded queue, in plan order, which the training loop drains.

Bad audio never ends the epoch: bytes that cannot be audio are dropped before DALI sees them;
when a file still fails inside DALI (which invalidates the pipeline), the batches in flight are
probed file by file, the bad files dropped, the pipeline rebuilt, and the batches replayed.
Decoded audio whose length is off or that holds NaN/inf is dropped after decoding. Dropped
examples are reported with their keys. A batch that loses examples arrives smaller: the plan
stays a function of the dataset's metadata alone.

Nothing here refers to the loader or the epoch iterator, so both can be garbage-collected while
the threads run; their finalizers call ``stop()``.
"""

from __future__ import annotations

import atexit
import functools
import logging
import queue
import threading
import weakref
from collections import deque
from collections.abc import Callable

import numpy as np

from dali_asr.batch import Seq2SeqBatch
from dali_asr.errors import BadAudioError
from dali_asr.pipeline.audio_check import check_decoded, describe_format, probe, sniff
from dali_asr.pipeline.collate import BatchMaker
from dali_asr.pipeline.delivery import Delivery
from dali_asr.pipeline.graph import build_pipeline
from dali_asr.pipeline.lanes import InPlanOrder, Lane
from dali_asr.pipeline.plan_thread import END, Failure, plan_epochs
from dali_asr.pipeline.settings import PipelineSettings
from dali_asr.planning.epoch_plan import EpochEnd, EpochRun, Planned
from dali_asr.report import KnownBad
from dali_asr.storage.examples import Example

log = logging.getLogger(__name__)

PLANNED_BATCHES = 16
"""Planned batches (with their encoded audio) waiting for DALI. Planning comes in bursts, a
row group's worth of batches at a time: with room for three, DALI's threads waited for the
next row group's read a fifth of the time. Each holds at most one batch's encoded audio."""

_LIVE: weakref.WeakSet[Feeder] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """Stop live feeders at interpreter exit, before DALI's own exit hook checks that every
    pipeline is gone: atexit runs hooks last-registered first, and DALI registered its hook
    when ``graph`` imported it, above."""
    for feeder in list(_LIVE):
        feeder.stop()


class Feeder:
    """Runs the threads of an epoch and of the epochs that ``follow`` it; ``get()`` hands out
    batches, an ``EpochEnd`` between two epochs and END after the last; ``stop()`` ends
    everything. ``follow(run)`` gives the epoch after ``run`` (None: none), called on the
    planning thread when ``run``'s plan has ended."""

    def __init__(
        self,
        first: EpochRun,
        maker: BatchMaker,
        settings: PipelineSettings,
        num_prefetch: int,
        known_bad: KnownBad | None = None,
        follow: Callable[[EpochRun], EpochRun | None] | None = None,
    ) -> None:
        self.maker = maker
        self.settings = settings
        self.known_bad = known_bad if known_bad is not None else KnownBad()
        self._planned: queue.Queue = queue.Queue(maxsize=PLANNED_BATCHES)
        self._ready: queue.Queue = queue.Queue(maxsize=max(1, num_prefetch))
        self._stop = threading.Event()
        self.lanes = [Lane() for _ in range(settings.decode_pipelines)]
        self._order = InPlanOrder()
        self._replay: deque[Planned | EpochEnd] = deque()
        self._held: object = None
        self._ended: object = None
        self.delivery = self._delivery()
        # all-bad batches after the last file given to DALI
        self._tail: list[Planned | EpochEnd] = []
        self._source_end: object = END
        _LIVE.add(self)
        plan = functools.partial(
            plan_epochs, first, follow, functools.partial(self._put, self._planned), self._stop
        )
        self.threads = [
            threading.Thread(target=plan, name="dali-asr-plan", daemon=True),
            threading.Thread(target=self._feed, name="dali-asr-feed", daemon=True),
        ]
        for t in self.threads:
            t.start()

    # -- queues that give up when stopped ------------------------------------------------------

    def _put(self, q: queue.Queue, item: object) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _take(self, q: queue.Queue) -> object:
        while not self._stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return END

    def get(self) -> object:
        """The next Seq2SeqBatch, END, or a Failure."""
        return self._take(self._ready)

    def stop(self) -> None:
        self._stop.set()
        for t in self.threads:
            if t is not threading.current_thread():
                t.join(timeout=30)

    # -- feeding thread ------------------------------------------------------------------------

    def _skip(self, planned: Planned, ex: Example, reason: str, detail: str = "") -> None:
        key = self.maker.key(ex)
        if self.settings.on_bad_audio == "error":
            raise BadAudioError(f"{key}: {reason}{detail} (dali_asr.on_bad_audio is 'error')")
        self.known_bad.add(key, reason)
        assert planned.report is not None
        planned.report.add(key, reason)

    def _source(self, lane: Lane) -> list[np.ndarray] | tuple[list[np.ndarray], list[np.ndarray]]:
        """Called by ``lane``'s DALI pipeline, in the feeding thread, for every iteration it
        schedules: one or more planned batches, up to ``decode_batch`` files and
        ``decode_samples`` samples of audio when more are ready, so DALI's threads are not left
        idle by a batch of two long files. Errors end the epoch through ``_source_end``: DALI
        would report them as its own.

        The sample budget bounds what one iteration decodes, and so the memory DALI and the
        heaps under it hold: counted in files only, a group of sixteen batches of two 30 s
        files decodes 61 MB where a typical one decodes 4, and the process's memory kept
        growing for a quarter of an hour, each time a rarer, larger group came
        (benchmarks/RESULTS.md, soak). The first batch of a group is always taken whole."""
        group: list[Planned | EpochEnd] = []
        files = 0
        samples = 0
        budget = self.settings.decode_samples
        while files < self.settings.decode_batch and (budget is None or samples < budget):
            item = self._next_planned(wait=files == 0)
            if item is None:
                break
            if item is END or isinstance(item, Failure):
                if files:
                    self._held = item  # deliver what is grouped first
                    break
                self._tail.extend(group)  # no file to decode: settled after DALI's end
                self._source_end = item
                raise StopIteration
            try:
                item.examples = self._sniffed(item)
            except BadAudioError as e:
                self._source_end = Failure(e)
                raise StopIteration from None
            if not item.examples:
                group.append(item)  # keeps its place in the plan: settled when collated
                continue
            size = sum(ex.audio_size for ex in item.examples)
            if files and (
                files + len(item.examples) > self.settings.decode_batch
                or (budget is not None and samples + size > budget)
            ):
                self._replay.appendleft(item)
                break
            group.append(item)
            files += len(item.examples)
            samples += size
        lane.in_dali.append(group)
        encoded = [ex.audio for planned in group for ex in planned.examples]
        augmenter = self.maker.augmenter
        if augmenter is None or not augmenter.perturbs_speed:
            return encoded
        decoding = [planned for planned in group if planned.examples]
        for planned in decoding:
            keys = [self.maker.key(ex) for ex in planned.examples]
            planned.speed = augmenter.speed_factors(keys, planned.index)
        return encoded, [np.float32(f) for planned in decoding for f in planned.speed]

    def _next_planned(self, wait: bool) -> object:
        # replayed batches (after a DALI failure) come before anything held or queued
        if self._replay:
            return self._replay.popleft()
        if self._held is not None:
            item, self._held = self._held, None
            return item
        if self._ended is not None:
            # the end was taken before a DALI failure made us rebuild: it stays the end
            return self._ended
        if wait:
            item = self._take(self._planned)
        else:
            try:
                item = self._planned.get_nowait()
            except queue.Empty:
                return None
        if item is END or isinstance(item, Failure):
            self._ended = item
        else:
            self._order.taken(item)  # type: ignore[arg-type]
        return item

    def _sniffed(self, planned: Planned | EpochEnd) -> list[Example]:
        """The batch less the examples whose bytes are not audio, or found bad before."""
        kept = []
        known = len(self.known_bad) > 0
        for ex in planned.examples:
            reason = (known and self.known_bad.reason(self.maker.key(ex))) or sniff(ex.audio)
            if reason is None:
                kept.append(ex)
            else:
                self._skip(planned, ex, reason, f" ({describe_format(ex.audio)})")
        return kept

    def _build(self, lane: Lane):
        s = self.settings
        augmenter = self.maker.augmenter
        pipe = build_pipeline(
            lambda: self._source(lane),
            max_batch_size=s.max_batch_size + s.decode_batch,
            num_threads=s.num_threads,
            device=s.device,
            device_id=s.device_id,
            prefetch_queue_depth=s.prefetch_queue_depth,
            fbank=self.maker.use_fbank,
            speed_perturb=augmenter is not None and augmenter.perturbs_speed,
        )
        pipe.build()
        return pipe

    def _feed(self) -> None:
        try:
            for lane in self.lanes:
                lane.pipe = self._build(lane)
            live = list(self.lanes)
            while live and not self._stop.is_set():
                for lane in list(live):
                    if not self._step(lane):
                        live.remove(lane)
                    if not self._deliver_in_order():
                        return
            for planned in self._tail:
                self._order.made(planned, None)
            if not self._deliver_in_order():
                return
            self.delivery.finish()
            end = self._source_end
            self._put(self._ready, end if isinstance(end, Failure) else END)
        except BaseException as e:
            self._put(self._ready, Failure(e))
        finally:
            # the pipelines and their buffers go with the thread, not with the feeder
            for lane in self.lanes:
                lane.pipe = None

    def _step(self, lane: Lane) -> bool:
        """One DALI iteration of ``lane``, its planned batches collated; False when the lane
        has ended (all it was given is decoded, or the plan failed)."""
        try:
            outputs = self.maker.run(lane.pipe)
        except StopIteration:
            return False
        except RuntimeError as e:
            if isinstance(self._source_end, Failure):
                return False
            lane.pipe = None  # invalid after a failure
            lane.pipe = self._recover(lane, e)
            return True
        offset = 0
        for planned in lane.in_dali.popleft():
            self._order.made(planned, self._collate(planned, outputs, offset))
            offset += len(planned.examples)
        return True

    def _deliver_in_order(self) -> bool:
        """Settle the planned batches now due, in plan order; False when stopped."""
        return all(self._settle(planned, batch) for planned, batch in self._order.due())

    def _delivery(self) -> Delivery:
        return Delivery(lambda batch: self._put(self._ready, batch), self.settings.fill_empty)

    def _settle(self, planned: Planned | EpochEnd, batch: Seq2SeqBatch | None) -> bool:
        """Deliver ``planned``'s batch (None: it lost every example), or end an epoch; False
        when stopped."""
        if isinstance(planned, EpochEnd):
            self.delivery.finish()
            self.delivery = self._delivery()  # fillers stand in within one epoch
            return self._put(self._ready, planned)
        return self.delivery.deliver(planned, batch)

    def _recover(self, lane: Lane, error: RuntimeError):
        """A file failed inside ``lane``'s pipeline: probe the batches in flight there, drop the
        bad files, rebuild the pipeline and replay what is left, in order."""
        in_flight = [planned for group in lane.in_dali for planned in group]
        lane.in_dali.clear()
        examples = [ex for planned in in_flight for ex in planned.examples]
        verdicts = iter(probe([ex.audio for ex in examples]))
        bad = 0
        replay = []
        for planned in in_flight:
            kept = []
            for ex in planned.examples:
                reason = next(verdicts)
                if reason is None:
                    kept.append(ex)
                else:
                    bad += 1
                    self._skip(planned, ex, reason, f": {str(error).splitlines()[0][:200]}")
            planned.examples = kept
            replay.append(planned)  # an emptied one keeps its place: settled when collated
        if bad == 0:
            raise error  # not a file's fault: nothing to skip, nothing to retry
        log.warning(
            "DALI failed on %d file(s) of %d batch(es) in flight; rebuilt the pipeline "
            "and replayed the rest",
            bad,
            len(in_flight),
        )
        self._replay.extendleft(reversed(replay))
        return self._build(lane)

    def _collate(self, planned: Planned, outputs, offset: int) -> Seq2SeqBatch | None:
        """The batch of ``planned``, whose audio is DALI's outputs from ``offset`` on, less
        the files that decoded to the wrong length or to NaN/inf."""
        examples = planned.examples
        if not examples:
            return None
        decoded = self.maker.decoded(outputs, range(offset, offset + len(examples)))
        speed = planned.speed if planned.speed is not None else np.ones(len(examples))
        kept, keep = [], []
        for i, ex in enumerate(examples):
            # speed perturbation changes the length by 1 / factor
            expected = round(ex.audio_size / float(speed[i]))
            reason = check_decoded(expected, int(decoded.lengths[i]), decoded.nonfinite[i] == 0)
            if reason is None:
                kept.append(ex)
                keep.append(i)
            else:
                self._skip(planned, ex, reason)
        return self.maker.make(kept, decoded, keep, planned.index) if kept else None
