"""Summaries, the markdown tables and the RESULTS.md entry (the issue's targets are
bench_targets.py's).

A loader's pass: audio seconds per second and batches per second over the iteration (first
``next()`` to exhaustion; construction excluded, as baseline.md), process CPU seconds per audio
second over the same interval, padding efficiency (real steps / batch × padded length: samples
for waveform, frames for fbank, samples for the decode-only ceiling), time to the first batch
counted from the loader's construction, and the child's peak RSS. A read + decode pass is CPU
work, not a loader's wall time: its audio-s/s is the ceiling ``cores / CPU per audio-s``, its
CPU is the read's plus the decode's, its cores the CPUs it may run on, and it has no batches/s,
first batch or padding.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METRICS = (
    "audio_per_s",
    "batches_per_s",
    "cpu_ms_per_audio_s",
    "cores",
    "first_batch_s",
    "import_s",
    "peak_rss_mb",
    "padding_efficiency",
    "read_ms_per_audio_s",
    "decode_ms_per_audio_s",
)


def pass_metrics(r: dict[str, Any]) -> dict[str, float | None]:
    wall = max(r["wall_s"], 1e-9)
    audio = max(r["audio_s"], 1e-9)
    if "read_cpu_s" in r:
        read_ms = 1000.0 * r["read_cpu_s"] / audio
        decode_ms = 1000.0 * r["decode_cpu_s"] / audio
        return {
            "audio_per_s": 1000.0 * r["cores"] / max(read_ms + decode_ms, 1e-9),
            "batches_per_s": None,
            "cpu_ms_per_audio_s": read_ms + decode_ms,
            "cores": float(r["cores"]),
            "first_batch_s": None,
            "import_s": None,
            "peak_rss_mb": r["peak_rss_mb"],
            "padding_efficiency": None,
            "read_ms_per_audio_s": read_ms,
            "decode_ms_per_audio_s": decode_ms,
        }
    return {
        "audio_per_s": r["audio_s"] / wall,
        "batches_per_s": r["batches"] / wall,
        "cpu_ms_per_audio_s": 1000.0 * r["cpu_s"] / audio,
        "cores": r["cpu_s"] / wall,
        "first_batch_s": r["first_batch_s"],
        "import_s": r.get("import_s"),
        "peak_rss_mb": r["peak_rss_mb"],
        "padding_efficiency": r["real"] / max(1, r["padded"]),
        "read_ms_per_audio_s": None,
        "decode_ms_per_audio_s": None,
    }


@dataclass
class Row:
    """One loader on one configuration, summarised over its timed passes."""

    config: str
    subject: str
    threads: int | None
    passes: list[dict[str, Any]]
    errors: list[str]

    @property
    def label(self) -> str:
        return self.subject if self.threads is None else f"{self.subject} ({self.threads}t)"

    def stats(self, metric: str) -> tuple[float, float, float] | None:
        values = [v for p in self.passes if (v := pass_metrics(p)[metric]) is not None]
        if not values:
            return None
        return min(values), statistics.median(values), max(values)

    def median(self, metric: str) -> float | None:
        s = self.stats(metric)
        return None if s is None else s[1]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "config": self.config,
            "subject": self.subject,
            "threads": self.threads,
            "passes": len(self.passes),
            "errors": self.errors,
        }
        for m in METRICS:
            s = self.stats(m)
            out[m] = None if s is None else {"min": s[0], "median": s[1], "max": s[2]}
        if self.passes:
            first = self.passes[0]
            out.update(
                batches=first["batches"], examples=first["examples"], audio_s=first["audio_s"]
            )
        return out


def find(rows: list[Row], config: str, subject: str, threads: int | None) -> Row | None:
    for row in rows:
        if (row.config, row.subject) == (config, subject) and (
            threads is None or row.threads in (None, threads)
        ):
            return row
    return None


def _rate(p: dict[str, Any]) -> float:
    return pass_metrics(p)["audio_per_s"] or 0.0


def ratio(a: Row | None, b: Row | None) -> float | None:
    """a's audio-s/s over b's: the median of the per-round ratios when both ran in the same
    rounds (processes run back to back share the machine's state at that moment, which on a
    shared machine moves more than the loaders differ), else the ratio of the medians."""
    if a is None or b is None or not a.passes or not b.passes:
        return None
    rounds_a = {p.get("round"): _rate(p) for p in a.passes}
    rounds_b = {p.get("round"): _rate(p) for p in b.passes}
    paired = [rounds_a[k] / rounds_b[k] for k in rounds_a if k is not None and k in rounds_b]
    if len(paired) == len(a.passes) == len(b.passes):
        return statistics.median(paired)
    return a.median("audio_per_s") / b.median("audio_per_s")  # type: ignore[operator]


def median_ratio(a: Row | None, b: Row | None, metric: str) -> float | None:
    """a's median of ``metric`` over b's."""
    top = a.median(metric) if a is not None else None
    bottom = b.median(metric) if b is not None else None
    return None if top is None or not bottom else top / bottom


def _fmt3(s: tuple[float, float, float] | None, digits: int) -> str:
    if s is None:
        return "—"
    return " / ".join(f"{v:,.{digits}f}" for v in s)


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def table(rows: list[Row]) -> str:
    """The markdown table: one line per loader and configuration, min / median / max."""
    head = (
        "| config | loader | batches | audio-s/s min / med / max | batches/s min / med / max "
        "| CPU ms per audio-s min / med / max | cores | pad-eff "
        "| first batch s min / med / max | peak RSS MB min / med / max | × reference | × ceiling "
        "| × read+decode | CPU per audio-s × reference |"
    )
    lines = [head, "|" + " --- |" * 14]
    for row in rows:
        if not row.passes:
            error = row.errors[-1].strip().splitlines()[-1][:80] if row.errors else "no passes"
            lines.append(f"| {row.config} | {row.label} | failed: {error} |" + " |" * 11)
            continue
        ref = find(rows, row.config, "reference", None)
        ours = row.subject == "dali-asr"
        vs_ref = ratio(row, ref) if row.subject != "reference" else None
        vs_ceiling = ratio(row, find(rows, row.config, "ceiling", row.threads)) if ours else None
        vs_read = ratio(row, find(rows, row.config, "read+decode", row.threads)) if ours else None
        # CPU time hardly moves when another process takes a core; throughput does.
        cpu_vs_ref = (
            median_ratio(row, ref, "cpu_ms_per_audio_s") if row.subject != "reference" else None
        )
        lines.append(
            f"| {row.config} | {row.label} | {row.passes[0]['batches']} "
            f"| {_fmt3(row.stats('audio_per_s'), 0)} | {_fmt3(row.stats('batches_per_s'), 1)} "
            f"| {_fmt3(row.stats('cpu_ms_per_audio_s'), 3)} | {_fmt(row.median('cores'), '.2f')} "
            f"| {_fmt(row.median('padding_efficiency'), '.3f')} "
            f"| {_fmt3(row.stats('first_batch_s'), 2)} | {_fmt3(row.stats('peak_rss_mb'), 0)} "
            f"| {_fmt(vs_ref, '.2f')} | {_fmt(vs_ceiling, '.2f')} | {_fmt(vs_read, '.2f')} "
            f"| {_fmt(cpu_vs_ref, '.2f')} |"
        )
    return "\n".join(lines)


def read_decode_table(rows: list[Row]) -> str:
    """The read + decode ceiling's parts, per configuration and thread count (empty when the
    subject did not run)."""
    lines = [
        "| config | DALI threads | audio-s | read CPU ms per audio-s min / med / max "
        "| decode CPU ms per audio-s min / med / max | cores | ceiling audio-s/s min / med / max |",
        "|" + " --- |" * 7,
    ]
    for row in rows:
        if row.subject != "read+decode" or not row.passes:
            continue
        lines.append(
            f"| {row.config} | {row.threads} | {row.passes[0]['audio_s']:,.0f} "
            f"| {_fmt3(row.stats('read_ms_per_audio_s'), 3)} "
            f"| {_fmt3(row.stats('decode_ms_per_audio_s'), 3)} "
            f"| {_fmt(row.median('cores'), '.0f')} | {_fmt3(row.stats('audio_per_s'), 0)} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def failures(rows: list[Row], passes: int) -> str:
    """One line per loader that lost passes (a child that crashed or timed out)."""
    lines = []
    for row in rows:
        if row.errors:
            last = row.errors[-1].strip().splitlines()[-1][:160]
            lines.append(
                f"- {row.config} {row.label}: {len(row.passes)} of {passes} timed passes "
                f"measured, {len(row.errors)} run(s) failed; last error: `{last}`"
            )
    return "\n".join(lines)


def source_state(repo: Path) -> dict[str, Any]:
    """Which dali_asr the children import (the parent's, as they inherit its sys.path and
    PYTHONPATH), a hash of its sources, and the repository's commit: others may edit the
    package while a run is in progress, and a changed hash at the end says so."""
    import subprocess

    import dali_asr

    package = Path(dali_asr.__file__).resolve().parent
    digest = hashlib.sha1()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    state: dict[str, Any] = {"path": str(package), "sources_sha1": digest.hexdigest()[:12]}

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    state["commit"] = git("rev-parse", "--short", "HEAD")
    if package.parent == repo.resolve():
        state["uncommitted_changes"] = bool(git("status", "--porcelain", "--", "dali_asr"))
    return state


def describe_source(before: dict[str, Any], after: dict[str, Any]) -> str:
    where = (
        f"repository at {before['commit']}"
        + (" with uncommitted changes" if before.get("uncommitted_changes") else "")
        if "uncommitted_changes" in before
        else f"a copy at {before['path']} (repository at {before['commit']})"
    )
    changed = before["sources_sha1"] != after["sources_sha1"]
    return f"dali_asr: {where}, sources {before['sources_sha1']}" + (
        f" → **{after['sources_sha1']}: the package changed during the run**" if changed else ""
    )


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        return None


def calibrate(seconds: float = 0.3) -> dict[str, float]:
    """sha256 throughput on 1 and 2 threads (hashlib drops the GIL on large buffers): a ratio
    well under 2 means another process holds a core and the run's numbers are depressed."""
    data = os.urandom(32 << 20)

    def rate(n: int) -> float:
        done = [0] * n

        def work(i: int) -> None:
            t_end = time.perf_counter() + seconds
            while time.perf_counter() < t_end:
                hashlib.sha256(data).digest()
                done[i] += 1

        threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(done) * 32 / (time.perf_counter() - t0)

    one, two = rate(1), rate(2)
    return {
        "sha256_1t_mb_s": one,
        "sha256_2t_mb_s": two,
        "ratio_2t": two / one,
        "loadavg_1min": os.getloadavg()[0],
    }


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "memory_gib": round(memory_gib(), 1),
        "gpu": gpu_name(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def describe_machine(m: dict[str, Any]) -> str:
    gpu = m.get("gpu") or "no GPU"
    return f"{m['cores']} cores ({m['cpu']}), {m['memory_gib']:.0f} GiB, {gpu}"


def describe_epochs(epochs: int | dict[str, int]) -> str:
    """``3 epoch(s)``, or per configuration when the warm-up sized each one's passes."""
    if isinstance(epochs, int):
        return f"{epochs} epoch(s)"
    counts = sorted(set(epochs.values())) or [0]
    each = ", ".join(f"{config} {n}" for config, n in epochs.items())
    span = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"{span} epochs (sized by the warm-up: {each})"


def entry(title: str, command: str, info: dict[str, Any], body: str) -> str:
    """A RESULTS.md entry: heading, machine, versions, dataset, calibration, command, body."""
    m = info["machine"]
    vers = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    calib = "; ".join(
        f"{when}: sha256 on 2 threads ×{c['ratio_2t']:.2f} of 1, load {c['loadavg_1min']:.2f}"
        for when, c in info["calibration"].items()
    )
    return (
        f"## {info['date']} — {title}\n\n"
        f"Machine: {describe_machine(m)}; Python {m['python']}; {vers}.\n"
        f"Dataset: `{info['dataset']}`, split `{info['split']}`; {info['passes']} timed "
        f"passes of {describe_epochs(info['epochs'])} after {info['warmup']} warm-up "
        f"round(s), each pass of each loader in its own process; "
        f"{info['elapsed_s'] / 60:.1f} min in all."
        + (f" Calibration ({calib})." if calib else "")
        + (f"\n{describe_source(**info['source'])}." if "source" in info else "")
        + f"\n\n```\n{command}\n```\n\n{body}\n"
    )


def add_entry(path: Path, block: str) -> None:
    """Put ``block`` (one entry) in a RESULTS.md-style file, newest first: after the file's
    header, above the first ``## `` entry; a new file gets the header."""
    header = (
        "# Benchmark results\n\nNewest first. Each entry: the machine (cores, card), the "
        "date, the command, the table.\n\n"
    )
    text = path.read_text() if path.exists() else header
    at = text.find("\n## ")
    if at < 0:
        text = text.rstrip("\n") + "\n\n" + block.rstrip("\n") + "\n"
    else:
        text = text[: at + 1] + block.rstrip("\n") + "\n\n" + text[at + 1 :]
    path.write_text(text)


def publish(
    script: str,
    argv: list[str],
    info: dict[str, Any],
    rows: list[Row],
    raw: list[dict[str, Any]],
    body: str,
    *,
    json_path: Path | None,
    markdown_path: Path | None,
    title: str,
) -> None:
    """Print the table, then write the run's JSON and its RESULTS.md entry where asked; both
    carry the command that reproduces the run."""
    print(body)
    command = f"python benchmarks/{script} " + " ".join(map(shlex.quote, argv))
    if json_path:
        doc = {**info, "command": command, "summary": [r.as_dict() for r in rows], "runs": raw}
        json_path.write_text(json.dumps(doc, indent=1))
    if markdown_path:
        add_entry(markdown_path, entry(title, command, info, body))
