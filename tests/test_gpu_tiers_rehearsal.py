"""The GPU tiers on a machine without CUDA, as they are rehearsed before a lent GPU is spent on
them: tier 1 refuses clearly; tier 2 runs the CPU graph in the GPU's place through the real
espeak-mini files, writes its table and JSON, and its equality rows pass (they compare the CPU
path with itself here, so a failure is the script's own bug)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.append(str(BENCH))

import gpu_rows  # noqa: E402

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU rehearsal")


def test_tier1_without_cuda_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "gpu_tier1.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "no CUDA device" in done.stdout


def test_tier2_rehearses_on_the_cpu_graph(tmp_path: Path, espeak_root: Path) -> None:
    cmd = [
        sys.executable, str(BENCH / "gpu_tier2.py"), "--device", "cpu", "--data",
        str(espeak_root), "--threads", "1", "--seconds", "0.5", "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    doc = json.loads((tmp_path / "tier2.json").read_text())
    rows = {r["check"]: r for r in doc["rows"]}
    equal = [r for name, r in rows.items() if name.startswith("CPU = CPU")]
    assert len(equal) == 4 and all(r["ok"] for r in equal), equal
    assert any(name.startswith("decode-only ceiling, 1 DALI threads") for name in rows)
    assert any("training stream / ceiling, 1 threads" in name for name in rows)
    assert not any(r["ok"] is False and "ceiling" not in r["check"] for r in doc["rows"]), rows
    table = (tmp_path / "tier2.md").read_text()
    assert table.startswith("`") and "| check | result | value | goal |" in table


def test_data_folder_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gpu_rows.DATA_ENV, "/somewhere/espeak")
    assert gpu_rows.default_data() == Path("/somewhere/espeak")
    monkeypatch.delenv(gpu_rows.DATA_ENV)
    assert gpu_rows.default_data() == gpu_rows.REPO.parent / "shared" / "data" / "espeak-mini"
    assert os.environ.get(gpu_rows.DATA_ENV) is None
