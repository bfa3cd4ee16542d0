"""``AsrLoader``, the object a training loop iterates: it opens the dataset, plans each epoch
(``planning/``), runs the epoch's threads (``pipeline/feeding.py``), and saves and restores its
position (``resume/``). docs/ARCHITECTURE.md draws the whole flow."""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from dali_asr.batch import Seq2SeqBatch
from dali_asr.config import LoaderConfig, load_config
from dali_asr.errors import ConfigError
from dali_asr.pipeline.augment import make_augmenter
from dali_asr.pipeline.collate import BatchMaker
from dali_asr.pipeline.cuda_env import device_index, resolve_auto_budget, resolve_device
from dali_asr.pipeline.epoch import Epoch
from dali_asr.pipeline.feeding import Feeder
from dali_asr.pipeline.host_memory import tune_host_memory
from dali_asr.pipeline.settings import PipelineSettings, decode_pipelines, decode_samples
from dali_asr.planning import sharding
from dali_asr.planning.epoch_plan import Deal, EpochRun, Resume, planned_batches
from dali_asr.planning.planners import (
    ChainedPlanner,
    Example,
    PlanInputs,
    SinglePassPlanner,
    TrainStreamPlanner,
    max_batch_size,
)
from dali_asr.planning.sharding import resolve_rank
from dali_asr.report import HeldReport, KnownBad, SkipReport
from dali_asr.resume.elastic import Target, own_state
from dali_asr.resume.state import (
    LoaderState,
    check_compatible,
    dataset_fingerprint,
    loader_state,
    plan_config,
    resume_point,
)
from dali_asr.storage.examples import AudioCache
from dali_asr.storage.opening import CacheFolder, open_dataset
from dali_asr.storage.opening import size_pyarrow_pools as size_pools
from dali_asr.telemetry import Telemetry
from dali_asr.text import Tokenizer

log = logging.getLogger(__name__)


