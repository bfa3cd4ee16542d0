"""The planning thread of a ``Feeder``: an epoch's planned batches (with encoded audio) into a
bounded queue, then, when its plan ends, the next epoch's (``follow``), so the next epoch's
first batches are read and decoded while the training loop finishes this one, as DALI's own
readers run ahead across epochs; an ``EpochEnd`` between two epochs' batches, END after the
last, or the Failure that ended planning."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

from dali_asr.planning.epoch_plan import EpochEnd, EpochRun

log = logging.getLogger(__name__)

END = object()


class Failure:
    """An exception travelling from a worker thread to the training loop."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def plan_epochs(
    first: EpochRun,
    follow: Callable[[EpochRun], EpochRun | None] | None,
    put: Callable[[object], bool],
    stopped: threading.Event,
) -> None:
    """Plan ``first`` and the epochs that ``follow`` it into ``put`` (False: stopped)."""
    run: EpochRun | None = first
    try:
        while run is not None:
            planned = 0
            # closing() ends the plan (and its read-ahead pool) when this thread stops early
            with contextlib.closing(run.plan()) as plan:
                for batch in plan:
                    batch.report = run.report
                    planned += 1
                    if not put(batch):
                        return
            # an epoch of no batches would be followed by as empty ones without end
            run = _next_run(run, follow, stopped) if planned else None
            if run is not None and not put(EpochEnd(run)):
                return
        put(END)
    except BaseException as e:
        put(Failure(e))


def _next_run(
    run: EpochRun, follow: Callable[[EpochRun], EpochRun | None] | None, stopped: threading.Event
) -> EpochRun | None:
    """The epoch after ``run``, or None: following is off, the feeder stopped, or the next
    epoch cannot be set up (the next ``iter()`` sets it up afresh and meets that error
    itself, where this epoch's training loop would take it for its own). Tiny epochs may
    be planned several ahead: the queues bound the work, not the epochs. (Waiting here for
    the loop to start the next epoch would deadlock: DALI returns an iteration's outputs
    only once its source has given the iteration after it.)"""
    if follow is None or stopped.is_set():
        return None
    try:
        return follow(run)
    except Exception:
        log.debug("the next epoch could not be planned ahead", exc_info=True)
        return None
