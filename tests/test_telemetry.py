"""Telemetry: per-batch numbers and running totals on hand-built batches, then through a real
loader (shares against the mixture's targets, ``telemetry_log_every``, waits and stalls)."""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import SHARED

from dali_asr.batch import Seq2SeqBatch
from dali_asr.config import config_from_dict
from dali_asr.loader import AsrLoader
from dali_asr.telemetry import KINDS, Telemetry

BUCKET_VECTORS = SHARED / "reference" / "bucket-vectors.json"


def make_batch(
    src_lens: list[int],
    tgt_lens: list[int],
    languages: list[str],
    corpora: list[str],
    src_width: int | None = None,
    tgt_width: int | None = None,
    fbank: bool = False,
) -> Seq2SeqBatch:
    """A padded batch with the given lengths; audio_size equals the source lengths."""
    size = len(src_lens)
    src_width = src_width if src_width is not None else max(src_lens)
    tgt_width = tgt_width if tgt_width is not None else max(tgt_lens)
    shape = (size, src_width, 80) if fbank else (size, src_width)
    lens = torch.tensor(src_lens, dtype=torch.int64)
    return Seq2SeqBatch(
        source_seqs=torch.zeros(shape),
        source_seq_lens=lens,
        source_padding_mask=torch.arange(src_width)[None, :] >= lens[:, None],
        target_seqs=torch.zeros(size, tgt_width, dtype=torch.int64),
        target_seq_lens=torch.tensor(tgt_lens, dtype=torch.int64),
        language=languages,
        corpus=corpora,
        audio_size=list(src_lens),
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


BATCHES = [
    # (source lengths, target lengths, languages, corpora)
    ([16_000, 8_000], [10, 5], ["eng", "fra"], ["a", "a"]),
    ([32_000, 32_000, 16_000], [20, 10, 8], ["eng", "eng", "rus"], ["a", "b", "b"]),
    ([48_000], [30], ["fra"], ["b"]),
]
WAITS = [2.0, 0.1, 0.3]
STEP_S = 1.0  # time the training step takes after each batch


def run(telemetry: Telemetry, clock: FakeClock) -> list[dict]:
    out = []
    for (src, tgt, langs, corpora), wait in zip(BATCHES, WAITS, strict=True):
        clock.now += wait
        out.append(telemetry.record(make_batch(src, tgt, langs, corpora), wait))
        clock.now += STEP_S
    return out


def test_per_batch_numbers() -> None:
    per_batch = run(Telemetry(clock=FakeClock()), FakeClock())
    first = per_batch[0]
    assert first["step"] == 1
    assert first["batch_size"] == 2
    assert first["source_width"] == 16_000
    assert first["target_width"] == 10
    assert first["audio_padding_efficiency"] == pytest.approx(24_000 / 32_000)
    assert first["token_padding_efficiency"] == pytest.approx(15 / 20)
    assert first["audio_seconds"] == pytest.approx(1.5)
    assert first["wait_s"] == 2.0
    assert first["languages"] == {"eng": 1, "fra": 1}
    assert per_batch[1]["audio_padding_efficiency"] == pytest.approx(80_000 / 96_000)
    assert per_batch[2]["audio_padding_efficiency"] == 1.0


def test_totals_equal_sums_over_batches() -> None:
    clock = FakeClock()
    telemetry = Telemetry(clock=clock)
    per_batch = run(telemetry, clock)
    totals = telemetry.as_dict()
    assert totals["batches"] == 3
    assert totals["examples"] == sum(b["batch_size"] for b in per_batch) == 6
    assert totals["audio_hours"] == pytest.approx(sum(b["audio_seconds"] for b in per_batch) / 3600)
    real = sum(b["source_elements"] for b in per_batch)
    padded = sum(b["batch_size"] * b["source_width"] for b in per_batch)
    assert totals["audio_padding_efficiency"] == pytest.approx(real / padded)
    real_t = sum(b["target_elements"] for b in per_batch)
    padded_t = sum(b["batch_size"] * b["target_width"] for b in per_batch)
    assert totals["token_padding_efficiency"] == pytest.approx(real_t / padded_t)
    assert totals["max_batch_size"] == 3
    assert totals["max_source_width"] == 48_000
    assert totals["max_target_width"] == 30
    assert totals["mean_batch_size"] == pytest.approx(2.0)


def test_waits_and_stall_fraction() -> None:
    clock = FakeClock()
    telemetry = Telemetry(clock=clock)
    run(telemetry, clock)
    totals = telemetry.as_dict()
    assert totals["stall_s"] == pytest.approx(sum(WAITS))
    assert totals["wait_mean_s"] == pytest.approx(sum(WAITS) / 3)
    assert totals["wait_max_s"] == 2.0
    assert totals["wait_p50_s"] == pytest.approx(0.3)
    assert totals["first_wait_s"] == 2.0
    # Wall time: from the first next() to the last batch (the last step is not counted).
    wall = sum(WAITS) + 2 * STEP_S
    assert totals["wall_s"] == pytest.approx(wall)
    assert totals["stall_fraction"] == pytest.approx(sum(WAITS) / wall)
    assert totals["steady_stall_fraction"] == pytest.approx(0.4 / (wall - 2.0))


def test_wait_percentiles_cover_a_window() -> None:
    telemetry = Telemetry(wait_window=2)
    batch = make_batch([100], [1], ["eng"], ["a"])
    for wait in (5.0, 1.0, 3.0):
        telemetry.record(batch, wait)
    totals = telemetry.as_dict()
    assert totals["wait_p50_s"] == pytest.approx(2.0)  # of the last two
    assert totals["wait_max_s"] == 5.0  # of all


def test_shares_against_partition_targets() -> None:
    clock = FakeClock()
    telemetry = Telemetry(clock=clock)
    telemetry.set_targets({"a/eng": 2.0, "b/eng": 1.0, "b/rus": 1.0, "b/fra": 0.0, "c/deu": 4.0})
    run(telemetry, clock)
    shares = telemetry.as_dict()["shares"]
    lang = shares["language"]
    # eng 3 of 6 examples, fra 2, rus 1; audio: eng 80k, fra 56k, rus 16k of 152k samples.
    assert lang["eng"]["examples"] == pytest.approx(0.5)
    assert lang["eng"]["audio"] == pytest.approx(80_000 / 152_000)
    assert lang["eng"]["target"] == pytest.approx(3 / 8)
    assert lang["eng"]["deviation"] == pytest.approx(0.5 - 3 / 8)
    assert lang["fra"]["target"] == 0.0
    assert lang["deu"] == {"examples": 0.0, "audio": 0.0, "target": 0.5, "deviation": -0.5}
    corpus = shares["corpus"]
    assert corpus["a"]["examples"] == pytest.approx(3 / 6)
    assert corpus["a"]["target"] == pytest.approx(2 / 8)
    assert corpus["b"]["target"] == pytest.approx(2 / 8)
    assert shares["partition"]["b/rus"]["examples"] == pytest.approx(1 / 6)
    worst = shares["largest_deviation"]
    assert (worst["kind"], worst["name"], worst["deviation"]) == ("language", "deu", -0.5)


def test_language_targets_and_no_targets() -> None:
    telemetry = Telemetry(targets={"eng": 1.0, "fra": 1.0})
    telemetry.record(make_batch([10, 10], [1, 1], ["eng", "eng"], ["a", "a"]), 0.0)
    shares = telemetry.shares()
    assert shares["language"]["eng"]["deviation"] == pytest.approx(0.5)
    assert shares["corpus"]["a"]["target"] is None  # language keys give no corpus targets
    untargeted = Telemetry()
    untargeted.record(make_batch([10], [1], ["eng"], ["a"]), 0.0)
    assert untargeted.shares()["largest_deviation"] is None
    with pytest.raises(ValueError, match="negative"):
        Telemetry(targets={"eng": -1.0})


def test_fbank_batch_uses_frames() -> None:
    batch = make_batch([98, 48], [3, 3], ["eng", "eng"], ["a", "a"], fbank=True)
    out = Telemetry().record(batch, 0.0)
    assert out["source_width"] == 98
    assert out["audio_padding_efficiency"] == pytest.approx(146 / 196)


def test_host_lengths_replace_the_tensors() -> None:
    batch = make_batch([100, 50], [4, 2], ["eng", "eng"], ["a", "a"])
    from_tensors = Telemetry().record(batch, 0.0)
    batch.source_seq_lens = batch.target_seq_lens = None  # type: ignore[assignment]
    from_host = Telemetry().record(batch, 0.0, source_lens=[100, 50], target_lens=[4, 2])
    assert from_host == from_tensors


def test_reset_keeps_targets() -> None:
    telemetry = Telemetry(targets={"a/eng": 1.0})
    telemetry.record(make_batch([10], [1], ["eng"], ["a"]), 1.0)
    telemetry.reset()
    totals = telemetry.as_dict()
    assert totals["batches"] == 0 and totals["stall_s"] == 0.0 and totals["wall_s"] == 0.0
    assert totals["audio_padding_efficiency"] == 1.0
    assert totals["shares"]["language"]["eng"]["target"] == 1.0


def test_logs_every_n_batches(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    telemetry = Telemetry(log_every=2, targets={"a/eng": 1.0, "b/fra": 1.0}, clock=clock)
    with caplog.at_level(logging.INFO, logger="dali_asr.telemetry"):
        run(telemetry, clock)
        run(telemetry, clock)
    lines = [r.getMessage() for r in caplog.records if r.name == "dali_asr.telemetry"]
    assert len(lines) == 3  # after batches 2, 4 and 6
    assert lines[0].startswith("step 2: 2.5 ex/batch")
    # Batches 1-2: audio 104k of 2 x 16k + 3 x 32k, tokens 53 of 2 x 10 + 3 x 20; waits 2.0, 0.1.
    assert f"padding eff audio {104 / 128:.3f} tokens {53 / 80:.3f}" in lines[0]
    assert "wait mean 1050.0 ms max 2000.0 ms" in lines[0]
    assert "worst share partition b/fra 0.000 vs 0.500" in lines[0]
    assert lines[2].startswith("step 6:")
    assert all(r.levelno == logging.INFO for r in caplog.records)


def test_no_logging_by_default(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="dali_asr.telemetry"):
        run(Telemetry(), FakeClock())
    assert not [r for r in caplog.records if r.name == "dali_asr.telemetry"]
    with pytest.raises(ValueError, match="log_every"):
        Telemetry(log_every=0)


def test_wrap_times_next() -> None:
    batches = [make_batch([10], [1], ["eng"], ["a"]) for _ in range(3)]
    telemetry = Telemetry()
    assert list(telemetry.wrap(batches)) == batches
    totals = telemetry.as_dict()
    assert totals["batches"] == 3
    assert 0.0 <= totals["stall_s"] < 1.0


# --- through a real loader: DALI decoding real parquet data ---------------------------------


def reference_weights(
    hours: dict[tuple[str, str], float], beta_corpus: float, beta_language: float
) -> dict[str, float]:
    """The README's temperature weights, written out here: ``w_c · w_{l|c}`` with
    ``w_c ∝ (H_c / ΣH)^β_corpus`` and ``w_{l|c} ∝ (h_{c,l} / H_c)^β_language``."""
    corpus_hours: dict[str, float] = defaultdict(float)
    for (corpus, _), h in hours.items():
        corpus_hours[corpus] += h
    total = sum(corpus_hours.values())
    raw_c = {c: (h / total) ** beta_corpus for c, h in corpus_hours.items()}
    w_c = {c: w / sum(raw_c.values()) for c, w in raw_c.items()}
    raw_l = {(c, lang): (h / corpus_hours[c]) ** beta_language for (c, lang), h in hours.items()}
    within = {c: sum(w for (c2, _), w in raw_l.items() if c2 == c) for c in corpus_hours}
    return {f"{c}/{lang}": w_c[c] * w / within[c] for (c, lang), w in raw_l.items()}


def test_reference_weights_oracle_equals_the_golden_example() -> None:
    golden = json.loads(BUCKET_VECTORS.read_text(encoding="utf-8"))["partition_weights_example"]
    hours = {(c, lang): float(h) for c, lang, h in golden["tsv_rows"]}
    weights = reference_weights(hours, golden["beta_corpus"], golden["beta_language"])
    assert weights == pytest.approx(golden["weights"], abs=1e-9)


def read_tsv(path: Path) -> dict[tuple[str, str], float]:
    with path.open(encoding="utf-8") as f:
        return {
            (r["corpus"], r["language"]): float(r["hours"])
            for r in csv.DictReader(f, dialect="excel-tab")
        }


SHARE_BATCHES, SHARE_BATCH_SIZE = 100, 8
BETA_CORPUS, BETA_LANGUAGE = 1.0, 0.3
"""Unequal betas (a swap shows) and targets far from uniform: espeak_fast's partitions get
0.046 each where a sampler ignoring the weights would give 1/12."""


def test_realised_shares_against_the_mixture_targets(
    espeak_root: Path, espeak_tokenizer: Path
) -> None:
    """A training stream over espeak-mini with its stats TSV: the telemetry's targets are the
    planner's weights (and the README's formula), its shares the examples the loop received.

    Tolerance: with the windows off and STATIC batches, the loop receives the sampler's first
    n = 800 picks (no filter drops one: asserted), so a name's count is Binomial(n, target);
    4 standard deviations, ``4 sqrt(t (1 - t) / n)``, is 0.030 at most. The picks are seeded,
    so the outcome is fixed; a sampler that ignored the weights would miss espeak_fast's
    partitions (0.046 against 1/12) by 5 standard deviations and the corpus shares by 20.
    """
    tsv = espeak_root / "language_distribution_0.tsv"
    config = config_from_dict(
        {
            "asr_task_config": {
                "batching_strategy": "STATIC",
                "batch_size": SHARE_BATCH_SIZE,
                "example_shuffle_window": 1,
                "batch_shuffle_window": 1,
            },
            "mixture_parquet_storage_config": {
                "dataset_summary_path": str(tsv),
                "beta_corpus": BETA_CORPUS,
                "beta_language": BETA_LANGUAGE,
            },
        }
    )
    expected = reference_weights(read_tsv(tsv), BETA_CORPUS, BETA_LANGUAGE)
    examples: dict[str, Counter[str]] = {kind: Counter() for kind in KINDS}
    audio: dict[str, Counter[str]] = {kind: Counter() for kind in KINDS}
    with AsrLoader(espeak_root, "train", config, espeak_tokenizer) as loader:
        planner = loader.planner()
        planned = {p.name: w for p, w in zip(planner.partitions, planner.weights, strict=True)}
        for batch in islice(loader, SHARE_BATCHES):
            for lang, corpus, size in zip(
                batch.language, batch.corpus, batch.audio_size, strict=True
            ):
                for kind, name in zip(KINDS, (lang, corpus, f"{corpus}/{lang}"), strict=True):
                    examples[kind][name] += 1
                    audio[kind][name] += size
        totals = loader.telemetry.as_dict()
        assert not loader.report.counts, "a filter dropped examples: the shares are biased"
    n = SHARE_BATCHES * SHARE_BATCH_SIZE
    assert totals["examples"] == sum(examples["partition"].values()) == n
    assert planned == pytest.approx(expected, abs=1e-12)
    targets = {
        "partition": expected,
        "language": _summed(expected, lambda name: name.split("/")[1]),
        "corpus": _summed(expected, lambda name: name.split("/")[0]),
    }
    shares = totals["shares"]
    worst = None
    for kind in KINDS:
        assert set(shares[kind]) == set(targets[kind])
        total_audio = sum(audio[kind].values())
        for name, row in shares[kind].items():
            target = targets[kind][name]
            assert row["target"] == pytest.approx(target, abs=1e-12), (kind, name)
            assert row["examples"] == pytest.approx(examples[kind][name] / n, abs=1e-12)
            assert row["audio"] == pytest.approx(audio[kind][name] / total_audio, abs=1e-12)
            assert row["deviation"] == pytest.approx(row["examples"] - target, abs=1e-12)
            assert abs(row["deviation"]) <= 4 * math.sqrt(target * (1 - target) / n), (kind, name)
            if worst is None or abs(row["deviation"]) > abs(worst[2]):
                worst = (kind, name, row["deviation"])
    largest = shares["largest_deviation"]
    assert (largest["kind"], largest["name"]) == worst[:2]
    assert largest["deviation"] == pytest.approx(worst[2], abs=1e-12)
    assert largest == {"kind": worst[0], "name": worst[1], **shares[worst[0]][worst[1]]}


def _summed(weights: dict[str, float], key: Callable[[str], str]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for name, w in weights.items():
        out[key(name)] += w
    return dict(out)


def _one_pass(**task: object) -> dict:
    return {
        "asr_task_config": {
            "batching_strategy": "STATIC",
            "example_shuffle_window": 1,
            "batch_shuffle_window": 1,
            **task,
        },
        "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
    }


def test_telemetry_log_every_logs_through_the_loader(
    small_dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``dali_asr: {telemetry_log_every: 4}``: one line after batches 4 and 8 of 9, each about
    the 4 batches before it."""
    config = config_from_dict({**_one_pass(batch_size=2), "dali_asr": {"telemetry_log_every": 4}})
    with (
        caplog.at_level(logging.INFO, logger="dali_asr.telemetry"),
        AsrLoader(small_dataset, "dev", config) as loader,
    ):
        batches = list(loader)
    assert len(batches) == 9
    lines = [r.getMessage() for r in caplog.records if r.name == "dali_asr.telemetry"]
    assert [line.split(":")[0] for line in lines] == ["step 4", "step 8"]
    for line, first in zip(lines, (0, 4), strict=True):
        window = batches[first : first + 4]
        real = sum(int(b.source_seq_lens.sum()) for b in window)
        padded = sum(b.source_seqs.shape[0] * b.source_seqs.shape[1] for b in window)
        assert line.startswith(
            f"step {first + 4}: 2.0 ex/batch, padding eff audio {real / padded:.3f}"
        )
    caplog.clear()
    with (
        caplog.at_level(logging.INFO, logger="dali_asr.telemetry"),
        AsrLoader(small_dataset, "dev", config_from_dict(_one_pass(batch_size=2))) as quiet,
    ):
        assert len(list(quiet)) == 9
    assert not [r for r in caplog.records if r.name == "dali_asr.telemetry"]


def _timed_epoch(loader: AsrLoader, step_s: float) -> tuple[list[float], list[float], float]:
    """Iterate one epoch, sleeping ``step_s`` after each batch (the training step); return the
    telemetry's per-batch waits, the waits timed around ``next()`` here, and the loop's time
    from the first ``next()`` to the last batch."""
    recorded: list[float] = []
    record = loader.telemetry.record

    def spy(*args: Any, **kwargs: Any) -> dict:
        out = record(*args, **kwargs)
        recorded.append(out["wait_s"])
        return out

    loader.telemetry.record = spy  # type: ignore[method-assign]
    outside: list[float] = []
    iterator = iter(loader)
    start = time.perf_counter()
    while True:
        asked = time.perf_counter()
        try:
            next(iterator)
        except StopIteration:
            break
        last = time.perf_counter()
        outside.append(last - asked)
        time.sleep(step_s)
    return recorded, outside, last - start


@pytest.mark.parametrize("step_s", [0.0, 0.15], ids=["idle-loop", "sleeping-loop"])
def test_waits_and_stalls_through_the_loader(espeak_root: Path, step_s: float) -> None:
    """A loop that does nothing waits for every batch (stalls dominate its wall time); a loop
    whose step takes 0.15 s finds the next batch ready (2 espeak-mini files decode in a few
    ms). The totals are consistent with the waits, whichever way they went."""
    config = config_from_dict(_one_pass(batch_size=2, max_num_batches=12))
    with AsrLoader(espeak_root, "dev", config) as loader:
        waits, outside, wall = _timed_epoch(loader, step_s)
        t = loader.telemetry.as_dict()
    assert len(waits) == len(outside) == t["batches"] == 12
    for w, o in zip(waits, outside, strict=True):
        assert 0 <= w <= o  # the loader times part of what the loop timed around next()
    assert t["stall_s"] == pytest.approx(sum(waits), rel=1e-9)
    assert t["wait_mean_s"] == pytest.approx(sum(waits) / 12, rel=1e-9)
    assert t["wait_max_s"] == max(waits) and t["first_wait_s"] == waits[0]
    assert t["wait_p50_s"] == pytest.approx(float(np.median(waits)), rel=1e-9)
    assert t["wait_p50_s"] <= t["wait_p95_s"] <= t["wait_max_s"]
    assert t["stall_s"] <= t["wall_s"] <= wall
    assert t["wall_s"] >= 11 * step_s  # from the first next() to the last batch
    assert t["stall_fraction"] == pytest.approx(t["stall_s"] / t["wall_s"], rel=1e-9)
    steady = (t["stall_s"] - t["first_wait_s"]) / (t["wall_s"] - t["first_wait_s"])
    assert t["steady_stall_fraction"] == pytest.approx(steady, rel=1e-9)
    if step_s == 0:
        assert t["stall_fraction"] > 0.8, t
    else:
        assert t["steady_stall_fraction"] < 0.3, t
        assert t["stall_s"] - t["first_wait_s"] < 0.3 * 11 * step_s
