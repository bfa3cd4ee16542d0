"""The configuration's schema: Omnilingual's ``asr_task_config`` and
``mixture_parquet_storage_config`` (same keys, same defaults) plus dali-asr's own ``dali_asr``
section, as dataclasses, and the checks of their values."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from dali_asr.errors import ConfigError

log = logging.getLogger(__name__)


class BatchingStrategy(str, Enum):
    LENGTH = "LENGTH"
    STATIC = "STATIC"
    LENGTH_SORTED = "LENGTH_SORTED"
    """dali-asr's: sort a window of ``dali_asr.sort_window`` examples by length and cut
    batches under LENGTH's budget rules (better padding than first-fit buckets)."""


class SyncMode(str, Enum):
    UNTIL_FIRST = "UNTIL_FIRST"
    UNTIL_LAST = "UNTIL_LAST"


@dataclass
class AsrTaskConfig:
    """Omnilingual's ``AsrTaskConfig`` (omnilingual-asr 0.2.0), same names and defaults."""

    min_audio_len: int = 1
    """Shortest example kept, in samples; also the first bucket's lower bound."""
    max_audio_len: int = 800_000
    """Longest example kept, in samples (50 s at 16 kHz)."""
    batching_strategy: BatchingStrategy = BatchingStrategy.LENGTH
    batch_size: int = 8
    """STATIC only: examples per batch."""
    num_seqs_multiple_of: int = 8
    """LENGTH only: bucket sizes above this are rounded down to a multiple of it."""
    max_num_elements: int | str = 3_200_000
    """Samples per LENGTH batch (after the round-down), or ``"auto"``: about 40,000 per GB of
    the GPU's memory, resolved by the loader on its device."""
    """LENGTH only: padded samples per batch; rounded down to a multiple of max_audio_len."""
    max_bucket_size: int | None = None
    """LENGTH only: drop buckets holding more sequences than this (the short ones)."""
    drop_remainder: bool = False
    filter_long_text_threshold: int | None = None
    """Drop examples with more tokens than this."""
    remove_unknown: bool = False
    """Remove ``<unk>`` tokens from targets (the reference crashes; dali-asr does it)."""
    min_samples_per_char: int = 160
    """Drop "too fast" speech: audio samples per text character below this."""
    normalize_audio: bool = False
    """Per-utterance layer-norm of the waveform (eps 1e-5)."""
    use_fbank: bool = False
    """80-bin Kaldi log-mel fbank, standardised per bin, instead of the waveform."""
    spec_aug_p: float | None = None
    spec_aug_freq_mask_param: int = 80
    spec_aug_time_mask_param: int = 80
    unified_audio_feature_keys: bool = True
    example_shuffle_window: int = 0
    """1 = off, N = shuffle blocks of N examples, 0 = whole split."""
    batch_shuffle_window: int = 1000
    """1 = off, N = shuffle blocks of N batches."""
    npc: int = 10
    seed: int = 2
    no_padding: bool = False
    max_num_batches: int | None = None
    """Stop after this many batches per epoch."""
    num_prefetch: int = 4
    """Collated batches prepared ahead of the training loop."""

    def length_buckets(self) -> list[tuple[int, int]]:
        """The LENGTH bucket table (batch size, length bound) for these settings, with
        Omnilingual's round-down of max_num_elements and the max_bucket_size cap."""
        from dali_asr.batching import length_bucket_sizes

        return length_bucket_sizes(
            min_audio_len=self.min_audio_len,
            max_audio_len=self.max_audio_len,
            max_num_elements=self.max_num_elements,
            num_seqs_multiple_of=self.num_seqs_multiple_of,
            max_bucket_size=self.max_bucket_size,
        )


@dataclass
class ParquetDatasetLimitOptions:
    fraction_of_files: float | None = None
    nb_files: int | None = None
    nb_fragments: int | None = None
    nb_rows: int | None = None


@dataclass
class FragmentStreamingConfig:
    """fairseq2's ``FragmentStreamingConfig`` with Omnilingual's overrides."""

    parquet_path: str | list[str] = ""
    filesystem: Any = None
    name: str | None = None
    weight: float = 1.0
    partition_filters: str | list[str] | None = None
    limit: ParquetDatasetLimitOptions = field(default_factory=ParquetDatasetLimitOptions)
    split_to_row_groups: bool = True
    seed: int = 2
    """Base seed of the per-partition row-group permutations (training stream)."""
    fragment_shuffle_window: int = 0
    files_circular_shift: bool = False
    nb_epochs: int | None = None


