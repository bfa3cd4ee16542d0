"""Configuration: Omnilingual's ``asr_task_config`` and ``mixture_parquet_storage_config``
(same keys, same defaults) plus dali-asr's own ``dali_asr`` section.

A YAML file is either those sections at top level, or a whole Omnilingual recipe, from which
``dataset.*``, ``common.seed`` and ``trainer.mixed_precision.dtype`` are read.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from dali_asr.augment import SpecAugmentSettings
from dali_asr.config_keys import close_match, report_status

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config file or value that dali-asr cannot use; the message names the key."""


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
    max_num_elements: int = 3_200_000
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
    decode_batch: int = 32
    """Files per DALI iteration: consecutive planned batches are decoded together up to this
    many files (when they are ready), so a batch of two long files does not idle the threads."""
    decode_samples: int | None = None
    """Samples of audio per DALI iteration: consecutive planned batches are grouped only while
    their audio fits this too (a group's first batch always goes whole). It bounds the memory
    DALI holds for the iterations in flight; counted in files alone, rare groups of many long
    files kept the process's memory growing for a quarter of an hour (benchmarks/RESULTS.md,
    soak). None = the largest planned batch: ``max_num_elements`` (``batch_size *
    max_audio_len`` with STATIC batching)."""
    pad_to_multiple: int = 1
    """Pad the time axis of every batch to a multiple of this (static shapes)."""
    telemetry_log_every: int | None = None
    """Log one telemetry line (padding, stalls, language shares) every N batches."""
    state_every: int = 16
    """Batches between two saved plan states: a restore replays at most this many batches
    from metadata."""
    sort_window: int = 1000
    """LENGTH_SORTED: examples sorted together; memory is this many examples."""
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
        if t.batching_strategy is not BatchingStrategy.STATIC:
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
        _require(d.decode_batch >= 1, "dali_asr.decode_batch", ">= 1")
        _require(
            d.decode_samples is None or d.decode_samples >= 1,
            "dali_asr.decode_samples",
            "None (the largest planned batch) or >= 1",
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


def _resolve_auto_max_num_elements(cfg: LoaderConfig) -> None:
    """``max_num_elements: auto``: about 40,000 samples per GB of the GPU's memory (the CPU
    gets the reference's default). Each rank resolves it on its own GPU: use one GPU type."""
    import torch

    from dali_asr.cuda_env import device_index
    from dali_asr.tune import auto_max_num_elements

    d = cfg.dali_asr
    device = None
    if d.device != "cpu" and torch.cuda.is_available():
        device = torch.device("cuda", device_index(d.device_id))
    value, why = auto_max_num_elements(cfg.asr_task_config.max_audio_len, device)
    cfg.asr_task_config.max_num_elements = value
    log.info("max_num_elements: auto -> %d (%s)", value, why)


def _check_buckets(t: AsrTaskConfig) -> None:
    """Build the bucket table once at start, so a cap below every bucket fails here."""
    try:
        t.length_buckets()
    except ValueError as e:
        raise ConfigError(f"asr_task_config: {e}") from None


def _require(ok: bool, key: str, expected: str) -> None:
    if not ok:
        raise ConfigError(f"config key {key}: expected {expected}")


_DATASET_KEYS = {
    "name",
    "family",
    "config_overrides",
    "path",
    "train_split",
    "valid_split",
    "storage_mode",
    "task_mode",
    "manifest_storage_config",
    "mixture_parquet_storage_config",
    "asr_task_config",
}
_SECTIONS = ("asr_task_config", "mixture_parquet_storage_config", "dali_asr")


def load_config(path: str | Path | None = None) -> LoaderConfig:
    """Read a YAML file (sections or a whole Omnilingual recipe); None gives the defaults."""
    if path is None:
        cfg = LoaderConfig()
        cfg.validate()
        return cfg
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise ConfigError(f"config file {path}: expected a mapping at top level")
    return config_from_dict(doc, source=str(path))


def config_from_dict(doc: dict[str, Any], source: str = "<dict>") -> LoaderConfig:
    """Build a LoaderConfig from a parsed YAML document (see load_config)."""
    doc = dict(doc)
    sections: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    where = ""
    if "dataset" in doc:
        sections, extra = _from_recipe(doc, source)
        where = "dataset."
    else:
        unknown = sorted(k for k in doc if k not in _SECTIONS)
        if unknown:
            raise ConfigError(
                f"{source}: unknown top-level key(s) {', '.join(unknown)}; expected "
                f"{', '.join(_SECTIONS)} or a recipe with a 'dataset' section"
            )
        sections = doc
    own = sections.get("dali_asr")
    if own is not None:
        if not isinstance(own, dict):
            raise ConfigError(f"{source}: config key dali_asr: expected a mapping, got {own!r}")
        extra = {**extra, **own}
    task = sections.get("asr_task_config")
    auto = isinstance(task, dict) and str(task.get("max_num_elements", "")).lower() == "auto"
    if auto:
        task = {k: v for k, v in task.items() if k != "max_num_elements"}
    cfg = LoaderConfig(
        asr_task_config=_build(AsrTaskConfig, task, f"{where}asr_task_config"),
        mixture_parquet_storage_config=_build(
            MixtureParquetStorageConfig,
            sections.get("mixture_parquet_storage_config"),
            f"{where}mixture_parquet_storage_config",
        ),
        dali_asr=_build(DaliAsrSettings, extra or None, "dali_asr"),
    )
    for key in ("train_split", "valid_split"):
        if key in sections:
            setattr(cfg, key, sections[key])
    if auto:
        _resolve_auto_max_num_elements(cfg)
    cfg.validate()
    return cfg


def _from_recipe(doc: dict[str, Any], source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    dataset = doc.pop("dataset") or {}
    if not isinstance(dataset, dict):
        raise ConfigError(f"{source}: 'dataset' must be a mapping")
    unknown = sorted(set(dataset) - _DATASET_KEYS)
    if unknown:
        names = ", ".join(f"dataset.{k}" for k in unknown)
        raise ConfigError(f"{source}: unknown config key(s) {names}")
    storage_mode = dataset.get("storage_mode", "MIXTURE_PARQUET")
    if storage_mode not in ("MIXTURE_PARQUET", "MANIFEST"):
        raise ConfigError(
            f"{source}: dataset.storage_mode {storage_mode!r} is not supported; expected "
            "MIXTURE_PARQUET or MANIFEST (dali-asr tells them apart by the --data folder)"
        )
    extra: dict[str, Any] = {}
    dtype = ((doc.get("trainer") or {}).get("mixed_precision") or {}).get("dtype")
    if dtype is not None:
        extra["dtype"] = str(dtype).removeprefix("torch.")
    sections: dict[str, Any] = {
        k: dataset[k]
        for k in ("asr_task_config", "mixture_parquet_storage_config", "train_split", "valid_split")
        if k in dataset
    }
    seed = (doc.get("common") or {}).get("seed")
    if seed is not None:
        task = dict(sections.get("asr_task_config") or {})
        task.setdefault("seed", seed)
        sections["asr_task_config"] = task
    own = doc.pop("dali_asr", None)
    if own is not None:
        sections["dali_asr"] = own
    ignored = sorted(k for k in doc if k not in ("common",))
    if ignored:
        log.info("%s: recipe sections %s are not read by dali-asr", source, ", ".join(ignored))
    return sections, extra


def _build(cls: type, values: dict[str, Any] | None, prefix: str) -> Any:
    """Instantiate a config dataclass from a mapping, strictly: unknown keys are errors."""
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise ConfigError(f"config key {prefix}: expected a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}"
        if key not in fields:
            hint = close_match(key, fields)
            suggestion = f" (did you mean {prefix}.{hint}?)" if hint else ""
            raise ConfigError(f"unknown config key {name}{suggestion}")
        default = getattr(cls(), key)
        if dataclasses.is_dataclass(default):
            kwargs[key] = _build(type(default), value, name)
            report_status(name, kwargs[key], default)
            continue
        kwargs[key] = _coerce(name, value, default, fields[key].type)
        report_status(name, kwargs[key], default)
    return cls(**kwargs)


def _coerce(name: str, value: Any, default: Any, annotation: Any) -> Any:
    if isinstance(default, Enum):
        try:
            return type(default)(str(value).upper())
        except ValueError:
            allowed = ", ".join(m.value for m in type(default))
            raise ConfigError(f"config key {name}: {value!r} is not one of {allowed}") from None
    text = str(annotation)
    if value is None:
        if "None" in text:
            return None
        raise ConfigError(f"config key {name}: may not be null")
    if isinstance(default, bool) or text.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"config key {name}: expected true or false, got {value!r}")
        return value
    if text.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {name}: expected an integer, got {value!r}")
        return value
    if text.startswith("str") and not isinstance(value, str):
        if not (
            "list" in text and isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            raise ConfigError(f"config key {name}: expected a string, got {value!r}")
        return value
    if text.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {name}: expected a number, got {value!r}")
        return float(value)
    return value
