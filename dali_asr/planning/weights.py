"""Partition sampling weights from the dataset statistics TSV, as Omnilingual-ASR computes them.

Reference: ``MixtureParquetStorage.get_partition_weights_from_betas`` (omnilingual-asr
``mixture_parquet_storage.py``). For rows (corpus c, language l, hours h):

* corpus hours ``H_c = Σ_l h``; corpus weight ``(H_c / ΣH) ** beta_corpus``, normalised over
  corpora;
* language weight ``(h / H_c) ** beta_language``, normalised within its corpus;
* partition weight = corpus weight × language weight (so the weights sum to 1).

The float64 arithmetic follows pandas' order of operations so that results match to the last bit:
the per-corpus hour totals that feed the corpus weights are Kahan sums in file order (pandas
``groupby().sum()``), corpora are visited in sorted order (``groupby`` sorts), and the other sums
are numpy (pairwise) sums.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from os import PathLike

import numpy as np

from dali_asr.storage.discovery import read_text

__all__ = ["partition_weights", "read_stats_tsv"]

_REQUIRED = ("corpus", "language", "hours")


def read_stats_tsv(path: str | PathLike[str]) -> dict[tuple[str, str], float]:
    """Read a statistics TSV (a local path or a URI such as ``s3://bucket/stats.tsv``) into
    ``{(corpus, language): hours}``, in file order.

    The first line is a tab-separated header that must name the columns ``corpus``,
    ``language`` and ``hours`` (in any order; other columns are ignored). Blank lines are skipped,
    as pandas does. Values are kept as strings, unlike pandas, which would turn a language code
    such as ``nan`` (Min Nan) into a float NaN and silently lose that partition.

    Raises:
        ValueError: naming the file and line for a missing header column, a row with the wrong
            number of fields, an empty corpus or language, hours that are not a finite
            non-negative number, or a repeated (corpus, language) pair.
    """
    text = read_text(path, "stats TSV")
    lines = text.splitlines()
    if not lines:
        raise ValueError(f"{path}: empty file, expected a header line 'corpus\\tlanguage\\thours'.")

    header = lines[0].split("\t")
    missing = [name for name in _REQUIRED if name not in header]
    if missing:
        raise ValueError(
            f"{path}:1: header is missing column(s) {', '.join(missing)}; expected the "
            f"tab-separated columns corpus, language, hours, got {header!r}."
        )
    ci, li, hi = (header.index(name) for name in _REQUIRED)

    hours: dict[tuple[str, str], float] = {}
    first_line: dict[tuple[str, str], int] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise ValueError(
                f"{path}:{lineno}: expected {len(header)} tab-separated fields "
                f"({', '.join(header)}), got {len(fields)}."
            )
        corpus, language, raw = fields[ci].strip(), fields[li].strip(), fields[hi].strip()
        if not corpus or not language:
            column = "corpus" if not corpus else "language"
            raise ValueError(f"{path}:{lineno}: empty {column}.")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{path}:{lineno}: hours must be a number, got {raw!r}.") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(
                f"{path}:{lineno}: hours must be a finite, non-negative number, got {raw!r}."
            )
        key = (corpus, language)
        if key in hours:
            raise ValueError(
                f"{path}:{lineno}: duplicate row for corpus {corpus!r}, language {language!r} "
                f"(first on line {first_line[key]})."
            )
        hours[key] = value
        first_line[key] = lineno
    return hours


def _kahan_sum(values: list[float]) -> float:
    """Compensated sum in the order given, as pandas' cython ``group_sum``."""
    total = 0.0
    compensation = 0.0
    for value in values:
        y = value - compensation
        t = total + y
        compensation = t - total - y
        if compensation != compensation:  # inf - inf: pandas resets the compensation
            compensation = 0.0
        total = t
    return total


def _tempered(hours: np.ndarray, total: float, beta: float) -> np.ndarray:
    # pandas: weights = (hours / total) ** beta; weights / weights.sum()
    weights = np.power(hours / total, beta)
    return weights / np.sum(weights)


def partition_weights(
    hours: Mapping[tuple[str, str], float],
    beta_corpus: float | None,
    beta_language: float | None,
) -> dict[tuple[str, str], float]:
    """Compute ``{(corpus, language): weight}`` like Omnilingual's weights from betas.

    Keys keep the order of ``hours``. A row with 0 hours gets weight 0 when its beta is > 0
    (``0 ** 0 == 1`` otherwise), exactly as the reference; note that fairseq2's sampler then
    rejects that weight, so such partitions must be left out of sampling.

    Raises:
        ValueError: a beta is ``None`` (the reference asserts both are set once a statistics file
            is given), hours are negative or not finite, or a weight comes out undefined
            (a corpus, or the whole table, with 0 hours in total, where pandas yields NaN).
    """
    if beta_corpus is None or beta_language is None:
        raise ValueError(
            "`beta_corpus` and `beta_language` must both be set when partition weights are "
            f"computed, but are {beta_corpus} and {beta_language}."
        )
    for key, value in hours.items():
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"Hours for {key} must be finite and non-negative, but are {value}.")
    if not hours:
        return {}

    rows_by_corpus: dict[str, list[tuple[str, float]]] = {}
    for (corpus, language), value in hours.items():
        rows_by_corpus.setdefault(corpus, []).append((language, float(value)))

    corpora = sorted(rows_by_corpus)
    corpus_hours = np.array(
        [_kahan_sum([h for _, h in rows_by_corpus[c]]) for c in corpora], dtype=np.float64
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        corpus_weights = _tempered(corpus_hours, float(np.sum(corpus_hours)), beta_corpus)
        result: dict[tuple[str, str], float] = {}
        for corpus, corpus_weight in zip(corpora, corpus_weights.tolist(), strict=True):
            lang_hours = np.array([h for _, h in rows_by_corpus[corpus]], dtype=np.float64)
            lang_weights = _tempered(lang_hours, float(np.sum(lang_hours)), beta_language)
            rows = rows_by_corpus[corpus]
            for (language, _), lang_weight in zip(rows, lang_weights.tolist(), strict=True):
                result[(corpus, language)] = corpus_weight * lang_weight

    for key, weight in result.items():
        if not math.isfinite(weight):
            raise ValueError(
                f"The weight of {key} is undefined ({weight}): corpus {key[0]!r} or the whole "
                "table has 0 hours in total (or the betas are invalid)."
            )
    return {key: result[key] for key in hours}
