"""Which loader threads a test started and left running.

Earlier tests' dropped loaders may still be planning their next epoch (their threads stop when
the garbage collector frees them), so a test takes its snapshot with ``threads_before()``,
which collects first, and compares against it."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable


def loader_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("dali-asr")}


def threads_before() -> set[threading.Thread]:
    """Every thread now, after earlier tests' dropped loaders have been collected."""
    gc.collect()
    return set(threading.enumerate())


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Whether ``condition()`` came true within ``timeout`` seconds (polled)."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= end:
            return False
        time.sleep(0.02)
    return True


def still_running(before: set[threading.Thread], wait: float = 5.0) -> set[threading.Thread]:
    """Loader threads started since ``before`` still alive after up to ``wait`` seconds."""
    wait_for(lambda: not (loader_threads() - before), wait)
    return loader_threads() - before
