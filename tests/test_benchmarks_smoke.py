"""Smoke test of benchmarks/run.py: its dali-asr and ceiling children on 5 batches of espeak-mini's
dev split (no reference: its virtualenv is not part of CI), and the RESULTS.md bookkeeping."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.append(str(BENCH))  # the benchmark modules are scripts, not a package

import bench_report  # noqa: E402
from bench_common import ALL_CONFIGS, BenchConfig, ChildSpec  # noqa: E402

POSITIVE = ("audio_per_s", "batches_per_s", "cpu_ms_per_audio_s", "first_batch_s", "peak_rss_mb")


def test_run_py_children_report_positive_figures(tmp_path: Path, espeak_root: Path) -> None:
    out = tmp_path / "bench.json"
    results_md = tmp_path / "RESULTS.md"
    cmd = [
        sys.executable, str(BENCH / "run.py"), "--data", str(espeak_root), "--split", "dev",
        "--configs", "length/waveform/single", "--subjects", "dali-asr", "ceiling",
        "--passes", "1", "--warmup", "0", "--epochs", "1", "--max-batches", "5", "--no-calibrate",
        "--timeout", "120", "--json", str(out), "--markdown-out", str(results_md),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| length/waveform/single | dali-asr (2t) | 5 |" in done.stdout

    doc = json.loads(out.read_text())
    summary = {row["subject"]: row for row in doc["summary"]}
    assert set(summary) == {"dali-asr", "ceiling"}
    for subject, row in summary.items():
        assert row["passes"] == 1 and not row["errors"], (subject, row["errors"])
        assert row["batches"] == 5 and row["examples"] > 0 and row["audio_s"] > 0
        for metric in POSITIVE:
            assert row[metric]["median"] > 0, (subject, metric)
        assert 0 < row["padding_efficiency"]["median"] <= 1
    # both decode the same planned batches
    assert summary["dali-asr"]["audio_s"] == pytest.approx(summary["ceiling"]["audio_s"])
    for run in doc["runs"]:
        result = run["result"]
        for key in ("wall_s", "cpu_s", "construct_s", "first_batch_s", "peak_rss_mb"):
            assert result[key] > 0, (run["subject"], key)
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


def test_results_entries_are_newest_first(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    bench_report.add_entry(path, "## old\n\nfirst")
    bench_report.add_entry(path, "## new\n\nsecond")
    text = path.read_text()
    assert text.startswith("# Benchmark results")
    assert text.index("## new") < text.index("## old")
