"""Summaries, the markdown table, the issue's targets and the RESULTS.md entry.

A pass's figures: audio seconds per second and batches per second over the iteration (first
``next()`` to exhaustion; construction excluded, as baseline.md), process CPU seconds per audio
second over the same interval, padding efficiency (real steps / batch × padded length: samples
for waveform, frames for fbank, samples for the decode-only ceiling), time to the first batch
counted from the loader's construction, and the child's peak RSS.
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
    "peak_rss_mb",
    "padding_efficiency",
)


def pass_metrics(r: dict[str, Any]) -> dict[str, float]:
    wall = max(r["wall_s"], 1e-9)
    audio = max(r["audio_s"], 1e-9)
    return {
        "audio_per_s": r["audio_s"] / wall,
        "batches_per_s": r["batches"] / wall,
        "cpu_ms_per_audio_s": 1000.0 * r["cpu_s"] / audio,
        "cores": r["cpu_s"] / wall,
        "first_batch_s": r["first_batch_s"],
        "peak_rss_mb": r["peak_rss_mb"],
        "padding_efficiency": r["real"] / max(1, r["padded"]),
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
        values = [pass_metrics(p)[metric] for p in self.passes]
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


def ratio(a: Row | None, b: Row | None) -> float | None:
    """a's audio-s/s over b's: the median of the per-round ratios when both ran in the same
    rounds (processes run back to back share the machine's state at that moment, which on a
    shared machine moves more than the loaders differ), else the ratio of the medians."""
    if a is None or b is None or not a.passes or not b.passes:
        return None
    rounds_a = {p.get("round"): pass_metrics(p)["audio_per_s"] for p in a.passes}
    rounds_b = {p.get("round"): pass_metrics(p)["audio_per_s"] for p in b.passes}
    paired = [rounds_a[k] / rounds_b[k] for k in rounds_a if k is not None and k in rounds_b]
    if len(paired) == len(a.passes) == len(b.passes):
        return statistics.median(paired)
    return a.median("audio_per_s") / b.median("audio_per_s")  # type: ignore[operator]


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
        "| CPU per audio-s × reference |"
    )
    lines = [head, "|" + " --- |" * 13]
    for row in rows:
        if not row.passes:
            error = row.errors[-1].strip().splitlines()[-1][:80] if row.errors else "no passes"
            lines.append(f"| {row.config} | {row.label} | failed: {error} |" + " |" * 10)
            continue
        ref = find(rows, row.config, "reference", None)
        ceiling = find(rows, row.config, "ceiling", row.threads)
        vs_ref = ratio(row, ref) if row.subject != "reference" else None
        vs_ceiling = ratio(row, ceiling) if row.subject == "dali-asr" else None
        # CPU time hardly moves when another process takes a core; throughput does.
        cpu_vs_ref = None
        if ref is not None and ref.passes and row.subject != "reference":
            cpu_vs_ref = row.median("cpu_ms_per_audio_s") / ref.median("cpu_ms_per_audio_s")
        lines.append(
            f"| {row.config} | {row.label} | {row.passes[0]['batches']} "
            f"| {_fmt3(row.stats('audio_per_s'), 0)} | {_fmt3(row.stats('batches_per_s'), 1)} "
            f"| {_fmt3(row.stats('cpu_ms_per_audio_s'), 3)} | {_fmt(row.median('cores'), '.2f')} "
            f"| {_fmt(row.median('padding_efficiency'), '.3f')} "
            f"| {_fmt3(row.stats('first_batch_s'), 2)} | {_fmt3(row.stats('peak_rss_mb'), 0)} "
            f"| {_fmt(vs_ref, '.2f')} | {_fmt(vs_ceiling, '.2f')} | {_fmt(cpu_vs_ref, '.2f')} |"
        )
    return "\n".join(lines)


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


def targets(rows: list[Row], threads: int) -> str:
    """Issue 5's targets for dali-asr at ``threads`` DALI threads, met or missed by how much."""
    lines = ["| target | config | measured | met |", "| --- | --- | --- | --- |"]

    def add(
        name: str, config: str, value: float | None, goal: float, unit: str, higher: bool = True
    ) -> None:
        if value is None:
            return
        met = value >= goal if higher else value <= goal
        lines.append(
            f"| {name} | {config} | {value:,.2f}{unit} (goal {'≥' if higher else '≤'} "
            f"{goal:,.2f}{unit}) | {'yes' if met else 'no'} |"
        )

    for config in dict.fromkeys(r.config for r in rows):
        ours = find(rows, config, "dali-asr", threads)
        if ours is None or not ours.passes:
            continue
        ref = find(rows, config, "reference", None)
        ceiling = find(rows, config, "ceiling", threads)
        if "/waveform/" in config:
            add("waveform ≥ 85 % of the decode ceiling", config, ratio(ours, ceiling), 0.85, "×")
            if config.endswith("/train"):
                add("train stream ≥ 2.5× the reference", config, ratio(ours, ref), 2.5, "×")
        else:
            add("fbank ≥ 1.3× the reference", config, ratio(ours, ref), 1.3, "×")
        if config.endswith("/train"):
            add("first batch ≤ 0.5 s", config, ours.median("first_batch_s"), 0.5, " s", False)
        if ref is not None and ref.passes:
            add(
                "peak RSS ≤ the reference's",
                config,
                ours.median("peak_rss_mb"),
                ref.median("peak_rss_mb") or 0.0,
                " MB",
                False,
            )
    return "\n".join(lines)


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
        f"passes of {info['epochs']} epoch(s) after {info['warmup']} warm-up round(s), each "
        f"pass of each loader in its own process; {info['elapsed_s'] / 60:.1f} min in all."
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
