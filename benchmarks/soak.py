"""Soak: run the training stream for a while and watch the process's memory.

A sampling thread reads the resident set size every ``--sample-every`` seconds; the table
gives each minute's median, minimum and maximum (single samples are noisy: a batch's arrays
come and go, and the allocators give pages back in bursts). The baseline is the median of the
last minute of the warm-up. The goal: after the warm-up every minute's RSS (its median) stays
within 5 % of the baseline, and no sample rises above +5 % (memory held); samples that dip
below are memory handed back to the system, reported but not a failure. Prints a verdict and
the table; ``--plot`` writes a PNG of every sample over time.
``--probe`` adds what the allocators hold (glibc malloc in use and kept free, pyarrow's pool)
so a growth can be attributed; ``--tracemalloc`` adds Python's own allocations (slow).

    .venv/bin/python benchmarks/soak.py [--minutes 30] [--warmup 3] [--data PATH] [--plot F]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import logging
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dali_asr.config import config_from_dict
from dali_asr.loader import AsrLoader

ESPEAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "espeak-mini"
MB = 2**20
SHOWN = ("arrow_alloc", "malloc_used", "malloc_free", "rss_anon", "q_planned", "q_ready")
"""The probes printed as it runs (all of them go to --json)."""


def rss_mb() -> float:
    """Current resident set size (not the peak) from /proc."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / MB


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def malloc_heaps() -> dict[str, float]:
    """Per glibc heap (arena): its size and the free bytes inside it, MB (``malloc_info``)."""
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    with tempfile.NamedTemporaryFile(suffix=".xml") as f:
        fp = libc.fopen(f.name.encode(), b"w")
        libc.malloc_info(0, fp)
        libc.fclose(fp)
        text = Path(f.name).read_text()
    out = {}
    for nr, body in re.findall(r'<heap nr="(\d+)">(.*?)</heap>', text, re.S):
        size = re.search(r'<system type="current" size="(\d+)"', body)
        free = re.search(r'<total type="rest" count="\d+" size="(\d+)"', body)
        if size and free:
            out[f"heap{nr}"] = int(size.group(1)) / MB
            out[f"heap{nr}_free"] = int(free.group(1)) / MB
    return out


def libc_mallinfo2():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    fn = getattr(ctypes.CDLL(name), "mallinfo2", None)
    if fn is None:  # glibc < 2.33
        return None
    fn.restype = _Mallinfo2
    return fn


@dataclass
class Sample:
    minute: float
    rss: float
    batches: int
    audio_h: float
    cpu_s: float
    extra: dict[str, float] = field(default_factory=dict)


class Sampler(threading.Thread):
    """Samples RSS (and with ``probe`` the allocators) every ``every`` seconds."""

    def __init__(self, every: float, probe: bool, traced: bool, loader=None) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.loader = loader
        self.every = every
        self.probe = probe
        self.traced = traced
        self.samples: list[Sample] = []
        self.batches = 0
        self.audio_s = 0.0
        self.start_time = time.monotonic()
        self._done = threading.Event()
        self._mallinfo = libc_mallinfo2() if probe else None

    def run(self) -> None:
        while not self._done.wait(self.every):
            self.take()

    def stop(self) -> None:
        self._done.set()
        self.join()

    def take(self) -> Sample:
        t = os.times()
        sample = Sample(
            (time.monotonic() - self.start_time) / 60,
            rss_mb(),
            self.batches,
            self.audio_s / 3600,
            t.user + t.system,
        )
        if self.probe:
            sample.extra.update(self._allocators())
        if self.traced:
            import tracemalloc

            sample.extra["py_traced"] = tracemalloc.get_traced_memory()[0] / MB
        self.samples.append(sample)
        return sample

    def _allocators(self) -> dict[str, float]:
        import pyarrow as pa

        out = {
            "arrow_alloc": pa.total_allocated_bytes() / MB,
            "arrow_max": pa.default_memory_pool().max_memory() / MB,
            "threads": float(threading.active_count()),
        }
        if self._mallinfo is not None:
            info = self._mallinfo()
            out["malloc_used"] = (info.uordblks + info.hblkhd) / MB
            out["malloc_mmap"] = info.hblkhd / MB
            out["malloc_free"] = info.fordblks / MB
            out.update(malloc_heaps())
        feeder = getattr(getattr(self.loader, "_epoch", None), "_feeder", None)
        if feeder is not None:  # how full the loader's queues are (private, for diagnosis)
            out["q_planned"] = float(feeder._planned.qsize())
            out["q_ready"] = float(feeder._ready.qsize())
            out["in_dali"] = float(
                sum(len(p.examples) for lane in feeder.lanes for g in lane.in_dali for p in g)
            )
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    out["rss_anon"] = int(line.split()[1]) / 1024
                elif line.startswith("RssFile:"):
                    out["rss_file"] = int(line.split()[1]) / 1024
        return out