@dataclass
class FragmentLoadingConfig:
    """fairseq2's ``FragmentLoadingConfig`` with Omnilingual's overrides."""

    columns: Any = None
    rename_columns: bool = True
    add_fragment_traces: bool = False
    drop_null: bool = False
    min_batch_size: int = 1
    filters: str | list[str] | None = None
    non_deterministic_read: bool = False
    use_threads: bool = False
    nb_prefetch: int = 1
    num_parallel_fragments: int = 1
    cache: bool = False
    """The reference's default is true (a memory-mapped copy of every row group read). dali-asr
    copies each example's bytes out of its row group, so no row group stays resident, and the
    mapped copy only costs CPU and makes RSS swing (measured: README, benchmarks/RESULTS.md)."""
    cache_dir: str | None = None


@dataclass
class MixtureParquetStorageConfig:
    """Omnilingual's ``MixtureParquetStorageConfig``, same names and defaults."""

    sync_batches: bool = True
    sync_mode: SyncMode = SyncMode.UNTIL_FIRST
    """UNTIL_FIRST on a split named like ``*train*`` makes an endless training stream."""
    fragment_streaming: FragmentStreamingConfig = field(default_factory=FragmentStreamingConfig)
    fragment_loading: FragmentLoadingConfig = field(default_factory=FragmentLoadingConfig)
    dataset_summary_path: str | None = None
    """Stats TSV (corpus, language, hours) for the partition weights."""
    beta_corpus: float | None = None
    beta_language: float | None = None
    pa_cpu_count: int = 20
    max_workers: int = 30
    split_column: str = "split"
    num_prefetch: int = 1
    parquet_path_name: str = "_parquet_path"
    sampling_seed: int = 261

    def makes_training_stream(self, split: str) -> bool:
        """The reference's rule: a split named like ``*train*`` with UNTIL_FIRST is an
        endless, shuffled mixture stream; anything else is one pass."""
        return "train" in split and self.sync_mode is SyncMode.UNTIL_FIRST


@dataclass
class SpecAugmentSettings:
    """The ``dali_asr.spec_augment`` section."""

    p: float = 0.0
    """Probability that an example is masked at all; 0 turns SpecAugment off."""
    num_freq_masks: int = 2
    max_freq_width: int = 27
    num_time_masks: int = 2
    max_time_width: int = 100
    max_time_ratio: float = 0.2
    """A time mask covers at most this fraction of the utterance's frames."""


