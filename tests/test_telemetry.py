"""Telemetry: per-batch numbers and running totals on hand-built batches."""

from __future__ import annotations

import logging

import pytest
import torch

from dali_asr.batch import Seq2SeqBatch
from dali_asr.telemetry import Telemetry


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
