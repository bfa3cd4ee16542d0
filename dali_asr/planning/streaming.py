"""The training stream's example sources: one endless stream per (corpus, language)
partition, its row groups in seeded permutations dealt round-robin to ranks, mixed by the
temperature-weighted sampler."""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dali_asr.planning.weights import partition_weights, read_stats_tsv
from dali_asr.storage.examples import Example, ExampleReader, ReadAhead
from dali_asr.storage.row_groups import RowGroupRef

log = logging.getLogger(__name__)

# The reference lists 100 permutations and then repeats that list, so the pattern recycles.
PERMUTATIONS_PER_CYCLE = 100


@dataclass
class Partition:
    """The files of one (corpus, language) of a split. ``index`` is 1-based in path order."""

    index: int
    corpus: str
    language: str
    row_groups: list[RowGroupRef] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.corpus}/{self.language}"


def group_partitions(files, row_groups: Sequence[RowGroupRef]) -> list[Partition]:
    """Partitions in order of first appearance along the sorted file list (the reference's
    order), each with its row groups in file order."""
    by_key: dict[tuple[str, str], Partition] = {}
    for ref in row_groups:
        f = files[ref.file_index]
        part = by_key.get((f.corpus, f.language))
        if part is None:
            part = by_key[(f.corpus, f.language)] = Partition(len(by_key) + 1, f.corpus, f.language)
        part.row_groups.append(ref)
    return list(by_key.values())


def row_group_order(num_row_groups: int, seed: int) -> np.ndarray:
    """One cycle of the reference's fragment order: 100 successive ``RandomState(seed)``
    permutations, concatenated."""
    rng = np.random.RandomState(seed)
    return np.concatenate([rng.permutation(num_row_groups) for _ in range(PERMUTATIONS_PER_CYCLE)])


@dataclass
class Cursor:
    """Where one rank's share of a partition stream continues: the ``pending`` (cycle position,
    first row) pairs in order, then positions ``next``, ``next + step``, ... from their first
    row. A fresh rank r of N is ``Cursor([], r, N)``; an elastic resume deals the positions no
    rank has read yet into ``pending`` lists (see ``dali_asr.resume.elastic``)."""

    pending: list[tuple[int, int]]
    next: int
    step: int

    def item(self, i: int) -> tuple[int, int]:
        """The i-th (position, first row) this cursor reads."""
        if i < len(self.pending):
            return self.pending[i]
        return self.next + (i - len(self.pending)) * self.step, 0

    def as_state(self) -> list[int]:
        """``[next, step, position, first row, position, first row, ...]``: a 1,000-partition
        mixture's state holds one per partition, so it is kept flat."""
        return [self.next, self.step, *(v for pair in self.pending for v in pair)]

    @classmethod
    def from_state(cls, state: list[int]) -> Cursor:
        flat = [int(v) for v in state]
        return cls(list(zip(flat[2::2], flat[3::2], strict=True)), flat[0], flat[1])


class PartitionStream:
    """Endless examples of one partition: row groups in permuted order, this rank's share
    (the cycle positions its ``Cursor`` names), rows in file order."""

    def __init__(
        self,
        partition: Partition,
        seed: int,
        reader: ExampleReader,
        with_audio: bool,
        cursor: Cursor,
        prefetch: int = 0,
        pool: Executor | None = None,
    ) -> None:
        self.partition = partition
        self.order = row_group_order(len(partition.row_groups), seed)
        self._cursor = cursor
        # Indices (into the cursor's items) read ahead, and the one whose rows are handed out:
        # the state is taken at the latter, whatever the read-ahead has fetched.
        self._fetched: deque[int] = deque()
        self._serving: int | None = None
        self._tables = ReadAhead(reader, self._refs(), with_audio, prefetch, pool)
        self._rows: list[Example] = []
        self._next_row = 0

    def ref_at(self, position: int) -> RowGroupRef:
        """The row group at a cycle position (positions run on past the cycle, which repeats)."""
        return self.partition.row_groups[self.order[position % len(self.order)]]

    def positions(self) -> Iterator[tuple[int, int]]:
        """(cycle position, first row) of every row group this stream reads, in order."""
        for i in itertools.count():
            yield self._cursor.item(i)

    def _refs(self) -> Iterator[RowGroupRef]:
        for i, (position, _) in enumerate(self.positions()):
            self._fetched.append(i)
            yield self.ref_at(position)

    def cursor(self) -> Cursor:
        """Where to resume: the rest of the row group being served, then what follows it."""
        if self._serving is None:
            return self._cursor
        i, c = self._serving, self._cursor
        position = c.item(i)[0]
        rest = [(position, self._next_row)] if self._next_row < len(self._rows) else []
        next_position = c.next if i < len(c.pending) else position + c.step
        return Cursor(rest + c.pending[i + 1 :], next_position, c.step)

    def __iter__(self) -> Iterator[Example]:
        return self

    def __next__(self) -> Example:
        while self._next_row >= len(self._rows):
            self._rows = next(self._tables)
            self._serving = self._fetched.popleft()
            self._next_row = self._cursor.item(self._serving)[1]
        ex = self._rows[self._next_row]
        self._next_row += 1
        return ex


def load_weights(
    partitions: list[Partition],
    summary_path: str | Path | None,
    beta_corpus: float | None,
    beta_language: float | None,
) -> list[float] | None:
    """Per-partition weights from the stats TSV, or None for one unweighted stream. Partitions
    on disk but not in the TSV are dropped from the mixture and named in a warning; TSV rows
    with no files in the split are named too."""
    if summary_path is None:
        return None
    hours = read_stats_tsv(summary_path)
    weights = partition_weights(hours, beta_corpus, beta_language)
    on_disk = {(p.corpus, p.language) for p in partitions}
    missing = [f"{c}/{lang}" for c, lang in weights if (c, lang) not in on_disk]
    if missing:
        log.warning(
            "stats TSV %s lists partitions with no files in this split: %s",
            summary_path,
            ", ".join(sorted(missing)),
        )
    unweighted = [p.name for p in partitions if (p.corpus, p.language) not in weights]
    if unweighted:
        log.warning(
            "partitions not in the stats TSV %s are left out of the mixture: %s",
            summary_path,
            ", ".join(unweighted),
        )
    return [weights.get((p.corpus, p.language), 0.0) for p in partitions]
