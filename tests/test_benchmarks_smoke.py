"""Smoke test of benchmarks/run.py: its dali-asr, ceiling and read+decode children on espeak-mini's
dev split (5 batches; no reference: its virtualenv is not part of CI), the RESULTS.md
bookkeeping, the passes' sizing and issue 14's targets table."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.append(str(BENCH))  # the benchmark modules are scripts, not a package

import bench_report  # noqa: E402
import bench_targets  # noqa: E402
import run  # noqa: E402
from bench_common import ALL_CONFIGS, BenchConfig, ChildSpec, PassMeter  # noqa: E402

POSITIVE = ("audio_per_s", "batches_per_s", "cpu_ms_per_audio_s", "first_batch_s", "peak_rss_mb")


def run_script(script: str, espeak_root: Path, *args: str) -> str:
    """A benchmark script on espeak-mini's dev split, length/waveform/single; its stdout."""
    cmd = [sys.executable, str(BENCH / script), "--data", str(espeak_root), "--split", "dev",
           "--configs", "length/waveform/single", *args]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_run_py_children_report_positive_figures(tmp_path: Path, espeak_root: Path) -> None:
    out = tmp_path / "bench.json"
    results_md = tmp_path / "RESULTS.md"
    stdout = run_script(
        "run.py", espeak_root, "--subjects", "dali-asr", "ceiling", "read+decode",
        "--passes", "1", "--warmup", "0", "--epochs", "1", "--max-batches", "5", "--no-calibrate",
        "--timeout", "120", "--json", str(out), "--markdown-out", str(results_md),
    )  # fmt: skip
    assert "| length/waveform/single | dali-asr (2t) | 5 |" in stdout
    assert "| × read+decode |" in stdout and "read + decode ceiling's parts" in stdout

    doc = json.loads(out.read_text())
    summary = {row["subject"]: row for row in doc["summary"]}
    assert set(summary) == {"dali-asr", "ceiling", "read+decode"}
    # the whole split within the length filter, read and decoded, each part timed
    ceiling = summary.pop("read+decode")
    assert ceiling["passes"] == 1 and not ceiling["errors"], ceiling["errors"]
    assert ceiling["audio_s"] > summary["dali-asr"]["audio_s"] > 0
    for metric in ("audio_per_s", "cpu_ms_per_audio_s", "read_ms_per_audio_s", "peak_rss_mb"):
        assert ceiling[metric]["median"] > 0, metric
    parts = ceiling["read_ms_per_audio_s"]["median"] + ceiling["decode_ms_per_audio_s"]["median"]
    assert ceiling["cpu_ms_per_audio_s"]["median"] == pytest.approx(parts)
    cores = ceiling["cores"]["median"]
    assert ceiling["audio_per_s"]["median"] == pytest.approx(1000 * cores / parts)
    for subject, row in summary.items():
        assert row["passes"] == 1 and not row["errors"], (subject, row["errors"])
        assert row["batches"] == 5 and row["examples"] > 0 and row["audio_s"] > 0
        for metric in POSITIVE:
            assert row[metric]["median"] > 0, (subject, metric)
        assert 0 < row["padding_efficiency"]["median"] <= 1
    # both decode the same planned batches
    assert summary["dali-asr"]["audio_s"] == pytest.approx(summary["ceiling"]["audio_s"])
    for record in doc["runs"]:
        result = record["result"]
        if record["subject"] == "read+decode":
            assert result["decoded_s"] == pytest.approx(result["audio_s"])
            continue
        for key in ("wall_s", "cpu_s", "construct_s", "first_batch_s", "peak_rss_mb"):
            assert result[key] > 0, (record["subject"], key)
    assert results_md.read_text().startswith("# Benchmark results")
    assert "python benchmarks/run.py --data" in results_md.read_text()


def test_configs_and_child_spec_round_trip() -> None:
    names = {c.name for c in ALL_CONFIGS}
    assert len(names) == 8 and "length/fbank/train" in names
    spec = ChildSpec("dali-asr", "/d", "train", None, "static/waveform/train", {}, {})
    assert ChildSpec.from_json(spec.to_json()) == spec
    assert BenchConfig.parse(spec.config).mode == "train"
    with pytest.raises(ValueError):
        BenchConfig.parse("length/mfcc/single")


