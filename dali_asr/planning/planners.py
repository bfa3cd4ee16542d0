"""Batch plans: examples → length filter → example shuffle → text filters → batcher → batch
shuffle (the reference's order), over one pass of a split or the endless training stream.
Planning never decodes audio: from metadata alone (``dali-asr plan``, ``len()``) and with
the encoded audio attached (the loader) the same code gives the same batches."""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dali_asr.batching import LengthBucketer, StaticBatcher
from dali_asr.batching.batcher import Batcher
from dali_asr.batching.shuffle import BlockShuffler
from dali_asr.batching.sorted_window import SortedWindowBatcher
from dali_asr.config import AsrTaskConfig, BatchingStrategy, MixtureParquetStorageConfig
from dali_asr.keys import ExampleKey
from dali_asr.planning.sampling import WeightedSampler
from dali_asr.planning.stages import Stages
from dali_asr.planning.streaming import (
    Cursor,
    PartitionStream,
    group_partitions,
    load_weights,
)
from dali_asr.report import SkipReport
from dali_asr.storage.examples import Example, ExampleReader, ReadAhead, example_key
from dali_asr.storage.row_groups import ParquetFiles
from dali_asr.text import TextFilter, Tokenizer

log = logging.getLogger(__name__)

TOO_SHORT = "audio_too_short"
TOO_LONG = "audio_too_long"

__all__ = [
    "ChainedPlanner",
    "Example",
    "SinglePassPlanner",
    "TrainStreamPlanner",
    "make_batcher",
]


def make_batcher(task: AsrTaskConfig, sort_window: int = 1000) -> Batcher[Any]:
    """The batching stage for a task config (T6): the reference's STATIC or LENGTH, or
    LENGTH_SORTED (dali-asr's: sort ``sort_window`` examples, cut under the same budget)."""
    if task.batching_strategy is BatchingStrategy.STATIC:
        return StaticBatcher(task.batch_size, drop_remainder=task.drop_remainder)
    if task.batching_strategy is BatchingStrategy.LENGTH_SORTED:
        return SortedWindowBatcher(
            window=sort_window,
            max_num_elements=task.max_num_elements,
            max_len=task.max_audio_len,
            min_len=task.min_audio_len,
            num_seqs_multiple_of=task.num_seqs_multiple_of,
            drop_remainder=task.drop_remainder,
            seed=task.seed + 2,
        )
    sizes = task.length_buckets()
    return LengthBucketer(
        sizes, min_data_len=task.min_audio_len, drop_remainder=task.drop_remainder
    )


def max_batch_size(task: AsrTaskConfig) -> int:
    """The largest batch the plan can emit (DALI's batch_size is a maximum)."""
    return make_batcher(task).largest_batch(task.min_audio_len)


@dataclass
class PlanInputs:
    """What every planner plans from, in one object: the split's files, the task's and the
    storage's settings, the tokenizer, where skipped examples are reported, and the
    LENGTH_SORTED window."""

    files: ParquetFiles
    task: AsrTaskConfig
    tokenizer: Tokenizer
    storage: MixtureParquetStorageConfig = field(default_factory=MixtureParquetStorageConfig)
    report: SkipReport = field(default_factory=SkipReport)
    sort_window: int = 1000


