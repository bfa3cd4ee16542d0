"""The process's host memory: glibc's allocator, through which all decoded audio on the host
passes, and DALI's host buffers, which it serves.

DALI's CPU operators allocate every iteration's outputs on DALI's threads; the loader's
feeding thread frees them after collation. glibc gives each thread that allocates an arena
of its own (up to 8 per core), a freed block goes back to the arena it came from, and the
free memory at the top of a heap is handed back to the system past a threshold that glibc
moves with the largest block freed so far. Through a soak of the training stream that left
two arenas holding ~170 MB each, mostly free, and the process's memory moving by 4-16 %
(benchmarks/RESULTS.md, 2026-12-06). DALI, for its part, reallocates a host buffer smaller
whenever a request falls under a fraction of its capacity (0.5 in DALI 2.4): iterations of
long and short files then freed and took again one decode buffer (~30 MB) after another, and
the process's memory moved in those steps by up to 6 %. And DALI takes its host blocks from
malloc up to 32 MiB, with a pool of its own only above: each iteration's decoded audio (a
fresh block of up to ~30 MB, 17 a second) went through glibc's heaps, fragmented them, and the
process's memory rose in steps of such a block. From 1 MiB up DALI's pool serves them, and
keeps and reuses its memory. The loader sets glibc's three knobs and DALI's two thresholds
once per process, when the first loader is made (``DaliAsrSettings.malloc_*``,
``host_buffer_shrink_threshold``, ``host_pool_threshold``).
"""

from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass

import numpy as np
from nvidia.dali import backend as dali_backend

from dali_asr.config import DaliAsrSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Knob:
    setting: str
    """The ``dali_asr`` key."""
    param: int
    """``mallopt``'s parameter number (glibc's malloc.h)."""
    env: str
    """glibc's environment variable for it."""
    tunable: str
    """Its name in ``GLIBC_TUNABLES``."""


KNOBS = (
    Knob("malloc_arena_max", -8, "MALLOC_ARENA_MAX", "glibc.malloc.arena_max"),
    Knob("malloc_trim_threshold", -1, "MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold"),
    Knob("malloc_mmap_threshold", -3, "MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold"),
)

DALI_SHRINK_ENV = "DALI_HOST_BUFFER_SHRINK_THRESHOLD"
"""DALI's environment variable for ``host_buffer_shrink_threshold``."""
DALI_POOL_ENV = "DALI_MALLOC_POOL_THRESHOLD"
"""DALI's environment variable for ``host_pool_threshold``."""

_set: dict[str, float] | None = None
"""What this process's first loader set: glibc fixes its arena limit once, so later loaders'
values would not all take effect; the first stands, for DALI's thresholds too."""


def tune_host_memory(settings: DaliAsrSettings) -> dict[str, float]:
    """Set glibc's knobs and DALI's two thresholds to ``settings``' values for the whole
    process; what it set.

    A knob is left alone when its value is None, or when the process's environment chose it
    (read at start-up: the user's choice stands). Nothing is done after a first call (it
    stands). The arena cap only holds for arenas made after it, so it must come before the
    process has many allocating threads: the loader sets it when it is made, before it starts
    any."""
    global _set
    if _set is not None:
        if any(getattr(settings, k) not in (None, v) for k, v in _set.items()):
            log.info("host memory stays tuned as its first loader set it: %s", _set)
        return {}
    _set = {**_tune_malloc(settings), **_tune_dali(settings)}
    log.debug("host memory tuned for this process: %s", _set)
    return dict(_set)


def _tune_malloc(settings: DaliAsrSettings) -> dict[str, float]:
    """glibc's knobs (none off glibc)."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None or not _is_glibc():
        return {}
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    done: dict[str, float] = {}
    for knob in KNOBS:
        value = getattr(settings, knob.setting)
        if value is None or knob.env in os.environ or knob.tunable in tunables:
            continue
        if mallopt(knob.param, value) == 1:
            done[knob.setting] = value
        else:
            log.warning("glibc refused %s = %d (mallopt): left at its default", knob.setting, value)
    return done


def _tune_dali(settings: DaliAsrSettings) -> dict[str, float]:
    """DALI's host buffer shrink threshold and its pool threshold."""
    done: dict[str, float] = {}
    shrink = settings.host_buffer_shrink_threshold
    if shrink is not None and DALI_SHRINK_ENV not in os.environ:
        dali_backend.SetHostBufferShrinkThreshold(shrink)
        done["host_buffer_shrink_threshold"] = shrink
    pool = settings.host_pool_threshold
    if pool is not None and DALI_POOL_ENV not in os.environ:
        # DALI has no call for it: it reads its environment once, when it makes its host
        # memory resource for its first host buffer. Making one now, then putting the
        # environment back, keeps the variable out of the process's children.
        os.environ[DALI_POOL_ENV] = str(pool)
        try:
            dali_backend.TensorListCPU([np.zeros(1, np.uint8)])
        finally:
            del os.environ[DALI_POOL_ENV]
        done["host_pool_threshold"] = pool
    return done


def _is_glibc() -> bool:
    """True under glibc (musl has a ``mallopt`` that ignores every parameter)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (AttributeError, ValueError, OSError):  # no confstr, or no such name here
        return False
