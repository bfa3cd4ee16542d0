"""Issue 14's targets for dali-asr, judged on benchmarks/run.py's rows: one line per target
and configuration with the measured value, the goal and whether it is met.

For dali-asr at the largest thread count, every figure a median over the timed passes (a
throughput ratio is the median of the per-round ratios, as in the table: bench_report.ratio):

- every LENGTH configuration: audio-s/s ≥ 1.3× the reference's, and CPU per audio-s (process
  CPU, every thread) ≤ 0.75× the reference's;
- length/waveform/single: audio-s/s ≥ 0.85× the read + decode ceiling at the same thread count;
- each training stream: CPU per audio-s ≤ 1.15× the single pass's of the same batching and
  features (length/fbank/train against length/fbank/single);
- each training stream: first batch (construction to first batch in hand) ≤ 0.5 s, the
  reference's, measured the same way, beside it;
- every configuration: peak RSS ≤ the reference's;
- the measurement itself: ≥ 3 timed passes per loader, each ≥ 10 s (the shortest is named).

A target whose figures were not measured (no reference in the run, a configuration left out)
has no line.
"""

from __future__ import annotations

from bench_report import Row, find, median_ratio, ratio

MIN_PASSES = 3
MIN_PASS_S = 10.0

LENGTH_VS_REFERENCE = 1.3
CPU_VS_REFERENCE = 0.75
WAVEFORM_VS_READ_DECODE = 0.85
TRAIN_CPU_VS_SINGLE = 1.15
FIRST_BATCH_S = 0.5

CPU = "cpu_ms_per_audio_s"
RATE = "audio_per_s"


class _Table:
    def __init__(self) -> None:
        self.lines = [
            "| target | config | measured | goal | met |",
            "| --- | --- | --- | --- | --- |",
        ]

    def add(
        self,
        name: str,
        config: str,
        value: float | None,
        goal: float | None,
        detail: str,
        *,
        unit: str = "×",
        higher: bool = True,
        digits: int = 2,
    ) -> None:
        if value is None or goal is None:
            return
        met = value >= goal if higher else value <= goal
        measured = f"{value:,.{digits}f}{unit}" + (f" ({detail})" if detail else "")
        self.lines.append(
            f"| {name} | {config} | {measured} | {'≥' if higher else '≤'} {goal:,.{digits}f}{unit} "
            f"| {'yes' if met else 'no'} |"
        )


def _first_batch_note(ours: Row, ref: Row | None) -> str:
    """The imports before the clock (the loader's modules), and the reference's figures."""
    ours_import = ours.median("import_s")
    parts = [f"imports {ours_import:.2f} s"] if ours_import else []
    ref_first, ref_import = _med(ref, "first_batch_s"), _med(ref, "import_s")
    if ref_first is not None:
        parts.append(f"reference {ref_first:.2f} s")
        if ref_import:
            parts[-1] += f", imports {ref_import:.2f} s"
    return "; ".join(parts)


def _med(row: Row | None, metric: str) -> float | None:
    return None if row is None else row.median(metric)


def _vs(a: Row | None, b: Row | None, metric: str, spec: str, unit: str, word: str) -> str:
    """``3,571 vs 3,366 audio-s/s``: the two medians a ratio is made of."""
    x, y = _med(a, metric), _med(b, metric)
    if x is None or y is None:
        return ""
    return f"{x:{spec}} {word} {y:{spec}}{unit}"


def _passes_line(out: _Table, rows: list[Row]) -> None:
    """Whether every loader got ``MIN_PASSES`` timed passes of ``MIN_PASS_S`` or more."""
    if not rows:
        return
    fewest = min(len(row.passes) for row in rows)
    walls = [(p["wall_s"], row) for row in rows for p in row.passes]
    if not walls:
        return
    wall, shortest = min(walls, key=lambda w: w[0])
    met = fewest >= MIN_PASSES and wall >= MIN_PASS_S
    out.lines.append(
        f"| ≥ {MIN_PASSES} timed passes of ≥ {MIN_PASS_S:.0f} s each | every loader "
        f"| {fewest} pass(es); shortest {wall:.1f} s ({shortest.config} {shortest.label}) "
        f"| ≥ {MIN_PASSES} of ≥ {MIN_PASS_S:.0f} s | {'yes' if met else 'no'} |"
    )


def targets(rows: list[Row], threads: int) -> str:
    """Issue 14's targets for dali-asr at ``threads`` DALI threads (the module docstring)."""
    out = _Table()
    for config in dict.fromkeys(r.config for r in rows):
        ours = find(rows, config, "dali-asr", threads)
        if ours is None or not ours.passes:
            continue
        ref = find(rows, config, "reference", None)
        ref = ref if ref is not None and ref.passes else None
        if config.startswith("length/"):
            out.add(
                f"audio-s/s ≥ {LENGTH_VS_REFERENCE}× the reference's",
                config,
                ratio(ours, ref),
                LENGTH_VS_REFERENCE,
                _vs(ours, ref, RATE, ",.0f", " audio-s/s", "vs"),
            )
            out.add(
                f"CPU per audio-s ≤ {CPU_VS_REFERENCE}× the reference's",
                config,
                median_ratio(ours, ref, CPU),
                CPU_VS_REFERENCE,
                _vs(ours, ref, CPU, ".3f", " ms", "vs"),
                higher=False,
            )
        if config == "length/waveform/single":
            ceiling = find(rows, config, "read+decode", threads)
            out.add(
                f"audio-s/s ≥ {WAVEFORM_VS_READ_DECODE}× the read + decode ceiling",
                config,
                ratio(ours, ceiling),
                WAVEFORM_VS_READ_DECODE,
                _vs(ours, ceiling, RATE, ",.0f", " audio-s/s", "of"),
            )
        if config.endswith("/train"):
            single_name = config.removesuffix("train") + "single"
            single = find(rows, single_name, "dali-asr", threads)
            out.add(
                f"training stream CPU per audio-s ≤ {TRAIN_CPU_VS_SINGLE}× the single pass's",
                config,
                median_ratio(ours, single, CPU),
                TRAIN_CPU_VS_SINGLE,
                _vs(ours, single, CPU, ".3f", f" ms, {single_name}", "vs"),
                higher=False,
            )
            out.add(
                f"first batch ≤ {FIRST_BATCH_S} s",
                config,
                ours.median("first_batch_s"),
                FIRST_BATCH_S,
                _first_batch_note(ours, ref),
                unit=" s",
                higher=False,
            )
        out.add(
            "peak RSS ≤ the reference's",
            config,
            ours.median("peak_rss_mb"),
            _med(ref, "peak_rss_mb"),
            "",
            unit=" MB",
            higher=False,
            digits=0,
        )
    _passes_line(out, rows)
    return "\n".join(out.lines)
