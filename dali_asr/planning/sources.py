"""Example sources, the first stage of a plan: rows in file order for one pass over a split,
or the training stream's weighted mixture of endless partition streams. Each source keeps the
position of the last example it handed out, as a small JSON state (``state_dict``)."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from typing import Protocol, TypedDict

from dali_asr.planning.sampling import SamplerState, WeightedSampler
from dali_asr.planning.streaming import Cursor, Partition, PartitionStream
from dali_asr.storage.examples import Example, ExampleReader, KeyLookup, ReadAhead
from dali_asr.storage.row_groups import RowGroupRef


class PassPosition(TypedDict):
    """A single pass's position: row groups finished, and rows consumed in the next one."""

    row_group_index: int
    rows_consumed: int


class MixturePosition(TypedDict):
    """A training stream's position: the examples an elastic resume dealt to this rank and
    not yet handed out (keys), each partition stream's cursor (``Cursor.as_state``), and the
    partition sampler's RNG."""

    prefix: list[list[int]]
    streams: list[list[int]]
    sampler: SamplerState


class ExampleSource(Protocol):
    """Examples for the stages (``stages.Stages``), with a resumable position."""

    def examples(self, with_audio: bool, pool: Executor | None) -> Iterator[Example]: ...

    def state_dict(self) -> PassPosition | MixturePosition: ...

    def load_state_dict(self, state) -> None: ...


class FileOrderSource:
    """Rows in file order over ``row_groups`` (path order), ``depth`` row groups read ahead."""

    def __init__(self, reader: ExampleReader, row_groups: list[RowGroupRef], depth: int) -> None:
        self.reader, self.row_groups, self.depth = reader, row_groups, depth
        self._position = (0, 0)

    def examples(self, with_audio: bool, pool: Executor | None) -> Iterator[Example]:
        """Rows from the position; it is kept current for ``state_dict()``."""
        start, skip = self._position
        refs = iter(self.row_groups[start:])
        tables = ReadAhead(self.reader, refs, with_audio, self.depth, pool)
        for index, rows in enumerate(tables, start=start):
            for r in range(skip if index == start else 0, len(rows)):
                self._position = (index, r + 1)
                yield rows[r]

    def state_dict(self) -> PassPosition:
        return {"row_group_index": self._position[0], "rows_consumed": self._position[1]}

    def load_state_dict(self, state: PassPosition) -> None:
        self._position = (int(state["row_group_index"]), int(state["rows_consumed"]))


class MixtureSource:
    """The training stream of one rank: per-partition row-group permutations (seed ``seed +
    partition.index``), dealt round-robin to ranks, mixed by the weighted sampler."""

    def __init__(
        self,
        partitions: list[Partition],
        weights: Sequence[float],
        reader: ExampleReader,
        lookup: KeyLookup,
        *,
        seed: int,
        sampling_seed: int,
        rank: int,
        world_size: int,
        depth: int,
        warm_up: bool = False,
    ) -> None:
        self.partitions, self.weights = partitions, list(weights)
        self.reader, self.lookup = reader, lookup
        self.seed, self.sampling_seed = seed, sampling_seed
        self.rank, self.world_size, self.depth = rank, world_size, depth
        self.warm_up = warm_up
        """The reference's quirk: each partition pipeline pulls one example before mixing."""
        self.streams: list[PartitionStream] = []
        self.sampler = WeightedSampler(self.weights, sampling_seed)
        self._prefix: deque[list[int]] = deque()
        self._restored: MixturePosition | None = None

    def examples(self, with_audio: bool, pool: Executor | None) -> Iterator[Example]:
        restored = self._restored
        cursors = (
            [Cursor.from_state(s) for s in restored["streams"]]
            if restored
            else [Cursor([], self.rank, self.world_size) for _ in self.partitions]
        )
        self.streams = [
            PartitionStream(p, self.seed + p.index, self.reader, with_audio, c, self.depth, pool)
            for p, c in zip(self.partitions, cursors, strict=True)
        ]
        self.sampler = WeightedSampler(self.weights, self.sampling_seed)
        self._prefix = deque(restored["prefix"]) if restored else deque()
        if restored:
            self.sampler.load_state_dict(restored["sampler"])
        elif self.warm_up:
            for stream in self.streams:
                next(stream)
        mixed = iter(self.streams[0]) if len(self.streams) == 1 else self._mixture()
        return itertools.chain(self._prefixed(), mixed)

    def _prefixed(self) -> Iterator[Example]:
        """Examples an elastic resume dealt to this rank (read, not consumed, by the old ranks):
        they come before the partition streams (metadata now, audio when their batch comes)."""
        while self._prefix:
            ex = self.lookup(self._prefix[0])
            self._prefix.popleft()
            yield ex
        self.lookup.clear()

    def _mixture(self) -> Iterator[Example]:
        """The reference's ``DataPipeline.sample`` over endless streams. It buffers one
        look-ahead example per stream and returns the picked stream's buffer; the streams are
        independent, so taking the picked stream's next example is the same sequence, without
        reading a row group of every partition before the first batch."""
        while True:
            yield next(self.streams[self.sampler.pick()])

    def state_dict(self) -> MixturePosition:
        return {
            "prefix": list(self._prefix),
            "streams": [s.cursor().as_state() for s in self.streams],
            "sampler": self.sampler.state_dict(),
        }

    def load_state_dict(self, state: MixturePosition) -> None:
        """Applied when ``examples()`` next starts the streams."""
        self._restored = state
