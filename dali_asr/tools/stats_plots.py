"""Figures for ``dali-asr stats --plot`` (matplotlib, imported only when asked for): length
histograms per language, examples per bucket, padding per bucket."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from dali_asr.config import AsrTaskConfig, LoaderConfig
from dali_asr.errors import ConfigError
from dali_asr.storage import SAMPLE_RATE
from dali_asr.tools.stats import Projection, SplitData
from dali_asr.tools.stats_tables import (
    BucketFill,
    BucketGroup,
    bucket_fill,
    bucket_table,
    length_histogram,
)

log = logging.getLogger(__name__)

_MAX_PANELS = 16


def require_matplotlib() -> None:
    """Raise ConfigError with the fix when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            "--plot needs matplotlib, which is not installed: pip install matplotlib"
        ) from e


def write_plots(data: SplitData, config: LoaderConfig, whole: Projection, out: Path) -> list[Path]:
    """PNG figures of one split in ``out``: ``<split>_lengths.png`` (length histogram per
    language) and, for LENGTH batching, ``<split>_bucket_fill.png`` (examples per bucket) and
    ``<split>_bucket_padding.png`` (padding efficiency per bucket)."""
    require_matplotlib()
    from matplotlib.figure import Figure  # the OO API: no pyplot state, no display needed

    out.mkdir(parents=True, exist_ok=True)
    written = [_plot_lengths(Figure, data, config.asr_task_config, out)]
    sizes = bucket_table(config.asr_task_config)
    if sizes is None:
        log.info(
            "%s: no bucket figures (%s batching has no buckets)",
            data.name,
            config.asr_task_config.batching_strategy.value,
        )
        return written
    fill = bucket_fill(sizes, whole, config.asr_task_config.min_audio_len)
    written.append(_plot_fill(Figure, data.name, fill, out))
    written.append(_plot_padding(Figure, data.name, fill, whole, out))
    return written


def _language_panels(data: SplitData) -> list[tuple[str, np.ndarray]]:
    """(title name, row mask) per panel: languages by rows, the smallest pooled when many
    (Omnilingual corpora hold hundreds of languages)."""
    names, file_code = np.unique([f.language for f in data.files], return_inverse=True)
    row_code = file_code[data.row_file()]
    order = np.argsort(-np.bincount(row_code, minlength=names.size), kind="stable")
    if order.size <= _MAX_PANELS:
        return [(str(names[c]), row_code == c) for c in order]
    rest = order[_MAX_PANELS - 1 :]
    panels = [(str(names[c]), row_code == c) for c in order[: _MAX_PANELS - 1]]
    return [*panels, (f"{rest.size} other languages", np.isin(row_code, rest))]


def _plot_lengths(figure: type, data: SplitData, task: AsrTaskConfig, out: Path) -> Path:
    edges, _ = length_histogram(data.lengths)
    panels = _language_panels(data)
    ncols = min(4, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = figure(figsize=(4 * ncols, 2.6 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for i, (ax, (name, mask)) in enumerate(zip(axes, panels, strict=False)):
        lengths = data.lengths[mask]
        counts, _ = np.histogram(lengths / SAMPLE_RATE, edges)
        ax.stairs(counts, edges, fill=True, color="tab:blue", alpha=0.8)
        hours = lengths.sum() / SAMPLE_RATE / 3600
        ax.set_title(f"{name}: {lengths.size} rows, {hours:.2f} h", fontsize=10)
        for bound in (task.min_audio_len, task.max_audio_len):
            if edges[0] < bound / SAMPLE_RATE < edges[-1]:
                ax.axvline(bound / SAMPLE_RATE, color="tab:red", linestyle="--", linewidth=1)
        ax.set_xlim(edges[0], edges[-1])
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("length (s)")
        if i % ncols == 0:
            ax.set_ylabel("rows")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(f"split {data.name}: audio length per language (red: min/max_audio_len)")
    return _save(fig, out / f"{data.name}_lengths.png")


def _bucket_axis(ax: Any, groups: list[BucketGroup]) -> np.ndarray:
    """One evenly spaced slot per table row (a bucket, or a run of them), labelled with its
    length bound: bucket bounds grow geometrically, so a length axis would hide short ones."""
    x = np.arange(len(groups))
    step = max(1, -(-len(groups) // 30))
    ax.set_xticks(x[::step], [f"{g.high / SAMPLE_RATE:.2f}" for g in groups[::step]])
    ax.tick_params(axis="x", labelrotation=90, labelsize=8)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    several = any(g.first != g.last for g in groups)
    ax.set_xlabel("bucket length bound (s)" + (", runs of equal batch size" if several else ""))
    return x


def _plot_fill(figure: type, split: str, fill: BucketFill, out: Path) -> Path:
    fig = figure(figsize=(10, 4.5), layout="constrained")
    ax = fig.subplots()
    groups = fill.groups()
    x = _bucket_axis(ax, groups)
    ax.bar(x, [g.examples for g in groups], color="tab:blue")
    ax.set_ylabel("examples (first fit)", color="tab:blue")
    ax.yaxis.get_major_locator().set_params(integer=True)
    twin = ax.twinx()
    twin.plot(x, [g.batch_size for g in groups], "o-", color="tab:orange", markersize=3)
    twin.set_ylabel("batch size", color="tab:orange")
    twin.set_ylim(bottom=0)
    ax.set_title(f"split {split}: examples per LENGTH bucket ({len(fill.sizes)} buckets)")
    return _save(fig, out / f"{split}_bucket_fill.png")


def _plot_padding(figure: type, split: str, fill: BucketFill, whole: Projection, out: Path) -> Path:
    fig = figure(figsize=(10, 4.5), layout="constrained")
    ax = fig.subplots()
    groups = fill.groups()
    x = _bucket_axis(ax, groups)
    bars = ax.bar(x, [g.padding_efficiency or 0.0 for g in groups], color="tab:green")
    ax.bar_label(bars, [str(g.batches) if g.batches else "" for g in groups], fontsize=7)
    ax.axhline(
        whole.padding_efficiency,
        color="black",
        linestyle="--",
        label=f"all batches: {whole.padding_efficiency:.3f}",
    )
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("padding efficiency (real / padded)")
    ax.legend(loc="lower right")
    ax.set_title(f"split {split}: padding efficiency per bucket (on the bars: batches)")
    return _save(fig, out / f"{split}_bucket_padding.png")


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path