@dataclass
class DaliAsrSettings:
    """dali-asr's own settings (the ``dali_asr:`` section)."""

    device: str = "auto"
    """``auto`` (GPU when CUDA is available), ``cpu`` or ``gpu``."""
    device_id: int | None = None
    """CUDA device; None = ``LOCAL_RANK`` modulo the visible GPUs, else the current device."""
    num_threads: int = 2
    """DALI CPU threads (audio decoding)."""
    dtype: str | None = None
    """Output dtype of the audio features: float32, bfloat16, float16. None = the recipe's
    mixed-precision dtype, else float32."""
    on_bad_audio: str = "skip"
    """``skip`` (count and report) or ``error``."""
    prefetch_queue_depth: int = 2
    """Batches DALI decodes ahead of the one being collated."""
    prefetch_next_epoch: bool = True
    """When an epoch's plan ends, go on planning, reading and decoding the next epoch's first
    batches while the training loop finishes this one (as DALI's readers run ahead across
    epochs): the next ``iter()`` starts without a stall. The next epoch's skipped examples are
    counted when the loop starts it. False: an epoch's threads and DALI pipeline end with it,
    so that a loader used now and then (validation) holds nothing in between."""
    decode_pipelines: int | None = None
    """DALI pipelines decoding in turn (batches still leave in plan order): DALI opens an
    iteration's files on one thread while its workers wait, and with two one opens while the
    other decodes. None: two where cores > ``num_threads`` + 2, else one (docs/ARCHITECTURE.md,
    benchmarks/RESULTS.md 2026-12-07)."""
    decode_batch: int = 128
    """Files per DALI iteration: consecutive planned batches are decoded together up to this
    many files (when they are ready), so a batch of two long files does not idle the threads,
    and each iteration's serial part and hand-offs weigh less."""
    decode_samples: int | None = None
    """Samples of audio per DALI iteration: consecutive planned batches are grouped only while
    their audio fits this too (a group's first batch always goes whole). It bounds the memory
    DALI holds for the iterations in flight; counted in files alone, rare groups of many long
    files kept the process's memory growing for a quarter of an hour (benchmarks/RESULTS.md,
    soak). None = eight of the largest planned batch: 8 × ``max_num_elements`` (``batch_size *
    max_audio_len`` with STATIC batching)."""
    malloc_arena_max: int | None = 2
    """glibc malloc arenas for the whole process (``mallopt`` M_ARENA_MAX). DALI allocates
    each iteration's decoded audio on its threads and the loader frees it on its own; with
    glibc's default of an arena per allocating thread, each arena kept its own free memory,
    sized by the largest iterations it had seen (two held ~170 MB each, mostly free).
    null: glibc's default (up to 8 arenas per core)."""
    malloc_trim_threshold: int | None = 128 * 2**20
    """Free bytes at the top of a malloc heap kept before glibc hands them back (M_TRIM_THRESHOLD).
    glibc's own threshold follows the largest block freed so far; below one iteration's
    buffers, each iteration's ~30 MB was handed back and faulted in again, and the process's
    memory swung by 4 % from one sample to the next. null: glibc's default."""
    malloc_mmap_threshold: int | None = 32 * 2**20
    """Blocks this large or larger get their own mapping (M_MMAP_THRESHOLD; glibc's largest
    allowed: 32 MiB on 64 bits). Setting either threshold stops glibc's own adjustment of both,
    which starts at 128 KiB: without this one, every batch-sized block would be mapped and
    faulted in afresh (17 % less throughput measured). null: glibc's default."""
    host_buffer_shrink_threshold: float | None = 0.0
    """DALI reallocates a host buffer smaller when a request is under this fraction of its
    capacity (``DALI_HOST_BUFFER_SHRINK_THRESHOLD``, 0.5 in DALI 2.4), for the whole process.
    0: never; each buffer keeps the largest size it has held, and the process's memory stays
    flat: DALI's 0.5 freed and took again one decode buffer (~30 MB) after another, and in a
    soak the memory moved in those steps by up to 6 %. null: DALI's default."""
    host_pool_threshold: int | None = 2**20
    """DALI's host allocations of this many bytes or more come from DALI's own pool, which
    keeps and reuses its memory (``DALI_MALLOC_POOL_THRESHOLD``, for the whole process; DALI
    reads it once, for its first host buffer, which the first loader makes with the variable
    set, then removes it: children do not inherit it). DALI's own threshold (32 MiB) leaves
    each iteration's decoded audio (up to ~30 MB, a fresh block every iteration) to glibc,
    whose heaps it fragments: in a soak the process's memory rose in steps of such a block,
    +7.4 % in 8 minutes; with 1 MiB, within 0.3 % and 10 % lower (benchmarks/RESULTS.md).
    0: no pool; null: DALI's default."""
    pad_to_multiple: int = 1
    """Pad the time axis of every batch to a multiple of this (static shapes)."""
    telemetry_log_every: int | None = None
    """Log one telemetry line (padding, stalls, language shares) every N batches."""
    state_every: int = 16
    """Batches between two saved plan states: a restore replays at most this many batches
    from metadata."""
    sort_window: int = 1000
    """LENGTH_SORTED: examples sorted together; memory is this many examples."""
    audio_cache_row_groups: int | None = None
    """A training stream plans from metadata and reads the audio of a row group when a planned
    batch first needs it, keeping this many row groups' audio for the batches after (least
    recently used out). None = enough for every partition's row groups in flight and the
    example shuffle window (``planners.audio_cache_size``); lower it to cap memory when row
    groups are large, at the cost of reading some again."""
    reference_train_stream: bool = False
    """Reproduce the reference's training stream batch for batch, quirks included: partition
    seeds offset by the world size and each partition's first example discarded."""
    speed_perturb: list[float] | None = None
    """Speed perturbation (off by default): each example's factor is drawn from this list,
    e.g. [0.9, 1.0, 1.1], seeded per example; a factor f makes the audio 1/f as long (a batch
    can then exceed max_num_elements by up to 1/min(f))."""
    spec_augment: SpecAugmentSettings = field(default_factory=SpecAugmentSettings)
    """SpecAugment on fbank (off by default: ``p: 0``); real frequency and time masks."""
    augment_seed: int = 0
    """Seed of every augmentation draw (with the example's key and the batch's plan index)."""