def test_dali_settings_reach_the_loader_but_not_device_or_threads() -> None:
    import dali_child

    overrides = run.parse_overrides(["malloc_arena_max=null", "decode_batch=32", "num_threads=7"])
    spec = ChildSpec(
        "dali-asr", "/d", "train", None, "length/waveform/single", {}, {}, dali=overrides
    )
    assert ChildSpec.from_json(spec.to_json()) == spec
    settings = dali_child.loader_config(spec, None).dali_asr
    assert settings.malloc_arena_max is None and settings.decode_batch == 32
    assert settings.num_threads == spec.threads  # --threads labels the row, so it wins
    assert settings.malloc_trim_threshold == 128 * 2**20  # untouched keys keep the defaults


def test_each_round_starts_one_subject_later() -> None:
    subjects = run.make_subjects([], [2], None)
    names = [[s.name for s in run.round_order(subjects, k)] for k in range(4)]
    assert names == [
        ["dali-asr", "ceiling", "read+decode"],
        ["ceiling", "read+decode", "dali-asr"],
        ["read+decode", "dali-asr", "ceiling"],
        ["dali-asr", "ceiling", "read+decode"],
    ]


def test_results_entries_are_newest_first(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    bench_report.add_entry(path, "## old\n\nfirst")
    bench_report.add_entry(path, "## new\n\nsecond")
    text = path.read_text()
    assert text.startswith("# Benchmark results")
    assert text.index("## new") < text.index("## old")


def test_passes_are_sized_from_the_fastest_warm_up() -> None:
    warm = [{"wall_s": 0.5}, {"wall_s": 2.0}, {"error": "exit 1"}]
    assert run.size_epochs(warm, 10.0) == 30  # 10 s × the margin 1.5 / 0.5 s
    assert run.size_epochs(warm, 10.0, warm_epochs=2) == 60  # 0.25 s an epoch
    # the first batch's start-up is not part of the epochs after it: 0.8 s - 0.3 s
    warm = [{"wall_s": 0.8, "first_batch_s": 0.3}, {"wall_s": 1.0, "first_batch_s": 0.1}]
    assert run.size_epochs(warm, 10.0) == 30
    # the first batch counts from the construction's start, the wall from its end: the
    # reference's 1.84 s warm-up epoch, 0.69 s of construction, first batch at 1.82 s, is
    # 0.7 s after its first batch, not 0.02 s (which sized passes of 2,210 epochs)
    warm = [
        {"wall_s": 1.84, "first_batch_s": 1.82, "construct_s": 0.69},
        {"wall_s": 1.07, "first_batch_s": 0.48, "construct_s": 0.01},
    ]
    assert run.size_epochs(warm, 10.0) == 25  # 15 s / min(1.84 - 1.13, 1.07 - 0.47) s
    assert run.size_epochs([{"error": "exit 1"}], 10.0) == 1


def test_passes_are_sized_from_the_warm_ups_steady_second_half() -> None:
    # two epochs of 200 audio-s in 1.1 s, the first slow (0.65 s): the second half of the
    # batches, 200 audio-s in 0.45 s, sizes 0.45 s an epoch, not 0.55 (8 s passes for 10)
    warm = [{"wall_s": 1.1, "audio_s": 400.0, "late_wall_s": 0.45, "late_audio_s": 200.0}]
    assert run.size_epochs(warm, 10.0, warm_epochs=2) == 34  # 15 s / 0.45 s
    # a real pass's second half, through PassMeter
    meter = PassMeter()
    meter.start()
    meter.built()
    for _ in range(4):
        meter.batch(1, 16_000, 16_000, 16_000)
    result = meter.result()
    assert result["late_audio_s"] == 1.0  # the middle batch's delivery to the last's: 1 audio-s
    assert 0 < result["late_wall_s"] <= result["wall_s"]


def _pass(rnd: int, audio_per_s: float, cpu_ms: float, wall: float = 12.0) -> dict:
    audio = audio_per_s * wall
    return {
        "round": rnd, "wall_s": wall, "audio_s": audio, "cpu_s": cpu_ms * audio / 1000,
        "batches": 10, "examples": 80, "first_batch_s": 0.4, "peak_rss_mb": 600.0,
        "real": 9, "padded": 10,
    }  # fmt: skip


def test_issue_14_targets_from_medians() -> None:
    def row(config: str, subject: str, rate: float, cpu: float) -> bench_report.Row:
        threads = None if subject == "reference" else 2
        passes = [_pass(k, rate * (1 + 0.01 * (k - 1)), cpu) for k in range(3)]
        return bench_report.Row(config, subject, threads, passes, [])

    read_decode = [
        {**_pass(k, 0, 0), "audio_s": 1000.0, "read_cpu_s": 0.1, "decode_cpu_s": 0.2, "cores": 2}
        for k in range(3)
    ]
    rows = [
        row("length/waveform/single", "reference", 3000, 0.5),
        row("length/waveform/single", "dali-asr", 4000, 0.3),
        bench_report.Row("length/waveform/single", "read+decode", 2, read_decode, []),
        row("length/waveform/train", "reference", 2000, 0.8),
        row("length/waveform/train", "dali-asr", 2400, 0.4),
    ]
    lines = {
        (cells[0], cells[1]): cells
        for line in bench_targets.targets(rows, 2).splitlines()[2:]
        if (cells := [c.strip() for c in line.strip("|").split("|")])
    }
    single, train = "length/waveform/single", "length/waveform/train"
    assert lines[("audio-s/s ≥ 1.3× the reference's", single)][-1] == "yes"  # 1.33×
    assert lines[("CPU per audio-s ≤ 0.75× the reference's", single)][-1] == "yes"  # 0.60×
    # read + decode: 2 cores / 0.3 ms per audio-s = 6,667 audio-s/s; 4,000 is 0.60× of it
    ceiling = lines[("audio-s/s ≥ 0.85× the read + decode ceiling", single)]
    assert ceiling[2].startswith("0.60×") and ceiling[-1] == "no"
    assert lines[("audio-s/s ≥ 1.3× the reference's", train)][-1] == "no"  # 1.20×
    assert lines[("training stream CPU per audio-s ≤ 1.15× the single pass's", train)][-1] == "no"
    first = lines[("first batch ≤ 0.5 s", train)]
    assert first[2] == "0.40 s (reference 0.40 s)" and first[-1] == "yes"
    assert lines[("peak RSS ≤ the reference's", train)][-1] == "yes"
    assert lines[("≥ 3 timed passes of ≥ 10 s each", "every loader")][-1] == "yes"


def test_ab_alternates_the_arms_and_pairs_their_ratios(tmp_path: Path, espeak_root: Path) -> None:
    out = tmp_path / "ab.json"
    stdout = run_script(
        "ab.py", espeak_root, "--rounds", "2", "--min-pass-s", "0.01",
        "--arm", "base", "{}", "--arm", "small", '{"decode_batch": 16, "num_threads": 1}',
        "--json", str(out),
    )  # fmt: skip
    assert "| arm | audio-s/s min / med / max |" in stdout
    spread = r"[\d.,]+ / [\d.,]+ / [\d.,]+"
    assert re.search(rf"\| base \| {spread} \| {spread} \| — \| — \|", stdout), stdout
    # the later arm's ratios to the first, paired round by round
    assert re.search(rf"\| small \| {spread} \| {spread} \| {spread} \| {spread} \|", stdout)
    doc = json.loads(out.read_text())
    assert doc["arms"] == {"base": {}, "small": {"decode_batch": 16, "num_threads": 1}}
    runs = doc["results"]["length/waveform/single"]
    # A B, then B A: neither arm always goes first
    assert [r["order"] for r in runs["base"]] == [0, 3]
    assert [r["order"] for r in runs["small"]] == [1, 2]
    for r in runs["base"] + runs["small"]:
        assert r["audio_s"] > 0 and r["wall_s"] > 0 and r["cpu_s"] > 0
    assert runs["base"][0]["audio_s"] == pytest.approx(runs["small"][0]["audio_s"])
    # an arm's num_threads reaches its loader (the child would take the subject's else)
    assert [r["threads"] for r in runs["base"] + runs["small"]] == [2, 2, 1, 1]
