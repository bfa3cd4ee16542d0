"""The tables ``dali-asr stats`` prints and plots: the bucket table, how full each bucket is
(run-length groups of buckets of one size), and length histograms with readable bin widths."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from dali_asr.config import AsrTaskConfig, BatchingStrategy
from dali_asr.storage import SAMPLE_RATE
from dali_asr.tools.stats import Projection


def bucket_table(task: AsrTaskConfig) -> list[tuple[int, int]] | None:
    """``(batch size, length bound)`` of the LENGTH buckets; None for other strategies."""
    if task.batching_strategy is not BatchingStrategy.LENGTH:
        return None
    return task.length_buckets()


@dataclass
class BucketGroup:
    """One row of the bucket table: a bucket, or a run of buckets shown together."""

    first: int
    last: int
    batch_size: int
    """The batch size of the group's first (shortest, largest) bucket."""
    low: int
    """Shortest length that lands in the group (exclusive bound of the bucket before it)."""
    high: int
    examples: int
    batches: int
    real: int
    padded: int

    @property
    def padding_efficiency(self) -> float | None:
        return self.real / self.padded if self.padded else None


@dataclass
class BucketFill:
    """Per LENGTH bucket: examples that fall in it (first fit), its batches and padding."""

    sizes: list[tuple[int, int]]
    min_len: int
    examples: np.ndarray
    batches: np.ndarray
    real: np.ndarray
    padded: np.ndarray

    def groups(self, full: bool = False, max_rows: int = 64) -> list[BucketGroup]:
        """Table rows: every bucket with ``full``; else the buckets from the first to the last
        one in use, as single buckets when they are few, runs of equal batch size otherwise,
        and equal chunks when even the runs are too many (a table of thousands helps nobody)."""
        n = len(self.sizes)
        used = np.flatnonzero((self.examples > 0) | (self.batches > 0))
        lo, hi = (0, n) if full or used.size == 0 else (int(used[0]), int(used[-1]) + 1)
        spans = [(i, i + 1) for i in range(lo, hi)]
        if not full and len(spans) > max_rows:
            spans = [s for s in _runs(self.sizes) if s[1] > lo and s[0] < hi]
            spans = [(max(a, lo), min(b, hi)) for a, b in spans]
        if not full and len(spans) > max_rows:
            cuts = np.linspace(lo, hi, max_rows + 1).round().astype(int)
            spans = [(int(a), int(b)) for a, b in itertools.pairwise(cuts) if b > a]
        return [self._group(a, b) for a, b in spans]

    def _group(self, a: int, b: int) -> BucketGroup:
        low = self.sizes[a - 1][1] + 1 if a > 0 else self.min_len
        return BucketGroup(
            a,
            b - 1,
            self.sizes[a][0],
            low,
            self.sizes[b - 1][1],
            int(self.examples[a:b].sum()),
            int(self.batches[a:b].sum()),
            int(self.real[a:b].sum()),
            int(self.padded[a:b].sum()),
        )


def _runs(sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``[start, end)`` index ranges of consecutive buckets with equal batch size."""
    starts = [i for i in range(len(sizes)) if i == 0 or sizes[i][0] != sizes[i - 1][0]]
    return list(zip(starts, [*starts[1:], len(sizes)], strict=True))


def bucket_fill(
    sizes: list[tuple[int, int]], projection: Projection, min_len: int = 1
) -> BucketFill:
    """Examples per bucket and, per bucket, the batches whose longest example lands there
    (a flushed batch, topped up with shorter examples, counts for its own bucket)."""
    bounds = np.array([length for _, length in sizes], dtype=np.int64)
    n = bounds.size
    ex_bucket = np.searchsorted(bounds, projection.kept_lengths, side="left")
    batch_bucket = np.searchsorted(bounds, projection.widths, side="left")
    return BucketFill(
        sizes,
        min_len,
        np.bincount(ex_bucket, minlength=n),
        np.bincount(batch_bucket, minlength=n),
        np.bincount(batch_bucket, projection.real, n).astype(np.int64),
        np.bincount(batch_bucket, projection.padded, n).astype(np.int64),
    )


def nice_bin_width(span_seconds: float, target_bins: int = 20) -> float:
    """A round bin width (0.1, 0.2, 0.5, 1, 2, 5, 10, ... s) giving about ``target_bins``."""
    raw = max(span_seconds, 2.0) / target_bins  # bins of at least 0.1 s
    base = 10.0 ** np.floor(np.log10(raw))
    for step in (1, 2, 5, 10):
        if step * base >= raw:
            return float(step * base)
    return float(10 * base)


def length_histogram(
    lengths: np.ndarray, width_s: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(edges in seconds, counts)`` on round bins from the shortest to the longest row."""
    if lengths.size == 0:
        return np.array([0.0, 1.0]), np.zeros(1, dtype=np.int64)
    seconds = lengths / SAMPLE_RATE
    lo, hi = float(seconds.min()), float(seconds.max())
    width = width_s or nice_bin_width(hi - lo)
    first = np.floor(lo / width) * width
    nbins = max(1, int(np.floor((hi - first) / width)) + 1)
    edges = first + width * np.arange(nbins + 1)
    index = np.minimum(((seconds - first) / width).astype(np.int64), nbins - 1)
    return edges, np.bincount(index, minlength=nbins)
