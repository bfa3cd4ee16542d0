"""Elastic resume of the training stream: the states of all N ranks, loaded on M ranks.

Every new rank computes the same redistribution from the same list of states and keeps its
share, so the examples no old rank has consumed are consumed exactly once after the change:

1. Each old rank's exact position: its saved plan state, then the batches its training loop
   received after it replayed from metadata (as a same-size resume does; no audio is read).
2. Row groups. Per partition, the old cursors together name every cycle position nobody has
   read: their pending (position, first row) pairs (a row group partly served is one, from its
   first unserved row), the positions of their ``next, next + N, ...`` runs below
   Q = the largest ``next``, and every position from Q on. The unread ones below Q, in position
   order, are dealt round-robin (new rank s takes the s-th, (s + M)-th, ...), and new rank s
   then reads Q + s, Q + s + M, ...
3. Examples read but not consumed (waiting in a shuffle window, a bucket, a planned batch, or
   still in the prefix of an earlier elastic resume), old rank 0's first, each rank's furthest
   along first, are dealt round-robin too: they open new rank s's source, ahead of its
   partition streams, and go through the length filter, shuffles and batching again.
4. RNG states (the partition sampler, the shuffles, the sorted window) are old rank 0's, on
   every new rank, as every rank of a fresh stream starts from the same seeds.

A single pass needs none of this: its state is global (see ``sharding``).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from dali_asr.errors import ConfigError
from dali_asr.planning.planners import PlanState
from dali_asr.planning.sources import MixturePosition
from dali_asr.planning.stages import drained, waiting_keys
from dali_asr.planning.streaming import Cursor
from dali_asr.report import SkipReport
from dali_asr.resume.state import LoaderState

State = LoaderState


@dataclass(frozen=True)
class Target:
    """The loader a list of saved states is loaded into, as far as elastic resume needs it."""

    endless: bool
    rank: int
    world_size: int
    plan_config: dict[str, Any]
    """The new loader's ``resume.state.plan_config``: what its state's ``config`` will say."""
    reference_train_stream: bool
    planner: Callable[[SkipReport, int, int], Any]
    """``planner(report, rank, world_size)``: a planner of another rank's training stream."""


def own_state(states: list[State], loader: Target) -> State:
    """The state ``loader`` continues from, out of states saved by the ranks of one run."""
    if not loader.endless:
        return states[0]  # global: any rank's
    worlds = sorted({int(s["config"]["world_size"]) for s in states})
    ranks = sorted(int(s["config"]["rank"]) for s in states)
    if len(worlds) > 1:
        raise ConfigError(f"resume states were saved with different world sizes: {worlds}")
    saved = worlds[0]
    if saved == loader.world_size:
        for s in states:
            if s["config"]["rank"] == loader.rank:
                return s
        raise ConfigError(
            f"resume states of ranks {ranks} (of {saved}) hold none for rank {loader.rank}: "
            "each rank of a training stream continues from its own"
        )
    if ranks != list(range(saved)):
        raise ConfigError(
            f"elastic resume from {saved} to {loader.world_size} ranks needs the states of all "
            f"{saved} ranks (0..{saved - 1}) of one step; got those of ranks {ranks}"
        )
    return redistribute(sorted(states, key=lambda s: int(s["config"]["rank"])), loader)


def redistribute(states: list[State], loader: Target) -> State:
    """This loader's share of the old ranks' ``states`` (in rank order), as a state to load."""
    points = sorted({(s["epoch"], s["epoch_finished"], s["consumed"]) for s in states})
    if len(points) > 1:
        raise ConfigError(
            "elastic resume needs the states of all ranks at one step, but they stand at "
            f"different (epoch, epoch finished, batches) points: {points}"
        )
    if loader.reference_train_stream:
        raise ConfigError(
            "dali_asr.reference_train_stream seeds the row-group order with the world size (the "
            "reference's quirk), so positions do not carry over to another world size"
        )
    first = states[0]
    new = {**first, "config": loader.plan_config}
    if first["epoch_finished"]:
        return new  # the next epoch starts afresh, with old rank 0's RNGs (``carry``)
    if not int(first["consumed"]):
        return {**new, "state_at": 0, "plan_state": None}  # nothing read yet
    exact = [exact_position(s, loader, r) for r, s in enumerate(states)]
    sources = [cast(MixturePosition, p["source"]) for p in exact]
    rank, world = loader.rank, loader.world_size
    waiting = [
        k for p, src in zip(exact, sources, strict=True)
        for k in waiting_keys(p["stages"]) + src["prefix"]
    ]  # fmt: skip
    streams = [
        deal_positions([Cursor.from_state(src["streams"][i]) for src in sources], world)[rank]
        for i in range(len(sources[0]["streams"]))
    ]
    source: MixturePosition = {
        "prefix": waiting[rank::world],
        "streams": [c.as_state() for c in streams],
        "sampler": sources[0]["sampler"],
    }
    plan: PlanState = {"source": source, "stages": drained(exact[0]["stages"])}
    return {**new, "state_at": int(first["consumed"]), "plan_state": plan}


def exact_position(state: State, loader: Target, rank: int) -> PlanState:
    """Old rank ``rank``'s plan state after the batches its loop received: the saved state,
    then the ones after it replayed from metadata."""
    skip = int(state["consumed"]) - int(state["state_at"])
    if skip == 0 and state["plan_state"] is not None:
        return cast(PlanState, state["plan_state"])
    planner = loader.planner(SkipReport(), rank, int(state["config"]["world_size"]))
    if state["plan_state"] is not None:
        planner.load_state_dict(state["plan_state"])
    plan = planner.batches(False, carry=state["carry"])
    with contextlib.closing(plan):
        for _ in itertools.islice(plan, skip):
            pass
        return cast(PlanState, planner.state_dict())


def deal_positions(cursors: list[Cursor], world_size: int) -> list[Cursor]:
    """One partition's unread row-group positions, from the cursors of all old ranks (in rank
    order), dealt to ``world_size`` new ranks (see the module's step 2)."""
    step = len(cursors)
    residues = sorted(c.next % step for c in cursors)
    if any(c.step != step for c in cursors) or residues != list(range(step)):
        raise ConfigError(
            f"resume states do not fit together: {step} ranks whose row-group runs are "
            f"(next, step) {[(c.next, c.step) for c in cursors]}, expected steps of {step} "
            "starting at distinct residues; were they saved at one step of one run?"
        )
    edge = max(c.next for c in cursors)
    unread = [p for c in cursors for p in c.pending]
    unread += [(p, 0) for c in cursors for p in range(c.next, edge, step)]
    unread.sort()
    return [Cursor(unread[s::world_size], edge + s, world_size) for s in range(world_size)]