@dataclass
class LoaderConfig:
    """Everything the loader needs besides the data path."""

    asr_task_config: AsrTaskConfig = field(default_factory=AsrTaskConfig)
    mixture_parquet_storage_config: MixtureParquetStorageConfig = field(
        default_factory=MixtureParquetStorageConfig
    )
    dali_asr: DaliAsrSettings = field(default_factory=DaliAsrSettings)
    train_split: str | None = "train"
    valid_split: str | None = "dev"

    def validate(self) -> None:
        """Raise ConfigError for values no run can use, naming the key."""
        t = self.asr_task_config
        _require(t.min_audio_len >= 1, "asr_task_config.min_audio_len", "an integer >= 1")
        _require(
            t.max_audio_len >= t.min_audio_len,
            "asr_task_config.max_audio_len",
            f">= min_audio_len ({t.min_audio_len})",
        )
        if t.max_num_elements == "auto":
            pass  # resolved by the loader on its device, then checked again
        elif t.batching_strategy is not BatchingStrategy.STATIC:
            _require(
                t.max_num_elements >= t.max_audio_len,
                "asr_task_config.max_num_elements",
                f">= max_audio_len ({t.max_audio_len}), or no bucket can hold one example",
            )
            _require(t.num_seqs_multiple_of >= 1, "asr_task_config.num_seqs_multiple_of", ">= 1")
            if t.batching_strategy is BatchingStrategy.LENGTH:
                _check_buckets(t)
        else:
            _require(t.batch_size >= 1, "asr_task_config.batch_size", ">= 1")
        for key in ("example_shuffle_window", "batch_shuffle_window"):
            _require(getattr(t, key) >= 0, f"asr_task_config.{key}", ">= 0 (1 = off, 0 = all)")
        _require(t.min_samples_per_char >= 0, "asr_task_config.min_samples_per_char", ">= 0")
        _require(t.num_prefetch >= 0, "asr_task_config.num_prefetch", ">= 0")
        d = self.dali_asr
        _require(d.device in ("auto", "cpu", "gpu"), "dali_asr.device", "auto, cpu or gpu")
        _require(d.num_threads >= 1, "dali_asr.num_threads", ">= 1")
        _require(d.on_bad_audio in ("skip", "error"), "dali_asr.on_bad_audio", "skip or error")
        _require(
            d.dtype in (None, "float32", "bfloat16", "float16"),
            "dali_asr.dtype",
            "float32, bfloat16 or float16",
        )
        _require(d.prefetch_queue_depth >= 1, "dali_asr.prefetch_queue_depth", ">= 1")
        _require(d.pad_to_multiple >= 1, "dali_asr.pad_to_multiple", ">= 1")
        _require(d.sort_window >= 1, "dali_asr.sort_window", ">= 1")
        _require(d.state_every >= 1, "dali_asr.state_every", ">= 1")
        _require(
            d.audio_cache_row_groups is None or d.audio_cache_row_groups >= 1,
            "dali_asr.audio_cache_row_groups",
            ">= 1 or null",
        )
        _require(d.decode_batch >= 1, "dali_asr.decode_batch", ">= 1")
        _require(
            d.decode_pipelines is None or d.decode_pipelines >= 1,
            "dali_asr.decode_pipelines",
            ">= 1 or null (two where cores > num_threads + 2, else one)",
        )
        for key in ("malloc_arena_max", "malloc_trim_threshold", "malloc_mmap_threshold"):
            value = getattr(d, key)
            _require(value is None or value >= 1, f"dali_asr.{key}", ">= 1 or null (glibc's)")
        _require(
            d.host_buffer_shrink_threshold is None
            or (
                isinstance(d.host_buffer_shrink_threshold, (int, float))
                and 0.0 <= d.host_buffer_shrink_threshold <= 1.0
            ),
            "dali_asr.host_buffer_shrink_threshold",
            "a fraction in [0, 1] or null (DALI's)",
        )
        _require(
            d.host_pool_threshold is None
            or (type(d.host_pool_threshold) is int and d.host_pool_threshold >= 0),
            "dali_asr.host_pool_threshold",
            "bytes >= 0 or null (DALI's)",
        )
        _require(
            d.decode_samples is None or d.decode_samples >= 1,
            "dali_asr.decode_samples",
            "None (eight of the largest planned batch) or >= 1",
        )
        _require(
            d.speed_perturb is None
            or (
                isinstance(d.speed_perturb, list)
                and all(isinstance(f, (int, float)) and 0.5 <= f <= 2.0 for f in d.speed_perturb)
            ),
            "dali_asr.speed_perturb",
            "null or a list of speed factors between 0.5 and 2.0, e.g. [0.9, 1.0, 1.1]",
        )
        a = d.spec_augment
        _require(0.0 <= a.p <= 1.0, "dali_asr.spec_augment.p", "a probability in [0, 1]")
        for key in ("num_freq_masks", "max_freq_width", "num_time_masks", "max_time_width"):
            _require(getattr(a, key) >= 0, f"dali_asr.spec_augment.{key}", ">= 0")
        ratio_ok = 0.0 <= a.max_time_ratio <= 1.0
        _require(ratio_ok, "dali_asr.spec_augment.max_time_ratio", "in [0, 1]")
        _require(
            d.telemetry_log_every is None or d.telemetry_log_every >= 1,
            "dali_asr.telemetry_log_every",
            ">= 1 or null",
        )

    @property
    def output_dtype(self) -> str:
        return self.dali_asr.dtype or "float32"


def _check_buckets(t: AsrTaskConfig) -> None:
    """Build the bucket table once at start, so a cap below every bucket fails here."""
    try:
        t.length_buckets()
    except ValueError as e:
        raise ConfigError(f"asr_task_config: {e}") from None


def _require(ok: bool, key: str, expected: str) -> None:
    if not ok:
        raise ConfigError(f"config key {key}: expected {expected}")
