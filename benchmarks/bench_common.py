"""What the benchmark's parent and its children share: the configurations, one pass's counters
and the child protocol.

Standard library only: ``reference_child.py`` imports this module in the reference's own
virtualenv, which has neither dali_asr nor the project's dependencies. The configuration is one
dict of Omnilingual keys handed unchanged to both loaders, so dali-asr and the reference plan
from the same settings.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

IMPORTED_AT = time.perf_counter()
"""When a child imported this module: after torch and NumPy (a training script's own), before
the loader's modules (dali_asr and DALI, or fairseq2 and omnilingual-asr), whose import time
``import_s`` reports beside the first batch (which counts from the loader's construction)."""

SAMPLE_RATE = 16_000
STATIC_BATCH_SIZE = 8
SEED = 2

# baseline.md's LENGTH settings (the wav2vec2 CTC recipe's bucket budget at 30 s).
LENGTH_SETTINGS: dict[str, int] = {
    "min_audio_len": 16_000,
    "max_audio_len": 480_000,
    "max_num_elements": 960_000,
    "num_seqs_multiple_of": 8,
}

# Omnilingual's dataloader_example windows, as baseline.md's train mode.
TRAIN_SHUFFLE = {"example_shuffle_window": 1000, "batch_shuffle_window": 20}
SINGLE_SHUFFLE = {"example_shuffle_window": 1, "batch_shuffle_window": 1}

BATCHINGS = ("length", "static")
FEATURES = ("waveform", "fbank")
MODES = ("single", "train")

RESULT_PREFIX = "BENCH-RESULT "
"""Marks the child's result line on stdout, so stray prints from libraries cannot be mistaken
for it."""


@dataclass(frozen=True)
class BenchConfig:
    """One row family of baseline.md: batching × features × mode."""

    batching: str
    features: str
    mode: str

    @property
    def name(self) -> str:
        return f"{self.batching}/{self.features}/{self.mode}"

    @classmethod
    def parse(cls, name: str) -> BenchConfig:
        batching, features, mode = name.split("/")
        if batching not in BATCHINGS or features not in FEATURES or mode not in MODES:
            raise ValueError(f"unknown configuration {name!r}")
        return cls(batching, features, mode)


ALL_CONFIGS = [BenchConfig(b, f, m) for m in MODES for b in BATCHINGS for f in FEATURES]


def task_settings(
    config: BenchConfig, max_num_batches: int | None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``asr_task_config`` keys, Omnilingual's spelling (enums as their names)."""
    task: dict[str, Any] = dict(LENGTH_SETTINGS)
    task.update(
        batching_strategy=config.batching.upper(),
        batch_size=STATIC_BATCH_SIZE,
        use_fbank=config.features == "fbank",
        drop_remainder=False,
        seed=SEED,
        max_num_batches=max_num_batches,
    )
    task.update(TRAIN_SHUFFLE if config.mode == "train" else SINGLE_SHUFFLE)
    task.update(overrides or {})
    return task


def storage_settings(config: BenchConfig, stats_tsv: str | None) -> dict[str, Any]:
    """``mixture_parquet_storage_config`` keys. The train stream is the recipe's: UNTIL_FIRST,
    β 0.5 / 0.5 over the stats TSV (the cache directory is the child's to add)."""
    if config.mode == "single":
        return {"sync_mode": "UNTIL_LAST"}
    storage: dict[str, Any] = {"sync_mode": "UNTIL_FIRST"}
    if stats_tsv:
        storage.update(dataset_summary_path=stats_tsv, beta_corpus=0.5, beta_language=0.5)
    return storage


@dataclass
class ChildSpec:
    """What the parent asks one child process to measure (JSON on the command line)."""

    subject: str  # "reference", "dali-asr" or "ceiling"
    data: str  # the version=0 folder
    split: str
    tokenizer: str | None
    config: str  # BenchConfig name
    task: dict[str, Any]
    storage: dict[str, Any]
    epochs: int = 1
    threads: int = 2
    device: str = "cpu"  # dali-asr's dali_asr.device; the reference always runs on the CPU
    dali: dict[str, Any] = field(default_factory=dict)  # dali-asr's other dali_asr settings

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> ChildSpec:
        return cls(**json.loads(text))

    @property
    def bench_config(self) -> BenchConfig:
        return BenchConfig.parse(self.config)

    @property
    def endless(self) -> bool:
        """Both loaders' rule for a training stream; it is one capped pass, not ``epochs``."""
        return "train" in self.split and self.storage.get("sync_mode") == "UNTIL_FIRST"


def spec_from_argv(doc: str | None, argv: list[str]) -> ChildSpec | None:
    """The spec a child process was given; None, after printing its ``doc``, when asked for
    ``--help`` or given nothing (children are run by run.py, not by hand)."""
    if not argv or argv[0] in ("-h", "--help"):
        print(doc or "")
        return None
    return ChildSpec.from_json(argv[0])


def child_main(doc: str | None, measure: Callable[[ChildSpec], dict[str, Any]]) -> None:
    """A child process's whole run: the spec from the command line, ``measure(spec)``, and
    the result (with the RSS after imports and the thread count) on stdout for run.py."""
    import logging

    spec = spec_from_argv(doc, sys.argv[1:])
    if spec is None:
        return
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    rss_import, import_s = current_rss_mb(), time.perf_counter() - IMPORTED_AT
    result = measure(spec)
    result["rss_after_import_mb"] = rss_import
    result["import_s"] = import_s
    result["threads"] = spec.threads
    emit(result)


def cpu_seconds() -> float:
    """User + system CPU of this process, every thread included (DALI's, pyarrow's, ...)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class PassMeter:
    """Counters of one measured pass. ``start()`` is called just before the loader is built:
    construction and the first batch count in ``first_batch_s``; throughput and CPU count from
    the end of construction to the last batch, as baseline.md measured the reference."""

    t_start: float = 0.0
    t_iter: float = 0.0
    c_start: float = 0.0
    c_iter: float = 0.0
    construct_s: float = 0.0
    first_batch_s: float | None = None
    batches: int = 0
    examples: int = 0
    audio_samples: int = 0
    real: int = 0
    padded: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    marks: list[tuple[float, int]] = field(default_factory=list)
    """(seconds since ``built``, audio samples so far) at each batch: the pass's second half
    shows its steady rate, without the start-up that run.py's sizing must not count."""

    def start(self) -> None:
        self.c_start, self.t_start = cpu_seconds(), time.perf_counter()

    def built(self) -> None:
        """The loader exists; its first iteration starts now."""
        self.c_iter, self.t_iter = cpu_seconds(), time.perf_counter()
        self.construct_s += self.t_iter - self.t_start

    def rebuilt(self, seconds: float) -> None:
        """A loader built again between epochs (the reference's single pass): its construction
        is taken out of the iteration time."""
        self.construct_s += seconds
        self.t_iter += seconds

    def batch(self, size: int, width: int, real: int, audio_samples: int) -> None:
        """One delivered batch: ``width`` its padded length, ``real`` its unpadded steps."""
        if self.first_batch_s is None:
            self.first_batch_s = time.perf_counter() - self.t_start
        self.batches += 1
        self.examples += size
        self.real += real
        self.padded += size * width
        self.audio_samples += audio_samples
        self.marks.append((time.perf_counter() - self.t_iter, self.audio_samples))

    def result(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t_iter
        cpu = cpu_seconds() - self.c_iter
        marks = self.marks or [(0.0, 0)]
        (t_mid, a_mid), (t_end, a_end) = marks[len(marks) // 2], marks[-1]
        return {
            "late_wall_s": t_end - t_mid,
            "late_audio_s": (a_end - a_mid) / SAMPLE_RATE,
            "wall_s": wall,
            "cpu_s": cpu,
            "total_cpu_s": cpu_seconds() - self.c_start,
            "construct_s": self.construct_s,
            "first_batch_s": self.first_batch_s or 0.0,
            "batches": self.batches,
            "examples": self.examples,
            "audio_s": self.audio_samples / SAMPLE_RATE,
            "real": self.real,
            "padded": self.padded,
            **self.extra,
        }


def emit(result: dict[str, Any]) -> None:
    """Print the child's result: one marked JSON line on stdout, the last thing written."""
    result.setdefault("peak_rss_mb", peak_rss_mb())
    sys.stdout.flush()
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


def parse_child_output(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise ValueError("the child printed no result line")
