"""Batch plans: examples → length filter → example shuffle → text filters → batcher → batch
shuffle (the reference's order), over one pass of a split or the endless training stream.
Planning never decodes audio: from metadata alone (``dali-asr plan``, ``len()``) and with
the encoded audio attached (the loader) the same code gives the same batches."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypedDict

from dali_asr.batching import LengthBucketer, StaticBatcher
from dali_asr.batching.batcher import Batcher
from dali_asr.batching.shuffle import BlockShuffler
from dali_asr.batching.sorted_window import SortedWindowBatcher
from dali_asr.config import AsrTaskConfig, BatchingStrategy, MixtureParquetStorageConfig
from dali_asr.keys import ExampleKey
from dali_asr.planning.sources import (
    ExampleSource,
    FileOrderSource,
    MixturePosition,
    MixtureSource,
    PassPosition,
)
from dali_asr.planning.stages import Stages, StagesState
from dali_asr.planning.streaming import group_partitions, load_weights
from dali_asr.report import SkipReport
from dali_asr.storage.examples import Example, ExampleReader, KeyLookup, example_key
from dali_asr.storage.row_groups import ParquetFiles
from dali_asr.text import TextFilter, Tokenizer

log = logging.getLogger(__name__)

TOO_SHORT = "audio_too_short"
TOO_LONG = "audio_too_long"

__all__ = [
    "ChainedPlanner",
    "ChainedState",
    "Example",
    "PlanState",
    "SinglePassPlanner",
    "TrainStreamPlanner",
    "make_batcher",
]


def make_batcher(task: AsrTaskConfig, sort_window: int = 1000) -> Batcher[Any]:
    """The batching stage for a task config: the reference's STATIC or LENGTH, or
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


class PlanState(TypedDict):
    """A plan between two batches: the example source's position and the stages' state."""

    source: PassPosition | MixturePosition
    stages: StagesState


class ChainedState(TypedDict):
    """Several splits in turn: the split being planned and its own plan's state."""

    part: int
    inner: PlanState