def train_config(data: Path, fbank: bool, dali: dict | None = None):
    tsv = data / "language_distribution_0.tsv"
    storage = {"beta_corpus": 0.5, "beta_language": 0.5}
    if tsv.exists():
        storage["dataset_summary_path"] = str(tsv)
    return config_from_dict(
        {
            "asr_task_config": {
                "min_audio_len": 16_000,
                "max_audio_len": 480_000,
                "max_num_elements": 960_000,
                "num_seqs_multiple_of": 8,
                "example_shuffle_window": 1000,
                "batch_shuffle_window": 20,
                "use_fbank": fbank,
            },
            "mixture_parquet_storage_config": storage,
            **({"dali_asr": dali} if dali else {}),
        }
    )


def per_minute(samples: list[Sample]) -> list[tuple[int, list[Sample]]]:
    """Samples grouped by the minute they fall in: minute m holds (m - 1, m]."""
    groups: dict[int, list[Sample]] = {}
    for s in samples:
        groups.setdefault(max(1, int(-(-s.minute // 1))), []).append(s)
    return sorted(groups.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="minutes before the baseline (its last minute)"
    )
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds")
    parser.add_argument("--data", type=Path, default=ESPEAK)
    parser.add_argument("--tokenizer", type=Path, default=None)
    parser.add_argument("--fbank", action="store_true")
    parser.add_argument("--dali", type=json.loads, default=None, help="dali_asr settings (JSON)")
    parser.add_argument("--probe", action="store_true", help="sample the allocators too")
    parser.add_argument("--tracemalloc", action="store_true", help="trace Python allocations")
    parser.add_argument("--json", type=Path, help="write every sample to this file")
    parser.add_argument("--plot", type=Path, help="write RSS over time to this PNG")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start()
    tokenizer = args.tokenizer
    if tokenizer is None and (args.data / "tokenizer" / "char_spm.model").exists():
        tokenizer = args.data / "tokenizer" / "char_spm.model"
    config = train_config(args.data, args.fbank, args.dali)
    loader = AsrLoader(args.data, "train", config, tokenizer)
    sampler = Sampler(args.sample_every, args.probe, args.tracemalloc, loader)
    sampler.start()
    next_report = 1.0
    for batch in loader:
        sampler.audio_s += sum(batch.audio_size) / 16_000
        sampler.batches += 1
        elapsed = (time.monotonic() - sampler.start_time) / 60
        if elapsed >= next_report:
            recent = [s for s in sampler.samples if s.minute > next_report - 1]
            rss = [s.rss for s in recent] or [rss_mb()]
            extra = recent[-1].extra if recent else {}
            print(
                f"{elapsed:6.1f} min  RSS med {statistics.median(rss):7.1f} max {max(rss):7.1f} MB"
                f"  batches {sampler.batches:8d}  audio h {sampler.audio_s / 3600:8.2f}"
                + "".join(f"  {k} {v:.1f}" for k, v in extra.items() if k in SHOWN),
                flush=True,
            )
            next_report += 1.0
        if elapsed >= args.minutes:
            break
    sampler.stop()
    loader.close()
    samples = sampler.samples
    if args.json:
        args.json.write_text(json.dumps([asdict(s) for s in samples]))
    warm = [s.rss for s in samples if args.warmup - 1 < s.minute <= args.warmup]
    after = [s for s in samples if s.minute > args.warmup]
    if not warm or not after:
        print("run too short for a verdict")
        return 1
    base = statistics.median(warm)
    medians = [
        statistics.median(s.rss for s in group)
        for minute, group in per_minute(samples)
        if minute > args.warmup
    ]
    minute_worst = max(abs(m - base) / base for m in medians)
    peak = max(s.rss for s in after) / base - 1
    low = min(s.rss for s in after) / base - 1
    ok = minute_worst <= 0.05 and peak <= 0.05
    print("\n| minute | RSS median MB | min | max | batches | audio h |")
    print("|---:|---:|---:|---:|---:|---:|")
    for minute, group in per_minute(samples):
        rss = [s.rss for s in group]
        print(
            f"| {minute} | {statistics.median(rss):.1f} | {min(rss):.1f} | {max(rss):.1f} "
            f"| {group[-1].batches} | {group[-1].audio_h:.2f} |"
        )
    print(
        f"\nbaseline (median of minute {args.warmup:g}): {base:.1f} MB; after the warm-up the "
        f"minute medians stay within {100 * minute_worst:.1f} % of it, the highest sample is "
        f"{100 * peak:+.1f} %, the lowest {100 * low:+.1f} % (memory given back): "
        f"{'WITHIN' if ok else 'OUTSIDE'} the 5 % goal; {loader.report.summary()}"
    )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot([s.minute for s in samples], [s.rss for s in samples], linewidth=0.8)
        ax.axvline(args.warmup, color="grey", linestyle=":")
        ax.axhspan(base * 0.95, base * 1.05, color="green", alpha=0.1)
        ax.set_xlabel("minutes")
        ax.set_ylabel("RSS (MB)")
        ax.set_title("dali-asr training stream soak")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