class _Planner:
    """The stages after the example source; subclasses provide ``examples()``."""

    finite = True

    def __init__(self, inputs: PlanInputs, cache_dir: str | None = None) -> None:
        self.files, self.task, self.tokenizer = inputs.files, inputs.task, inputs.tokenizer
        self.report, self.storage = inputs.report, inputs.storage
        self.sort_window = inputs.sort_window
        self.pool: ThreadPoolExecutor | None = None
        self.replayed = 0
        """Batches the last ``batches()`` replayed from metadata (see its ``replay``)."""
        text_filter = TextFilter(
            self.task.min_samples_per_char, self.task.filter_long_text_threshold, self.tokenizer
        )
        self.reader = ExampleReader(self.files, text_filter, cache_dir)
        self.row_groups = self.files.row_groups()
        self._refs = {(r.file_index, r.row_group): r for r in self.row_groups}
        self._lookup_cache: dict[tuple[int, int], list[Example]] = {}
        self.stages: Stages | None = None

    def examples(self, with_audio: bool) -> Iterator[Example]:
        raise NotImplementedError

    def key(self, ex: Example) -> ExampleKey:
        return example_key(self.files.files, ex)

    def example_window(self) -> int:
        return self.task.example_shuffle_window

    def num_streams(self) -> int:
        return 1

    def read_ahead(self) -> int:
        """Row groups read ahead per stream: ``nb_prefetch`` finished tables waiting, plus
        ``num_parallel_fragments - 1`` more loading at the same time (the reference's knobs)."""
        loading = self.storage.fragment_loading
        return max(0, loading.nb_prefetch) + max(0, loading.num_parallel_fragments - 1)

    def batches(
        self,
        with_audio: bool = False,
        state: dict[str, Any] | None = None,
        carry: dict[str, Any] | None = None,
        replay: int = 0,
    ) -> Iterator[list[Example]]:
        """Yield the planned batches in order; ``max_num_batches`` stops the plan early.
        ``state`` (a ``snapshot()``) continues a plan where it was saved, the first ``replay``
        batches planned from metadata (no audio) and not yielded. Between two yielded batches
        ``snapshot()`` gives the state after the last one. Row groups are read ahead
        (``read_ahead()`` per stream) on a pool of ``num_parallel_fragments`` threads (at most
        ``max_workers``), shut down when the generator ends or is closed."""
        limit = self.task.max_num_batches
        depth = self.read_ahead()
        if depth > 0:
            # Reader threads cost memory (each keeps its allocator arenas) more than they save
            # time on a CPU that DALI keeps busy: num_parallel_fragments of them, 1 by default.
            loading = self.storage.fragment_loading
            threads = min(self.storage.max_workers, max(1, loading.num_parallel_fragments))
            self.pool = ThreadPoolExecutor(threads, thread_name_prefix="dali-asr-read")
        self.stages = self._make_stages()
        if carry is not None:
            self.stages.load_rngs(carry)
        if state is not None:
            self.restore_source(state["source"])
            self.stages.restore(state["stages"], self._lookup)
            self._lookup_cache.clear()
        self.replayed = 0
        self.reader.audio_enabled = replay == 0
        try:
            for batch in self.stages.run(self.examples(with_audio), self.finite):
                if limit is not None and self.stages.emitted > limit:
                    return
                if self.replayed < replay:
                    self.replayed += 1
                    self.reader.audio_enabled = self.replayed == replay
                    continue
                yield batch
            for reason, count in self.stages.batcher.skipped.items():
                if count:
                    self.report.add(None, reason, count)
        finally:
            if self.pool is not None:
                # wait: at most the reads in flight, and no thread outlives the plan
                self.pool.shutdown(wait=True, cancel_futures=True)
                self.pool = None

    def carry(self) -> dict[str, Any]:
        """The RNG states at the end of a plan, for the next epoch's (see ``batches``)."""
        assert self.stages is not None
        return self.stages.rngs()

    def snapshot(self) -> dict[str, Any]:
        """The plan's state after the batches yielded so far: positions, RNG states, keys."""
        assert self.stages is not None, "snapshot() between batches of batches()"
        return {"source": self.source_state(), "stages": self.stages.snapshot()}

    def _make_stages(self) -> Stages:
        return Stages(
            BlockShuffler(self.example_window(), self.task.seed),
            make_batcher(self.task, self.sort_window),
            BlockShuffler(self.task.batch_shuffle_window, self.task.seed + 1),
            self._keep_length,
            self._accept,
        )

    def _accept(self, ex: Example) -> bool:
        """The text decision (computed when the row group was read), applied after the shuffle
        as in the reference."""
        if ex.reject is not None:
            self.report.add(self.key(ex), ex.reject)
            return False
        if self.task.remove_unknown:
            ex.tokens = ex.tokens[ex.tokens != self.tokenizer.unk_idx]
        return True

    def _lookup(self, key: list[int]) -> Example:
        """An example of a saved state, read again (metadata only; audio comes later)."""
        file_index, group, row = key
        cached = self._lookup_cache.get((file_index, group))
        if cached is None:
            ref = self._refs[(file_index, group)]
            cached = self._lookup_cache[(file_index, group)] = self.reader.read(ref, False)
        return cached[row]

    def source_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def restore_source(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _keep_length(self, ex: Example) -> bool:
        if ex.audio_size < self.task.min_audio_len:
            self.report.add(self.key(ex), TOO_SHORT)
            return False
        if ex.audio_size > self.task.max_audio_len:
            self.report.add(self.key(ex), TOO_LONG)
            return False
        return True


class SinglePassPlanner(_Planner):
    """One pass over a split's files in path order, rows in file order. ``file_indices``
    restricts it to some of the files (one split of several). It plans the whole split: ranks
    take their share of its batches (``sharding``), unlike the reference, which deals row groups
    to ranks and so gives them different batch counts."""

    def __init__(self, inputs: PlanInputs, file_indices: range | None = None) -> None:
        super().__init__(inputs)
        if file_indices is not None:
            self.row_groups = [r for r in self.row_groups if r.file_index in file_indices]
        self._position = (0, 0)

    def examples(self, with_audio: bool) -> Iterator[Example]:
        """Rows in file order from ``self._position`` = (row group index, rows consumed in it),
        which is kept current for ``source_state()``."""
        start, skip = self._position
        refs = iter(self.row_groups[start:])
        tables = ReadAhead(self.reader, refs, with_audio, self.read_ahead(), self.pool)
        for index, rows in enumerate(tables, start=start):
            for r in range(skip if index == start else 0, len(rows)):
                self._position = (index, r + 1)
                yield rows[r]

    def source_state(self) -> dict[str, Any]:
        return {"row_group_index": self._position[0], "rows_consumed": self._position[1]}

    def restore_source(self, state: dict[str, Any]) -> None:
        self._position = (int(state["row_group_index"]), int(state["rows_consumed"]))


class ChainedPlanner:
    """Several single passes in turn (comma-separated validation splits): each split is
    planned on its own, as the reference builds one reader per split."""

    finite = True

    def __init__(self, planners: list[SinglePassPlanner]) -> None:
        self.planners = planners
        self._part = 0

    def key(self, ex: Example) -> ExampleKey:
        return self.planners[0].key(ex)

    def batches(
        self,
        with_audio: bool = False,
        state: dict[str, Any] | None = None,
        carry: dict[str, Any] | None = None,
        replay: int = 0,
    ) -> Iterator[list[Example]]:
        """Each split in turn; ``carry`` is ignored (every split starts its RNGs afresh)."""
        start = state["part"] if state else 0
        for i in range(start, len(self.planners)):
            self._part = i
            inner = state["inner"] if state and i == start else None
            yield from self.planners[i].batches(with_audio, inner, replay=replay)
            replay -= self.planners[i].replayed  # a replay may run past a split's end

    def snapshot(self) -> dict[str, Any]:
        return {"part": self._part, "inner": self.planners[self._part].snapshot()}

    def carry(self) -> dict[str, Any]:
        return {}


class TrainStreamPlanner(_Planner):
    """The endless training stream of one rank: per-partition row-group permutations (seed
    ``fragment_streaming.seed + i`` for partition i, 1-based, at every world size), dealt
    round-robin to ranks, mixed by the weighted sampler (``sampling_seed``)."""

    finite = False

    def __init__(
        self,
        inputs: PlanInputs,
        rank: int = 0,
        world_size: int = 1,
        reference_quirks: bool = False,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(inputs, cache_dir)
        storage, files = inputs.storage, inputs.files
        self.reference_quirks = reference_quirks
        self._restored: dict[str, Any] | None = None
        self.rank = rank
        self.world_size = world_size
        partitions = group_partitions(files.files, self.row_groups)
        weights = load_weights(
            partitions, storage.dataset_summary_path, storage.beta_corpus, storage.beta_language
        )
        if weights is None or len(partitions) == 1:
            # The reference flattens everything into one stream: that is partition 1.
            merged = partitions[0]
            merged.row_groups = list(self.row_groups)
            self.partitions, self.weights = [merged], [1.0]
        else:
            kept = [(p, w) for p, w in zip(partitions, weights, strict=True) if w > 0]
            for i, (p, _) in enumerate(kept, start=1):
                p.index = i
            self.partitions = [p for p, _ in kept]
            self.weights = [w for _, w in kept]
        self.streams: list[PartitionStream] = []
        self._prefix: deque[list[int]] = deque()

    def example_window(self) -> int:
        window = self.task.example_shuffle_window
        if window == 0:
            window = sum(ref.num_rows for ref in self.row_groups)
        return window

    def num_streams(self) -> int:
        return len(self.partitions)

    def examples(self, with_audio: bool) -> Iterator[Example]:
        seed = self.storage.fragment_streaming.seed
        if self.reference_quirks:
            seed += self.world_size
        restored = self._restored
        self.streams = [
            PartitionStream(
                p,
                seed + p.index,
                self.reader,
                with_audio,
                Cursor.from_state(restored["streams"][i])
                if restored
                else Cursor([], self.rank, self.world_size),
                self.read_ahead(),
                self.pool,
            )
            for i, p in enumerate(self.partitions)
        ]
        self.sampler = WeightedSampler(self.weights, self.storage.sampling_seed)
        self._prefix = deque(restored["prefix"]) if restored else deque()
        if restored:
            self.sampler.load_state_dict(restored["sampler"])
        elif self.reference_quirks:
            # The reference warms each partition pipeline up by pulling one example.
            for stream in self.streams:
                next(stream)
        mixed = iter(self.streams[0]) if len(self.streams) == 1 else self._mixture()
        return itertools.chain(self._prefixed(), mixed)

    def _prefixed(self) -> Iterator[Example]:
        """Examples an elastic resume dealt to this rank (read, not consumed, by the old ranks):
        they come before the partition streams (metadata now, audio when their batch comes)."""
        while self._prefix:
            ex = self._lookup(self._prefix[0])
            self._prefix.popleft()
            yield ex
        self._lookup_cache.clear()

    def _mixture(self) -> Iterator[Example]:
        """The reference's ``DataPipeline.sample`` over endless streams. It buffers one
        look-ahead example per stream and returns the picked stream's buffer; the streams are
        independent, so taking the picked stream's next example is the same sequence, without
        reading a row group of every partition before the first batch."""
        while True:
            yield next(self.streams[self.sampler.pick()])

    def source_state(self) -> dict[str, Any]:
        return {
            "prefix": list(self._prefix),
            "streams": [s.cursor().as_state() for s in self.streams],
            "sampler": self.sampler.state_dict(),
        }

    def restore_source(self, state: dict[str, Any]) -> None:
        self._restored = state
