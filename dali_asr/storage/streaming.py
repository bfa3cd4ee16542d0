"""The training stream's example sources (§3.4, §3.5): one endless stream per (corpus, language)
partition, its row groups in seeded permutations dealt round-robin to ranks, mixed by the
temperature-weighted sampler."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dali_asr.storage.examples import Example, ExampleReader, ReadAhead
from dali_asr.storage.row_groups import RowGroupRef
from dali_asr.storage.weights import partition_weights, read_stats_tsv

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


class PartitionStream:
    """Endless examples of one partition: row groups in permuted order, this rank's share
    (positions rank, rank + world, ... of the endless sequence), rows in file order."""

    def __init__(
        self,
        partition: Partition,
        seed: int,
        reader: ExampleReader,
        with_audio: bool,
        rank: int = 0,
        world_size: int = 1,
        prefetch: int = 0,
        pool: Executor | None = None,
        serving: int | None = None,
        rows_consumed: int = 0,
    ) -> None:
        self.partition = partition
        self.order = row_group_order(len(partition.row_groups), seed)
        self.step = world_size
        # ``position``: the next cycle position to read (read-ahead runs in front);
        # ``serving``: the position whose rows are being handed out (for the resume state).
        self.position = rank if serving is None else serving
        self.serving: int | None = None
        self._fetched: deque[int] = deque()
        self._tables = ReadAhead(reader, self._refs(), with_audio, prefetch, pool)
        self._rows: list[Example] = []
        self._next_row = 0
        self._skip = rows_consumed if serving is not None else 0

    def _refs(self) -> Iterator[RowGroupRef]:
        while True:
            self._fetched.append(self.position)
            yield self.partition.row_groups[self.order[self.position % len(self.order)]]
            self.position += self.step

    def state(self) -> tuple[int | None, int]:
        """(cycle position being served, rows of it handed out): where to resume."""
        return self.serving, self._next_row

    def __iter__(self) -> Iterator[Example]:
        return self

    def __next__(self) -> Example:
        while self._next_row >= len(self._rows):
            self._rows = next(self._tables)
            self.serving = self._fetched.popleft()
            self._next_row, self._skip = self._skip, 0
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
