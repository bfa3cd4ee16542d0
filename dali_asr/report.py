"""Counting what the loader skips, by reason, with the keys of the skipped examples."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from dali_asr.keys import ExampleKey


class SkipReport:
    """Thread-safe counters of skipped examples. Keys are kept up to ``max_keys`` per reason
    (counts are always exact) so a dataset with millions of short clips stays small."""

    def __init__(
        self,
        max_keys: int = 10_000,
        on_skip: Callable[[ExampleKey | None, str], None] | None = None,
    ) -> None:
        self.counts: Counter[str] = Counter()
        self.keys: dict[str, list[ExampleKey]] = {}
        self.max_keys = max_keys
        self.on_skip = on_skip
        self._lock = threading.Lock()

    def add(self, key: ExampleKey | None, reason: str, count: int = 1) -> None:
        with self._lock:
            self.counts[reason] += count
            if key is not None:
                kept = self.keys.setdefault(reason, [])
                if len(kept) < self.max_keys:
                    kept.append(key)
        if self.on_skip is not None:
            self.on_skip(key, reason)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.counts:
            return "skipped: none"
        parts = ", ".join(f"{r} {n}" for r, n in sorted(self.counts.items()))
        return f"skipped {self.total}: {parts}"

    def as_dict(self) -> dict[str, object]:
        return {
            "counts": dict(self.counts),
            "keys": {r: [k.as_dict() for k in ks] for r, ks in self.keys.items()},
        }
