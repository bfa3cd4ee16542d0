"""Per-step telemetry of what the loader feeds: padding, shapes, stalls and mixture shares.

``Telemetry.record(batch, wait_s)`` is called once per batch handed to the training loop, with
the seconds the loop spent inside ``next()`` waiting for it. It returns the batch's numbers as
a dict; ``as_dict()`` gives the running totals; with ``log_every=N`` one INFO line on logger
``dali_asr.telemetry`` summarises each N batches. Everything is O(B) per batch.

Shares: the training stream picks each example from a (corpus, language) partition with the
partition's weight, so the realised share of *examples* is the quantity to compare with the
target weights; the share of audio seconds is reported next to it (long-utterance languages
take more audio per pick).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dali_asr.batch import Seq2SeqBatch
from dali_asr.storage import SAMPLE_RATE

__all__ = ["Telemetry"]

log = logging.getLogger(__name__)

KINDS = ("language", "corpus", "partition")


def _efficiency(real: int, padded: int) -> float:
    return real / padded if padded else 1.0


@dataclass
class _Interval:
    """Sums over the batches since the last log line (the line describes those batches)."""

    batches: int = 0
    examples: int = 0
    source_real: int = 0
    source_padded: int = 0
    target_real: int = 0
    target_padded: int = 0
    wait_total: float = 0.0
    wait_max: float = 0.0


class Telemetry:
    """Running totals of padding efficiency, batch shapes, loader stalls and mixture shares.

    Args:
        log_every: log one compact INFO line per this many batches (None: never).
        targets: target weights, as for :meth:`set_targets`.
        wait_window: the wait percentiles (p50, p95) cover the last this many batches, so
            ``as_dict()`` stays cheap on long runs; count, sum, mean and max cover all.
        clock: seconds, monotonic; the wall time behind the stall fraction (tests inject one).
    """

    def __init__(
        self,
        log_every: int | None = None,
        targets: Mapping[str, float] | None = None,
        wait_window: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if log_every is not None and log_every < 1:
            raise ValueError(f"log_every must be >= 1 or None, got {log_every}")
        self.log_every = log_every
        self._clock = clock
        self._wait_window = wait_window
        self._targets: dict[str, dict[str, float]] = {kind: {} for kind in KINDS}
        if targets:
            self.set_targets(targets)
        self.reset()

    def reset(self) -> None:
        """Forget every recorded batch (targets and ``log_every`` are kept)."""
        self.batches = 0
        self.filler_batches = 0
        self.examples = 0
        self.audio_samples = 0
        self.source_real = self.source_padded = 0
        self.target_real = self.target_padded = 0
        self.max_batch_size = self.max_source_width = self.max_target_width = 0
        self.wait_total = self.wait_max = self.first_wait = 0.0
        self._waits: deque[float] = deque(maxlen=self._wait_window)
        self._start: float | None = None
        self._last = 0.0
        self._examples: dict[str, Counter[str]] = {kind: Counter() for kind in KINDS}
        self._audio: dict[str, Counter[str]] = {kind: Counter() for kind in KINDS}
        self._interval = _Interval()

    def set_targets(self, language_or_partition_weights: Mapping[str, float]) -> None:
        """Target weights, normalised to sum to 1 per kind.

        Keys ``"corpus/language"`` (the training stream's partitions, as ``Partition.name``)
        give partition targets and, summed, language and corpus targets; a key without ``/``
        is a language weight.
        """
        targets: dict[str, Counter[str]] = {kind: Counter() for kind in KINDS}
        for key, weight in language_or_partition_weights.items():
            if weight < 0:
                raise ValueError(f"target weight of {key!r} is negative: {weight}")
            corpus, sep, language = key.rpartition("/")
            targets["language"][language] += weight
            if sep:
                targets["corpus"][corpus] += weight
                targets["partition"][key] += weight
        for kind, weights in targets.items():
            total = sum(weights.values())
            self._targets[kind] = {k: w / total for k, w in weights.items()} if total else {}

    def record(
        self,
        batch: Seq2SeqBatch,
        wait_s: float,
        *,
        source_lens: Sequence[int] | None = None,
        target_lens: Sequence[int] | None = None,
    ) -> dict:
        """Add one batch the training loop waited ``wait_s`` seconds for; return its numbers.

        ``source_lens`` / ``target_lens``: the same lengths as host integers, where the caller
        has them, to skip reading ``batch``'s length tensors back from the device.
        """
        if batch.filler:
            # a stand-in for an all-bad batch, whose examples were counted when first
            # delivered: counted apart, or it would count them twice
            self.filler_batches += 1
            return {}
        now = self._clock()
        if self._start is None:
            # The wall clock starts when the loop first asked for a batch.
            self._start = now - wait_s
            self.first_wait = wait_s
        self._last = now
        # The lengths are small CPU tensors on the CPU path (.tolist() is free) and tiny device
        # tensors on the GPU path, where .tolist() is a device-to-host copy on the current
        # stream: it waits for the GPU work queued before it (the previous step), which a loop
        # that never syncs otherwise pays as lost run-ahead. Host lengths avoid that.
        src_lens = list(source_lens) if source_lens is not None else batch.source_seq_lens.tolist()
        tgt_lens = list(target_lens) if target_lens is not None else batch.target_seq_lens.tolist()
        size = len(src_lens)
        src_width = int(batch.source_seqs.shape[1]) if batch.source_seqs.dim() > 1 else 0
        tgt_width = int(batch.target_seqs.shape[1]) if batch.target_seqs.dim() > 1 else 0
        src_real, tgt_real = sum(src_lens), sum(tgt_lens)
        samples = sum(batch.audio_size)

        self.batches += 1
        self.examples += size
        self.audio_samples += samples
        self.source_real += src_real
        self.source_padded += size * src_width
        self.target_real += tgt_real
        self.target_padded += size * tgt_width
        self.max_batch_size = max(self.max_batch_size, size)
        self.max_source_width = max(self.max_source_width, src_width)
        self.max_target_width = max(self.max_target_width, tgt_width)
        self.wait_total += wait_s
        self.wait_max = max(self.wait_max, wait_s)
        self._waits.append(wait_s)

        langs, corpora = batch.language, batch.corpus
        sizes = batch.audio_size if len(batch.audio_size) == len(langs) else [0] * len(langs)
        names = {"language": langs, "corpus": corpora}
        names["partition"] = [f"{c}/{la}" for c, la in zip(corpora, langs, strict=False)]
        for kind, keys in names.items():
            self._examples[kind].update(keys)
            audio = self._audio[kind]
            for key, n in zip(keys, sizes, strict=False):
                audio[key] += n

        iv = self._interval
        iv.batches += 1
        iv.examples += size
        iv.source_real += src_real
        iv.source_padded += size * src_width
        iv.target_real += tgt_real
        iv.target_padded += size * tgt_width
        iv.wait_total += wait_s
        iv.wait_max = max(iv.wait_max, wait_s)
        if self.log_every is not None and self.batches % self.log_every == 0:
            self._log_interval()

        return {
            "step": self.batches,
            "batch_size": size,
            "source_width": src_width,
            "target_width": tgt_width,
            "source_elements": src_real,
            "target_elements": tgt_real,
            "audio_padding_efficiency": _efficiency(src_real, size * src_width),
            "token_padding_efficiency": _efficiency(tgt_real, size * tgt_width),
            "audio_seconds": samples / SAMPLE_RATE,
            "wait_s": wait_s,
            "languages": dict(Counter(langs)),
            "corpora": dict(Counter(corpora)),
        }

    def wrap(self, batches: Iterable[Seq2SeqBatch]) -> Iterator[Seq2SeqBatch]:
        """Yield ``batches``, recording each with the time spent in its ``next()``."""
        iterator = iter(batches)
        while True:
            start = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.record(batch, time.perf_counter() - start)
            yield batch

    @property
    def wall_s(self) -> float:
        """Seconds from the first ``next()`` to the last batch received."""
        return self._last - self._start if self._start is not None else 0.0

    def shares(self) -> dict:
        """Per kind (language, corpus, partition): each name's share of examples and of audio
        against its target, and the largest deviation |examples - target| over all kinds."""
        out: dict = {}
        worst: dict | None = None
        for kind in KINDS:
            counts, audio, targets = self._examples[kind], self._audio[kind], self._targets[kind]
            n, total_audio = sum(counts.values()), sum(audio.values())
            rows = {}
            for name in sorted(set(counts) | set(targets)):
                share = counts[name] / n if n else 0.0
                # With targets, a name outside them was not meant to be drawn at all: target 0.
                target = targets.get(name, 0.0) if targets else None
                rows[name] = {
                    "examples": share,
                    "audio": audio[name] / total_audio if total_audio else 0.0,
                    "target": target,
                    "deviation": None if target is None else share - target,
                }
                if target is not None and (
                    worst is None or abs(share - target) > abs(worst["deviation"])
                ):
                    worst = {"kind": kind, "name": name, **rows[name]}
            out[kind] = rows
        out["largest_deviation"] = worst
        return out

    def as_dict(self) -> dict:
        """Running totals since the last ``reset()``, as plain numbers for any logger."""
        waits = np.fromiter(self._waits, dtype=np.float64, count=len(self._waits))
        p50, p95 = np.percentile(waits, [50, 95]).tolist() if waits.size else (0.0, 0.0)
        wall = self.wall_s
        steady_wall = wall - self.first_wait
        return {
            "batches": self.batches,
            "filler_batches": self.filler_batches,
            "examples": self.examples,
            "audio_hours": self.audio_samples / SAMPLE_RATE / 3600,
            "audio_padding_efficiency": _efficiency(self.source_real, self.source_padded),
            "token_padding_efficiency": _efficiency(self.target_real, self.target_padded),
            "mean_batch_size": self.examples / self.batches if self.batches else 0.0,
            "max_batch_size": self.max_batch_size,
            "mean_source_width": self.source_padded / self.examples if self.examples else 0.0,
            "max_source_width": self.max_source_width,
            "mean_target_width": self.target_padded / self.examples if self.examples else 0.0,
            "max_target_width": self.max_target_width,
            "wait_mean_s": self.wait_total / self.batches if self.batches else 0.0,
            "wait_p50_s": p50,
            "wait_p95_s": p95,
            "wait_max_s": self.wait_max,
            "first_wait_s": self.first_wait,
            "stall_s": self.wait_total,
            "wall_s": wall,
            "stall_fraction": self.wait_total / wall if wall > 0 else 0.0,
            # Without the first wait, which is mostly pipeline start-up.
            "steady_stall_fraction": (
                (self.wait_total - self.first_wait) / steady_wall if steady_wall > 0 else 0.0
            ),
            "shares": self.shares(),
        }

    def _log_interval(self) -> None:
        iv = self._interval
        worst = self.shares()["largest_deviation"] if any(self._targets.values()) else None
        mix = ""
        if worst is not None:
            mix = (
                f" | worst share {worst['kind']} {worst['name']} "
                f"{worst['examples']:.3f} vs {worst['target']:.3f}"
            )
        log.info(
            "step %d: %.1f ex/batch, padding eff audio %.3f tokens %.3f | wait mean %.1f ms "
            "max %.1f ms | run: %.3f h, stall %.1f%%%s",
            self.batches,
            iv.examples / iv.batches,
            _efficiency(iv.source_real, iv.source_padded),
            _efficiency(iv.target_real, iv.target_padded),
            1000 * iv.wait_total / iv.batches,
            1000 * iv.wait_max,
            self.audio_samples / SAMPLE_RATE / 3600,
            100 * self.wait_total / self.wall_s if self.wall_s > 0 else 0.0,
            mix,
        )
        self._interval = _Interval()
