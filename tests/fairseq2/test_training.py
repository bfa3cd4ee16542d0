"""Omnilingual's CTC training path on fairseq2's own trainer (benchmarks/fairseq2_recipe.py: a
tiny randomly initialised wav2vec2 ASR model on the CPU), fed by dali-asr's dataset family and by
Omnilingual's, and a dali-asr run killed after a checkpoint and restarted.

Needs fairseq2 0.6 and omnilingual-asr 0.2.0 (``scripts/check_fairseq2.sh``); skipped without.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fairseq2")
pytest.importorskip("omnilingual_asr")

RECIPE = Path(__file__).resolve().parents[2] / "benchmarks" / "fairseq2_recipe.py"
STEPS, EVERY, KILL_AT = 30, 10, 13
"""30 steps of 2 batches, checkpoints every 10; the killed run dies when step 13 starts, so it
resumes from the checkpoint of step 10."""
IDENTITY = ("source_shape", "source_seq_lens", "target_seq_lens", "targets_sha1", "lang")


def run(reader: str, out: Path, espeak: Path, kill_at: int | None = None) -> int:
    cmd = [
        sys.executable, str(RECIPE), "--reader", reader, "--out", str(out),
        "--data", str(espeak / "version=0"),
        "--tokenizer", str(espeak / "tokenizer" / "char_spm.model"),
        "--summary", str(espeak / "language_distribution_0.tsv"),
        "--steps", str(STEPS), "--checkpoint-every", str(EVERY),
    ]  # fmt: skip
    if kill_at is not None:
        cmd += ["--kill-at-step", str(kill_at)]
    with (out.parent / f"{out.name}.log").open("w") as log:
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=1200).returncode


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "batches.jsonl").read_text().splitlines()]


def per_step_loss(rows: list[dict[str, Any]]) -> list[float]:
    """CTC loss per target token of each step (its batches together)."""
    steps: dict[int, list[float]] = {}
    for r in rows:
        steps.setdefault(r["step"], [0.0, 0.0])
        steps[r["step"]][0] += r["loss"]
        steps[r["step"]][1] += r["target_tokens"]
    return [loss / tokens for loss, tokens in (steps[s] for s in sorted(steps))]


@pytest.fixture(scope="module")
def runs(espeak_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("recipe")
    out = {name: base / name for name in ("dali", "reference", "killed")}
    for name in ("dali", "reference"):
        assert run(name, out[name], espeak_root) == 0, (base / f"{name}.log").read_text()[-3000:]
    return out


def test_ctc_loss_is_finite_and_falls_with_dali_asr_and_as_with_the_reference(
    runs: dict[str, Path], f2_report: dict
) -> None:
    ours, theirs = records(runs["dali"]), records(runs["reference"])
    assert len(ours) == len(theirs) == STEPS * 2
    assert all(math.isfinite(r["loss"]) for r in ours + theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert {k: a[k] for k in IDENTITY} == {k: b[k] for k in IDENTITY}, a["step"]
    curve, reference = per_step_loss(ours), per_step_loss(theirs)
    first, last = sum(curve[:5]) / 5, sum(curve[-5:]) / 5
    rel = max(
        abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(ours, theirs, strict=True)
    )
    f2_report["training"] = {
        "steps": STEPS,
        "batches": len(ours),
        "loss_per_token_dali_asr": [round(x, 4) for x in curve],
        "loss_per_token_reference": [round(x, 4) for x in reference],
        "first_5_steps_mean": first,
        "last_5_steps_mean": last,
        "max_relative_loss_difference": rel,
    }
    assert last < 0.6 * first, (first, last)
    assert rel < 1e-3


def test_a_run_killed_after_a_checkpoint_resumes_with_the_next_steps(
    runs: dict[str, Path], espeak_root: Path, f2_report: dict
) -> None:
    out = runs["killed"]
    assert run("dali", out, espeak_root, kill_at=KILL_AT) == -signal.SIGKILL
    killed = records(out)
    assert max(r["step"] for r in killed) == KILL_AT - 1
    assert run("dali", out, espeak_root) == 0  # fairseq2's trainer resumes from step 10
    resumed = [r for r in records(out) if r["pid"] != killed[0]["pid"]]
    whole = [r for r in records(runs["dali"]) if r["step"] > EVERY]
    assert [r["step"] for r in resumed] == [r["step"] for r in whole]
    assert resumed[0]["step"] == EVERY + 1
    for a, b in zip(resumed, whole, strict=True):
        assert {k: a[k] for k in (*IDENTITY, "source_sums")} == {
            k: b[k] for k in (*IDENTITY, "source_sums")
        }, a["step"]
    f2_report["resume"] = {
        "killed_at_step": KILL_AT,
        "resumed_from_checkpoint_step": EVERY,
        "batches_compared": len(whole),
        "max_loss_difference": max(
            abs(a["loss"] - b["loss"]) for a, b in zip(resumed, whole, strict=True)
        ),
    }
