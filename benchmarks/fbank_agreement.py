"""When two standardised Kaldi fbanks agree: the criterion of tests/pipeline/test_features.py
(against kaldi-native-fbank) and of the GPU tiers (GPU against CPU).

Two float32 FFTs of the same frame differ by rounding noise of the frame's power, which is all
a cell holds where its mel energy is tiny beside the frame's power (the lowest bins of loud
frames in a corpus with nothing under ~100 Hz). Such a cell is not resolved by float32; every
other cell must agree within 1e-3, and so must 99.99 % of all cells, and no cell may differ by
1e-2 or more.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RESOLVED_LIMIT = 1e-3
P9999_LIMIT = 1e-3
MAX_LIMIT = 1e-2


def resolved_cells(audio: np.ndarray, log_mel: np.ndarray) -> np.ndarray:
    """bool [frames, 80]: cells whose mel energy (``exp(log_mel)``) is at least 1e-8 of the
    frame's power (Kaldi's frames of ``audio`` in [-1, 1], mean removed)."""
    view = np.lib.stride_tricks.sliding_window_view(audio.astype(np.float64) * 32768, 400)
    frames = view[::160][: len(log_mel)]
    power = ((frames - frames.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    return np.exp(log_mel.astype(np.float64)) >= 1e-8 * power[:, None]


def agreement(errors: Sequence[np.ndarray], resolved: Sequence[np.ndarray]) -> dict[str, float]:
    """Figures of the criterion over per-utterance |a - b| arrays and their resolved masks."""
    err, ok = (
        np.concatenate([e.ravel() for e in errors]),
        np.concatenate([r.ravel() for r in resolved]),
    )
    return {
        "max_resolved": float(err[ok].max()) if ok.any() else 0.0,
        "resolved_share": float(ok.mean()),
        "p99_99": float(np.percentile(err, 99.99)),
        "max": float(err.max()),
        "cells": int(err.size),
    }


def agrees(figures: dict[str, float]) -> bool:
    return (
        figures["max_resolved"] < RESOLVED_LIMIT
        and figures["p99_99"] < P9999_LIMIT
        and figures["max"] < MAX_LIMIT
    )


def describe(figures: dict[str, float]) -> str:
    return (
        f"resolved cells max {figures['max_resolved']:.2e} ({figures['resolved_share']:.2%} "
        f"of {figures['cells']:,}), p99.99 {figures['p99_99']:.2e}, max {figures['max']:.2e}"
    )


GOAL = f"resolved < {RESOLVED_LIMIT:g}, p99.99 < {P9999_LIMIT:g}, max < {MAX_LIMIT:g}"