class _Planner:
    """The stages after an example source (``self.source``, made by subclasses)."""

    finite = True

    def __init__(self, inputs: PlanInputs) -> None:
        self.files, self.task, self.tokenizer = inputs.files, inputs.task, inputs.tokenizer
        self.report, self.storage = inputs.report, inputs.storage
        self.sort_window = inputs.sort_window
        self.replayed = 0
        """Batches the last ``batches()`` replayed from metadata (see its ``replay``)."""
        text_filter = TextFilter(
            self.task.min_samples_per_char, self.task.filter_long_text_threshold, self.tokenizer
        )
        self.reader = ExampleReader(self.files, text_filter)
        self.row_groups = self.files.row_groups()
        self.lookup = KeyLookup(self.reader, self.row_groups)
        self.source: ExampleSource
        self.stages: Stages | None = None
        self._loaded: PlanState | None = None

    def key(self, ex: Example) -> ExampleKey:
        return example_key(self.files.files, ex)

    def example_window(self) -> int:
        return self.task.example_shuffle_window

    def audio_cache_size(self) -> int:
        """Row groups whose audio a plan from metadata keeps (``AudioCache``): each stream's
        row groups in flight (read ahead, and the one being served), and as many again as the
        example shuffle window spans, so that a waiting example's row group is rarely read
        twice."""
        rows = sum(r.num_rows for r in self.row_groups) / max(1, len(self.row_groups))
        window = -(-self.example_window() // max(1, int(rows)))
        return self.num_streams() * (self.read_ahead() + 1) + window + 1

    def num_streams(self) -> int:
        return 1

    def read_ahead(self) -> int:
        """Row groups read ahead per stream: ``nb_prefetch`` finished tables waiting, plus
        ``num_parallel_fragments - 1`` more loading at the same time (the reference's knobs)."""
        loading = self.storage.fragment_loading
        return max(0, loading.nb_prefetch) + max(0, loading.num_parallel_fragments - 1)

    def batches(
        self, with_audio: bool = False, carry: dict[str, Any] | None = None, replay: int = 0
    ) -> Iterator[list[Example]]:
        """Yield the planned batches in order; ``max_num_batches`` stops the plan early. After
        ``load_state_dict`` the plan continues where that state was saved, its first ``replay``
        batches planned from metadata (no audio) and not yielded; ``carry`` (the previous
        epoch's ``carry()``) continues its RNGs. Between two yielded batches ``state_dict()``
        gives the state after the last one. Row groups are read ahead (``read_ahead()`` per
        stream) on a pool of ``num_parallel_fragments`` threads (at most ``max_workers``), shut
        down when the generator ends or is closed."""
        limit = self.task.max_num_batches
        pool = None
        if self.read_ahead() > 0:
            # Reader threads cost memory (each keeps its allocator arenas) more than they save
            # time on a CPU that DALI keeps busy: num_parallel_fragments of them, 1 by default.
            loading = self.storage.fragment_loading
            threads = min(self.storage.max_workers, max(1, loading.num_parallel_fragments))
            pool = ThreadPoolExecutor(threads, thread_name_prefix="dali-asr-read")
        self.stages = self._make_stages()
        if carry is not None:
            self.stages.load_rngs(carry)
        loaded, self._loaded = self._loaded, None
        if loaded is not None:
            self.source.load_state_dict(loaded["source"])
            self.stages.load_state_dict(loaded["stages"])
            self.lookup.clear()
        self.replayed = 0
        self.reader.audio_enabled = replay == 0
        try:
            for batch in self.stages.run(self.source.examples(with_audio, pool), self.finite):
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
            if pool is not None:
                # wait: at most the reads in flight, and no thread outlives the plan
                pool.shutdown(wait=True, cancel_futures=True)

    def carry(self) -> dict[str, Any]:
        """The RNG states at the end of a plan, for the next epoch's (see ``batches``)."""
        assert self.stages is not None
        return self.stages.rngs()

    def state_dict(self) -> PlanState:
        """The plan's state after the batches yielded so far: positions, RNG states, keys."""
        assert self.stages is not None, "state_dict() between batches of batches()"
        return {"source": self.source.state_dict(), "stages": self.stages.state_dict()}

    def load_state_dict(self, state: PlanState) -> None:
        """Continue from ``state`` on the next ``batches()``."""
        self._loaded = state

    def _make_stages(self) -> Stages:
        return Stages(
            BlockShuffler(self.example_window(), self.task.seed),
            make_batcher(self.task, self.sort_window),
            BlockShuffler(self.task.batch_shuffle_window, self.task.seed + 1),
            self._keep_length,
            self._accept,
            self.lookup,
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
        refs = self.row_groups
        if file_indices is not None:
            refs = [r for r in refs if r.file_index in file_indices]
        self.source = FileOrderSource(self.reader, refs, self.read_ahead())


class ChainedPlanner:
    """Several single passes in turn (comma-separated validation splits): each split is
    planned on its own, as the reference builds one reader per split."""

    finite = True

    def __init__(self, planners: list[SinglePassPlanner]) -> None:
        self.planners = planners
        self._part = 0
        self._loaded: ChainedState | None = None

    def key(self, ex: Example) -> ExampleKey:
        return self.planners[0].key(ex)

    def batches(
        self, with_audio: bool = False, carry: dict[str, Any] | None = None, replay: int = 0
    ) -> Iterator[list[Example]]:
        """Each split in turn; ``carry`` is ignored (every split starts its RNGs afresh)."""
        loaded, self._loaded = self._loaded, None
        start = loaded["part"] if loaded else 0
        for i in range(start, len(self.planners)):
            self._part = i
            if loaded and i == start:
                self.planners[i].load_state_dict(loaded["inner"])
            yield from self.planners[i].batches(with_audio, replay=replay)
            replay -= self.planners[i].replayed  # a replay may run past a split's end

    def audio_cache_size(self) -> int:
        return max(p.audio_cache_size() for p in self.planners)

    def state_dict(self) -> ChainedState:
        return {"part": self._part, "inner": self.planners[self._part].state_dict()}

    def load_state_dict(self, state: ChainedState) -> None:
        self._loaded = state

    def carry(self) -> dict[str, Any]:
        return {}


class TrainStreamPlanner(_Planner):
    """The endless training stream of one rank: its partitions (weighted by the stats TSV, or
    one stream of everything) mixed by a ``MixtureSource``; row-group permutations seeded
    ``fragment_streaming.seed + i`` for partition i (1-based) at every world size."""

    finite = False

    def __init__(
        self,
        inputs: PlanInputs,
        rank: int = 0,
        world_size: int = 1,
        reference_quirks: bool = False,
    ) -> None:
        super().__init__(inputs)
        storage, files = inputs.storage, inputs.files
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
        seed = storage.fragment_streaming.seed
        self.source = MixtureSource(
            self.partitions,
            self.weights,
            self.reader,
            self.lookup,
            # the reference's quirk: the world size shifts the seeds
            seed=seed + world_size if reference_quirks else seed,
            sampling_seed=storage.sampling_seed,
            rank=rank,
            world_size=world_size,
            depth=self.read_ahead(),
            warm_up=reference_quirks,
        )

    def example_window(self) -> int:
        window = self.task.example_shuffle_window
        if window == 0:
            window = sum(ref.num_rows for ref in self.row_groups)
        return window

    def num_streams(self) -> int:
        return len(self.partitions)
