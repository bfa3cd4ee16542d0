"""The planning stages after the example source, as a state machine that can be saved between
any two batches and restored exactly.

length filter → example shuffle → text filters → batcher → batch shuffle. Examples move through
explicit queues, so the state between two batches is: the RNG states, and the keys of the
examples waiting in the example shuffle, between the shuffle and the batcher, in the batcher,
and in the batch shuffle. Keys, never audio: a restored example is read again from its row
group (metadata, and audio when it is fed to DALI).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, NotRequired, TypedDict

from dali_asr.batching.batcher import Batcher
from dali_asr.batching.shuffle import BlockShuffler
from dali_asr.storage.examples import Example


class BatcherState(TypedDict):
    waiting: list[list[int]]
    """``Batcher.export_waiting`` rows: plain ints ending in each example's key."""
    rng: NotRequired[dict[str, Any]]


class StagesState(TypedDict):
    """The stages between two batches: batches emitted, whether the source has ended, the RNG
    states, and the keys ``[file index, row group, row]`` of every waiting example."""

    emitted: int
    flushed: bool
    shuffler: dict[str, Any]
    shuffled_waiting: list[list[int]]
    pending_examples: list[list[int]]
    batcher: BatcherState
    batch_shuffler: dict[str, Any]
    batches_waiting: list[list[list[int]]]
    pending_batches: list[list[list[int]]]


def key_of(ex: Example) -> list[int]:
    return [ex.file_index, ex.row_group, ex.row]


class Stages:
    """Runs the stages over an example source; ``state_dict()`` between two yielded batches.
    ``lookup`` turns a saved key back into its example (``load_state_dict``)."""

    def __init__(
        self,
        shuffler: BlockShuffler[Example],
        batcher: Batcher[Example],
        batch_shuffler: BlockShuffler[list[Example]],
        keep_length: Callable[[Example], bool],
        accept: Callable[[Example], bool],
        lookup: Callable[[list[int]], Example],
    ) -> None:
        self.shuffler = shuffler
        self.batcher = batcher
        self.batch_shuffler = batch_shuffler
        self.keep_length = keep_length
        self.accept = accept
        self.lookup = lookup
        self.pending_examples: deque[Example] = deque()
        self.pending_batches: deque[list[Example]] = deque()
        self.emitted = 0
        self.flushed = False

    def run(self, source: Iterator[Example], finite: bool) -> Iterator[list[Example]]:
        """Yield batches; between two yields the state is consistent for ``state_dict()``."""
        while True:
            if self.pending_batches:
                batch = self.pending_batches.popleft()
                self.emitted += 1
                yield batch
                continue
            if self.pending_examples:
                self._batch(self.pending_examples.popleft())
                continue
            if self.flushed:
                return
            ex = next(source, None)
            if ex is None:
                if not finite:
                    return
                self._flush()
                continue
            if self.keep_length(ex):
                self.pending_examples.extend(self.shuffler.push(ex))

    def _batch(self, ex: Example) -> None:
        if not self.accept(ex):
            return
        for batch in self.batcher.push(ex, ex.audio_size):
            self.pending_batches.extend(self.batch_shuffler.push(batch))

    def _flush(self) -> None:
        """End of a finite source: everything left becomes batches, in the reference's order."""
        for ex in self.shuffler.flush():
            self._batch(ex)
        for batch in self.batcher.flush():
            self.pending_batches.extend(self.batch_shuffler.push(batch))
        self.pending_batches.extend(self.batch_shuffler.flush())
        self.flushed = True

    # -- state ---------------------------------------------------------------------------------

    def rngs(self) -> dict[str, Any]:
        """The RNG states alone: what the next epoch continues from (the reference's reset)."""
        out = {
            "shuffler": self.shuffler.state_dict(),
            "batch_shuffler": self.batch_shuffler.state_dict(),
        }
        if batcher := self.batcher.state_dict():
            out["batcher"] = batcher
        return out

    def load_rngs(self, rngs: dict[str, Any]) -> None:
        """Continue the RNGs of a previous epoch (empty queues, nothing waiting)."""
        self.shuffler.load_state_dict(rngs["shuffler"])
        self.batch_shuffler.load_state_dict(rngs["batch_shuffler"])
        if "batcher" in rngs:
            self.batcher.load_state_dict(rngs["batcher"])

    def state_dict(self) -> StagesState:
        """JSON-serialisable: RNG states and the keys of every waiting example."""
        return {
            "emitted": self.emitted,
            "flushed": self.flushed,
            "shuffler": self.shuffler.state_dict(),
            "shuffled_waiting": [key_of(ex) for ex in self.shuffler.waiting()],
            "pending_examples": [key_of(ex) for ex in self.pending_examples],
            "batcher": self._batcher_state(),
            "batch_shuffler": self.batch_shuffler.state_dict(),
            "batches_waiting": [[key_of(ex) for ex in b] for b in self.batch_shuffler.waiting()],
            "pending_batches": [[key_of(ex) for ex in b] for b in self.pending_batches],
        }

    def _batcher_state(self) -> BatcherState:
        out: BatcherState = {"waiting": self.batcher.export_waiting(key_of)}
        if rng := self.batcher.state_dict():
            out["rng"] = rng
        return out

    def load_state_dict(self, state: StagesState) -> None:
        """Load ``state_dict()`` output; the waiting examples are read again by ``lookup``."""
        lookup = self.lookup
        self.emitted = int(state["emitted"])
        self.flushed = bool(state["flushed"])
        self.shuffler.load_state_dict(state["shuffler"])
        self.shuffler.restore_waiting([lookup(k) for k in state["shuffled_waiting"]])
        self.pending_examples = deque(lookup(k) for k in state["pending_examples"])
        self.batch_shuffler.load_state_dict(state["batch_shuffler"])
        self.batch_shuffler.restore_waiting(
            [[lookup(k) for k in b] for b in state["batches_waiting"]]
        )
        self.pending_batches = deque([lookup(k) for k in b] for b in state["pending_batches"])
        if "rng" in state["batcher"]:
            self.batcher.load_state_dict(state["batcher"]["rng"])
        self.batcher.import_waiting(state["batcher"]["waiting"], lookup, lambda ex: ex.audio_size)


def waiting_keys(state: StagesState) -> list[list[int]]:
    """Every example key in a ``Stages.state_dict()``, the furthest along first (batches, then
    the batcher, then the examples before it)."""
    keys = [k for b in state["pending_batches"] + state["batches_waiting"] for k in b]
    keys += [w[-3:] for w in state["batcher"]["waiting"]]
    return keys + list(state["pending_examples"]) + list(state["shuffled_waiting"])


def drained(state: StagesState) -> StagesState:
    """A ``Stages.state_dict()`` with its RNG states and batch count, and nothing waiting."""
    return {
        **state,
        "flushed": False,
        "shuffled_waiting": [],
        "pending_examples": [],
        "batcher": {**state["batcher"], "waiting": []},
        "batches_waiting": [],
        "pending_batches": [],
    }
