"""Which loader threads a test started and left running.

Earlier tests' dropped loaders may still be planning their next epoch (their threads stop when
the garbage collector frees them), so a test takes its snapshot with ``threads_before()``,
which collects first, and compares against it."""

from __future__ import annotations

import gc
import threading
import time


def loader_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("dali-asr")}


def threads_before() -> set[threading.Thread]:
    """Every thread now, after earlier tests' dropped loaders have been collected."""
    gc.collect()
    return set(threading.enumerate())


def still_running(before: set[threading.Thread], wait: float = 5.0) -> set[threading.Thread]:
    """Loader threads started since ``before`` still alive after up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        alive = loader_threads() - before
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)
