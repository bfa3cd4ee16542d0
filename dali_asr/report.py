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


class HeldReport(SkipReport):
    """The skips of an epoch planned ahead, before the training loop has started it: held
    until ``release(into)`` (the loop started it), then passed on to ``into`` as they come. An
    epoch never started reports nothing."""

    def __init__(self) -> None:
        super().__init__()
        self._into: SkipReport | None = None
        self._release_lock = threading.Lock()

    def add(self, key: ExampleKey | None, reason: str, count: int = 1) -> None:
        with self._release_lock:
            if self._into is None:
                super().add(key, reason, count)
                return
        self._into.add(key, reason, count)

    def release(self, into: SkipReport) -> None:
        with self._release_lock:
            for reason, count in self.counts.items():
                keys = self.keys.get(reason, [])
                for key in keys:
                    into.add(key, reason)
                if count > len(keys):
                    into.add(None, reason, count - len(keys))
            self._into = into


class KnownBad:
    """Examples whose audio proved bad (bytes that are not audio, a decode failure, a decoded
    length off, NaN/inf), by key, with the reason. The loader keeps it across epochs and in its
    resume state, and the feeder drops these examples before DALI sees them: a corrupt file
    kills DALI's pipeline (a rebuild and a replay) once per run, not once per epoch."""

    def __init__(self) -> None:
        self._reasons: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, key: ExampleKey, reason: str) -> None:
        with self._lock:
            self._reasons[str(key)] = reason

    def reason(self, key: ExampleKey) -> str | None:
        return self._reasons.get(str(key))

    def __len__(self) -> int:
        return len(self._reasons)

    def state_dict(self) -> dict[str, str]:
        """Reason by key (``str(ExampleKey)``), JSON-serialisable."""
        with self._lock:
            return dict(self._reasons)

    def load_state_dict(self, state: dict[str, str]) -> None:
        """Add a saved ledger's examples (several ranks' ledgers merge)."""
        with self._lock:
            self._reasons.update(state)
