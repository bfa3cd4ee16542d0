"""An epoch's plan as the feeding thread consumes it: each planned batch with its global index
in the epoch and the latest saved plan state at or before it; a restored plan's replay from
metadata; for a single pass on several ranks, this rank's share of the global plan; and an
epoch as the feeder runs it (``EpochRun``), with the marker between two (``EpochEnd``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from dali_asr.planning import sharding
from dali_asr.planning.planners import ChainedState, PlanState
from dali_asr.report import SkipReport
from dali_asr.storage.examples import AudioCache, Example


@dataclass
class Planned:
    """One planned batch on its way: its global index in the epoch's plan, and the latest
    saved plan state at or before it (``state_at`` batches into the plan)."""

    index: int
    examples: list[Example]
    state_at: int = 0
    state: PlanState | ChainedState | None = None
    speed: np.ndarray | None = None
    """Speed perturbation factors of the examples, when it is on."""
    report: SkipReport | None = None
    """Where its examples that prove bad are counted: its epoch's report."""


@dataclass
class EpochRun:
    """One epoch for the feeder: its plan (run on the planning thread), where its skipped
    examples are counted, and where the plan leaves its RNG states at its end."""

    plan: Callable[[], Iterator[Planned]]
    report: SkipReport
    final: list = field(default_factory=list)


@dataclass
class EpochEnd:
    """In the queues after an epoch's last batch when the next epoch (``run``) follows. It
    travels in plan order like a batch that lost every example (``examples`` is empty)."""

    run: EpochRun
    examples: list = field(default_factory=list)


@dataclass
class Resume:
    """Where a restored plan continues: a saved plan state (None = the epoch's start) taken
    after ``at`` batches, then ``skip`` more batches replayed from metadata."""

    at: int
    state: PlanState | ChainedState | None
    skip: int


@dataclass
class Deal:
    """This rank's share of a single pass: global batches i ≡ rank (mod world_size) of a plan
    of ``total`` batches, the last few split (see ``sharding``)."""

    rank: int
    world_size: int
    total: int


def planned_batches(
    planner,
    audio: AudioCache | None,
    resume: Resume | None,
    every: int,
    carry: dict | None,
    final: list,
    deal: Deal | None = None,
) -> Iterator[Planned]:
    """The planner's batches with their global indices and periodic states (every ``every``
    batches; 0 = none): what the feeder feeds, and (``audio`` None: no audio) ``AsrLoader.plan``.

    A single pass plans with its examples' audio attached as it reads them (its windows are
    small). A training stream, a dealt pass (every rank plans the whole pass and feeds its own
    batches) and a restored plan's replay plan from metadata alone; the examples of a batch
    that has no audio get theirs from ``audio`` when the batch comes. ``carry`` continues the
    RNGs of the previous epoch (as the reference's reset keeps them); ``final`` receives this
    epoch's at its end."""
    dealing = deal is not None and deal.world_size > 1
    if resume is not None and resume.state is not None:
        planner.load_state_dict(resume.state)
    attach = audio is not None and planner.finite and not dealing
    plan = planner.batches(with_audio=attach, carry=carry, replay=resume.skip if resume else 0)
    start = resume.at + resume.skip if resume else 0
    latest: list = [resume.at if resume else 0, resume.state if resume else None]

    def indexed() -> Iterator[tuple[int, list[Example]]]:
        index = start
        for batch in plan:
            if every and (index + 1) % every == 0:
                latest[:] = [index + 1, planner.state_dict()]
            yield index, batch
            index += 1

    with contextlib.closing(plan):
        rank, world, total = (deal.rank, deal.world_size, deal.total) if dealing else (0, 1, 0)
        for g, batch in sharding.own_batches(indexed(), rank, world, total):
            if audio is not None:
                audio.fill(batch)
            yield Planned(g, batch, latest[0], latest[1])
        final.append(planner.carry())
