"""What both GPU tiers share: the table of rows, written to disk after every row, and a
watchdog that turns a hang into a traceback instead of a lost run.

Each row is a check with a verdict (pass, FAIL, or information), its measured value and its
goal. ``Rows`` rewrites ``<out>/<name>.json`` and ``<out>/<name>.md`` after every row, so a run
that is killed keeps the rows before it; the markdown starts with the command that reproduces
the table. ``Rows.guarded`` runs one section: an exception becomes a failed row and the next
section still runs, and a section that outlives its deadline dumps every thread's stack to
``<out>/<name>-hang.txt`` and ends the process (the rows so far are already on disk).
"""

from __future__ import annotations

import faulthandler
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA_ENV = "DALI_ASR_ESPEAK"
"""Environment variable naming the espeak-mini folder (default ../shared/data/espeak-mini)."""


def default_data() -> Path:
    """espeak-mini: ``$DALI_ASR_ESPEAK``, else ../shared/data/espeak-mini beside the repo."""
    return Path(os.environ.get(DATA_ENV) or REPO.parent / "shared" / "data" / "espeak-mini")


@dataclass
class Row:
    check: str
    ok: bool | None  # None: information, no goal
    value: str
    goal: str = ""
    seconds: float = 0.0


class Rows:
    """The table of one tier's run, kept on disk as it grows."""

    def __init__(self, name: str, out: Path, deadline_s: float = 240.0) -> None:
        self.name, self.out, self.deadline_s = name, out, deadline_s
        self.rows: list[Row] = []
        self.extra: dict[str, object] = {}
        self.command = shlex.join([Path(sys.executable).name, *sys.argv])
        out.mkdir(parents=True, exist_ok=True)
        self._hang = open(out / f"{name}-hang.txt", "w")  # noqa: SIM115 - the watchdog's file
        self._started = time.perf_counter()

    def add(self, check: str, ok: bool | None, value: str, goal: str = "") -> None:
        row = Row(check, ok, value, goal, round(time.perf_counter() - self._started, 1))
        self.rows.append(row)
        mark = {True: "PASS", False: "FAIL", None: "info"}[ok]
        print(f"[{mark}] {check}: {value}" + (f" (goal {goal})" if goal else ""), flush=True)
        self.write()

    def guarded(
        self, section: str, fn: Callable[[], None], deadline_s: float | None = None
    ) -> None:
        """Run one section; a crash is a failed row, a hang a traceback and the end."""
        faulthandler.dump_traceback_later(deadline_s or self.deadline_s, exit=True, file=self._hang)
        try:
            fn()
        except Exception as e:  # one broken section must not cost the others
            first = str(e).splitlines()[0][:300] if str(e) else ""
            self.add(section, False, f"{type(e).__name__}: {first}")
        finally:
            faulthandler.cancel_dump_traceback_later()

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.ok is False]

    def markdown(self) -> str:
        lines = [
            f"`{self.command}` (from the repository root)",
            "",
            "| check | result | value | goal |",
            "| --- | --- | --- | --- |",
        ]
        for r in self.rows:
            mark = {True: "pass", False: "**FAIL**", None: "—"}[r.ok]
            lines.append(f"| {r.check} | {mark} | {r.value} | {r.goal} |")
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        doc = {
            "tier": self.name,
            "command": self.command,
            "host": platform.node(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "commit": _commit(),
            **self.extra,
            "rows": [asdict(r) for r in self.rows],
        }
        (self.out / f"{self.name}.json").write_text(json.dumps(doc, indent=1))
        (self.out / f"{self.name}.md").write_text(self.markdown())

    def finish(self) -> int:
        """Print the table last (the device tool returns the end of the output)."""
        self.write()
        print("\n" + self.markdown(), flush=True)
        return 1 if self.failed else 0


def _commit() -> str:
    """``$DALI_ASR_COMMIT`` (set it where the copy's git history is not the checkout's, as on a
    lent machine), else git's HEAD, +dirty with uncommitted changes."""
    if os.environ.get("DALI_ASR_COMMIT"):
        return os.environ["DALI_ASR_COMMIT"]
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True, cwd=REPO
        )
        tag = "+dirty" if dirty.stdout.strip() else ""
        return done.stdout.strip() + tag if done.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def cuda_ms(fn: Callable[[], object], reps: int = 50, warmup: int = 5) -> float:
    """Median milliseconds of ``fn``'s GPU work on the current torch stream, timed with CUDA
    events around each call after ``warmup`` calls."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def stream_ms(fn: Callable[[], object], stream, reps: int = 30, warmup: int = 5) -> tuple:
    """(GPU ms between CUDA events recorded on ``stream`` around ``fn``, wall ms from a synced
    device to the end event), medians over ``reps`` calls after ``warmup``: when the two agree,
    the GPU was waiting for the host."""
    import torch

    gpu, wall = [], []
    for i in range(reps + warmup):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        if i >= warmup:
            gpu.append(start.elapsed_time(end))
            wall.append((time.perf_counter() - t0) * 1e3)
    return sorted(gpu)[reps // 2], sorted(wall)[reps // 2]