class AsrLoader:
    """Iterate ``Seq2SeqBatch`` objects over one split of an Omnilingual parquet dataset.

    ``data`` is the dataset root (the folder holding ``corpus=*``, or one wrapping a single
    ``version=*``); ``config`` a LoaderConfig or a YAML path; ``tokenizer`` a SentencePiece
    model path, a Tokenizer, or None for the built-in character vocabulary of ``data``.
    ``size_pyarrow_pools`` applies ``pa_cpu_count`` to pyarrow's process-wide thread pools (as
    the reference does; off by default, since they are every pyarrow user's in the process).
    Each ``iter()`` is one epoch.
    """

    def __init__(
        self,
        data: str | Path,
        split: str = "train",
        config: LoaderConfig | str | Path | None = None,
        tokenizer: Tokenizer | str | Path | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        filesystem: pafs.FileSystem | None = None,
        size_pyarrow_pools: bool = False,
    ) -> None:
        self.config = config if isinstance(config, LoaderConfig) else load_config(config)
        self.task = self.config.asr_task_config
        settings = self.config.dali_asr
        self.device = resolve_device(settings.device)
        self.device_id = device_index(settings.device_id)
        resolve_auto_budget(self.task, self.device, settings.device_id)
        self.config.validate()
        tune_host_memory(settings)  # before any thread of ours
        self.split = split
        self.splits = [s.strip() for s in split.split(",") if s.strip()]
        storage = self.config.mixture_parquet_storage_config
        self.endless = storage.makes_training_stream(split)
        if self.endless and len(self.splits) > 1:
            raise ConfigError(
                f"split {split!r}: several comma-separated splits make one pass each, but "
                f"{split!r} with sync_mode UNTIL_FIRST asks for an endless training stream; "
                "set sync_mode: UNTIL_LAST"
            )
        self.rank, self.world_size = resolve_rank(rank, world_size)
        if size_pyarrow_pools:
            size_pools(storage.pa_cpu_count)
        opened = open_dataset(
            data,
            self.splits,
            partition_filters=storage.fragment_streaming.partition_filters,
            use_threads=storage.fragment_loading.use_threads,
            filesystem=filesystem,
        )
        self.root, self.files, self.segments = opened.root, opened.files, opened.segments
        self.filesystem = opened.filesystem
        if opened.is_manifest:
            self.endless = False  # one pass, sharded by chunks of 100 lines across ranks
        self.files.check_all()
        self.tokenizer = opened.tokenizer(tokenizer)
        if self.task.example_shuffle_window == 0:
            log.warning(
                "example_shuffle_window 0 shuffles %s at once: every example, with its encoded "
                "audio, is held in memory",
                "blocks of one split's worth of rows" if self.endless else "the whole split",
            )
        self.report = SkipReport()
        self.known_bad = KnownBad()
        """Examples whose audio proved bad: later epochs drop them before DALI sees them."""
        self.telemetry = Telemetry(log_every=self.config.dali_asr.telemetry_log_every)
        """Padding, batch sizes, loader stalls and language shares; ``telemetry.as_dict()``."""
        self._len: int | None = None
        self._epoch: Epoch | None = None
        self._resume: Resume | None = None
        self._carry: dict | None = None
        self.epoch = 0
        """Epochs started (the current one's number, from 1)."""
        loading = storage.fragment_loading
        self._cache = CacheFolder(loading.cache, loading.cache_dir)

    def planner(
        self, report: SkipReport | None = None, rank: int | None = None, world: int | None = None
    ) -> SinglePassPlanner | TrainStreamPlanner:
        """A planner over this split; ``batches()`` gives the plan without decoding audio.
        ``rank``/``world`` plan another rank's training stream (an elastic resume's replay)."""
        inputs = PlanInputs(
            self.files,
            self.task,
            self.tokenizer,
            self.config.mixture_parquet_storage_config,
            report if report is not None else SkipReport(),
            self.config.dali_asr.sort_window,
        )
        if self.endless:
            return TrainStreamPlanner(
                inputs,
                self.rank if rank is None else rank,
                self.world_size if world is None else world,
                self.config.dali_asr.reference_train_stream,
            )
        planners = [SinglePassPlanner(inputs, file_indices=s) for s in self.segments]
        return planners[0] if len(planners) == 1 else ChainedPlanner(planners)

    def __len__(self) -> int:
        """Batches per epoch, from a metadata-only planning pass (cached). An endless training
        stream has a length only when ``max_num_batches`` caps it."""
        if self.endless:
            if self.task.max_num_batches is None:
                raise TypeError(
                    f"split {self.split!r} is an endless training stream (sync_mode "
                    "UNTIL_FIRST): it has no length unless asr_task_config.max_num_batches is set"
                )
            return self.task.max_num_batches
        return sharding.batches_per_rank(self.global_batches(), self.world_size)

    def __iter__(self) -> Iterator[Seq2SeqBatch]:
        if self._epoch is not None:
            if self._epoch.finished and self._epoch.final:
                self._carry = self._epoch.final[0]
            following = self._epoch.following(self)
            if following is not None:
                self.epoch += 1
                self._epoch = following
                return following
            self._epoch.close()
        settings = self.config.dali_asr
        resume, self._resume = self._resume, None
        # a restored plan state overrides these RNGs; one taken at the epoch's start has none
        run = self._epoch_run(resume, self._carry, self.report)
        deal = self._deal()
        follow = None
        if settings.prefetch_next_epoch:
            # weakly: the feeder's threads must not keep the loader alive
            follow = functools.partial(_plan_ahead, weakref.ref(self))
        feeder = Feeder(
            run,
            maker=self.batch_maker(),
            settings=PipelineSettings(
                max_batch_size=max_batch_size(self.task),
                num_threads=settings.num_threads,
                device=self.device,
                device_id=self.device_id,
                prefetch_queue_depth=settings.prefetch_queue_depth,
                on_bad_audio=settings.on_bad_audio,
                decode_batch=settings.decode_batch,
                decode_pipelines=decode_pipelines(settings.decode_pipelines, settings.num_threads),
                decode_samples=decode_samples(self.task, settings.decode_samples),
                fill_empty=self.world_size > 1,
            ),
            num_prefetch=self.task.num_prefetch,
            known_bad=self.known_bad,
            follow=follow,
        )
        if resume is None:
            self.epoch += 1
        # a training stream's batch indices are the rank's own, a dealt pass's global
        world = deal.world_size if deal else 1
        self._epoch = Epoch(feeder, resume, run.final, self, self.report, self.telemetry, world)
        return self._epoch

    def _epoch_run(self, resume: Resume | None, carry: dict | None, report: SkipReport) -> EpochRun:
        """An epoch's plan for the feeder: from ``resume`` (None: the start), continuing the
        RNGs ``carry``, its skips counted in ``report``."""
        planner = self.planner(report)
        if isinstance(planner, TrainStreamPlanner) and len(planner.partitions) > 1:
            self.telemetry.set_targets(
                {p.name: w for p, w in zip(planner.partitions, planner.weights, strict=True)}
            )
        settings = self.config.dali_asr
        every, final = settings.state_every, []
        capacity = settings.audio_cache_row_groups or planner.audio_cache_size()
        audio = AudioCache(self.files, capacity, self._cache.path())
        deal = self._deal()
        return EpochRun(
            lambda: planned_batches(planner, audio, resume, every, carry, final, deal),
            report,
            final,
        )

    def _deal(self) -> Deal | None:
        """A single pass on several ranks: every rank plans the whole split (metadata) and takes
        its share of the batches (see ``sharding``)."""
        if self.endless or self.world_size == 1:
            return None
        return Deal(self.rank, self.world_size, self.global_batches())

    def global_batches(self) -> int:
        """Batches of one pass over the split, all ranks together (metadata pass, cached)."""
        if self._len is None:
            self._len = sum(1 for _ in self.planner(SkipReport()).batches())
        return self._len

    def state_dict(self) -> LoaderState:
        """The loader's position: JSON-serialisable, small, no audio. Loading it (here or in a
        new process) continues with exactly the batches that would have come next."""
        point = self._epoch.resume_point() if self._epoch is not None else self._resume
        finished = self._epoch is not None and self._epoch.finished and self._resume is None
        carry = self._epoch.final[0] if finished and self._epoch.final else self._carry
        return self._state(point, finished, carry)

    def _state(self, point: Resume | None, finished: bool, carry: dict | None) -> LoaderState:
        return loader_state(
            self.epoch,
            finished,
            point,
            carry,
            dataset_fingerprint(self.files.files, self.files.row_groups()),
            self._plan_config(),
            dict(self.report.counts),
            self.known_bad.state_dict(),
        )

    @property
    def next_plan_index(self) -> int:
        """Index in the epoch's plan of the next batch ``iter()`` or ``plan()`` will give."""
        point = self._resume
        if point is None and self._epoch is not None and not self._epoch.finished:
            point = self._epoch.resume_point()
        return point.at + point.skip if point is not None else 0

    def plan(self) -> Iterator[list[Example]]:
        """This rank's plan from the current (or loaded) position, from metadata alone: what
        ``iter()`` would deliver, without reading audio (the feeder's path, audio off).
        ``plan_state()`` between two batches gives the state after the last one."""
        resume, self._resume = self._resume, None
        planner = self.planner(self.report)
        self._planning = (planner, resume.at + resume.skip if resume else 0)
        deal = self._deal()
        world = deal.world_size if deal else 1
        for planned in planned_batches(planner, None, resume, 0, self._carry, [], deal):
            self._planning = (planner, (planned.index // world + 1) * world)
            yield planned.examples

    def plan_state(self) -> LoaderState:
        """The state after the batches ``plan()`` has yielded (as ``state_dict()`` gives)."""
        planner, consumed = self._planning
        return self._state(Resume(consumed, planner.state_dict(), 0), False, self._carry)

    def _plan_config(self) -> dict[str, Any]:
        return plan_config(
            self.config, self.split, self.rank, self.world_size, self.tokenizer.fingerprint()
        )

    def resume_target(self) -> Target:
        """This loader as elastic resume sees it (``dali_asr.resume.elastic``)."""
        return Target(
            self.endless,
            self.rank,
            self.world_size,
            self._plan_config(),
            self.config.dali_asr.reference_train_stream,
            self.planner,
        )

    def load_state_dict(self, state: LoaderState | list[LoaderState]) -> None:
        """Continue from ``state_dict()`` output: the next ``iter()`` resumes the saved epoch
        (or starts the one after it, when the saved epoch had ended). A training stream saved
        on another number of ranks loads from the list of every rank's state (elastic resume,
        see ``dali_asr.resume.elastic``); a single pass's state is global, any rank's will do."""
        states = [state] if isinstance(state, dict) else list(state)
        dataset = dataset_fingerprint(self.files.files, self.files.row_groups())
        config = self._plan_config()
        for saved in states:
            check_compatible(saved, dataset, config)
        state = own_state(states, self.resume_target())
        for saved in states:  # every rank's findings, whichever state this rank continues
            self.known_bad.load_state_dict(saved.get("bad_examples", {}))
        self.close()
        self._epoch = None
        self._carry = state["carry"]
        self.epoch = int(state["epoch"])
        self._resume = resume_point(state)

    def batch_maker(self) -> BatchMaker:
        """The collation of this loader's device: NumPy references on the CPU, the CUDA
        kernels (``gpu_collate``) on the GPU."""
        settings = self.config.dali_asr
        args = (self.files.files, self.tokenizer.pad_idx, self.config.output_dtype)
        kwargs = {
            "pad_to_multiple": settings.pad_to_multiple,
            "use_fbank": self.task.use_fbank,
            "normalize_audio": self.task.normalize_audio,
            "augmenter": make_augmenter(settings),
        }
        if self.device == "gpu":
            from dali_asr.pipeline.gpu_collate import GpuBatchMaker

            return GpuBatchMaker(*args, device_id=self.device_id, **kwargs)
        return BatchMaker(*args, **kwargs)

    def close(self) -> None:
        """Stop the threads of the running epoch and remove a temporary row-group cache;
        safe to call more than once."""
        if getattr(self, "_epoch", None) is not None:
            self._epoch.close()
            self._epoch = None
        if getattr(self, "_cache", None) is not None:
            self._cache.remove()

    def __enter__(self) -> AsrLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _plan_ahead(loader: weakref.ref[AsrLoader], run: EpochRun) -> EpochRun | None:
    """The epoch after ``run``, planned ahead by the feeder (``prefetch_next_epoch``): a fresh
    epoch from the RNGs ``run`` ended with, as the next ``iter()`` would start it."""
    owner = loader()
    if owner is None or not run.final:
        return None
    return owner._epoch_run(None, run.final[0], HeldReport())
