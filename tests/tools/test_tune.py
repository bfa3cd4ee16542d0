"""max_num_elements: the auto rule, the stand-in model, the search and ``dali-asr tune-batch``."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dali_asr.batching import length_bucket_sizes
from dali_asr.pipeline.cuda_env import auto_max_num_elements
from dali_asr.tools import tune
from dali_asr.tools.cli import main
from dali_asr.tools.standin_model import StandInEncoder
from dali_asr.tools.tune import (
    forward_backward,
    search_max_num_elements,
    trial_input,
    trial_shapes,
    tune_max_num_elements,
)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU rule")
@pytest.mark.parametrize(
    ("max_audio_len", "expected"),
    [(480_000, 2_880_000), (800_000, 3_200_000), (16_000, 3_200_000), (4_000_000, 4_000_000)],
)
def test_auto_rule_on_cpu(max_audio_len: int, expected: int) -> None:
    value, why = auto_max_num_elements(max_audio_len)
    assert value == expected
    assert "no CUDA device" in why and "3200000" in why


def test_auto_rule_scales_with_device_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    # An H100 80GB reports 85,031,714,816 bytes: 85.0 GB x 40,000 = 3,401,268 samples.
    props = SimpleNamespace(total_memory=85_031_714_816, name="Fake H100")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
    value, why = auto_max_num_elements(800_000)
    assert value == 3_200_000
    assert "3401268" in why and "Fake H100" in why
    assert auto_max_num_elements(480_000)[0] == 3_360_000
    assert auto_max_num_elements(480_000, samples_per_gb=10_000)[0] == 480_000  # at least L
    assert auto_max_num_elements(480_000, torch.device("cpu"))[0] == 2_880_000
    with pytest.raises(ValueError):
        auto_max_num_elements(0)


@pytest.mark.parametrize("feature", ["waveform", "fbank"])
def test_stand_in_forward_backward_on_cpu(feature: str) -> None:
    torch.manual_seed(0)
    model = StandInEncoder(feature, d_model=32, num_layers=2, num_heads=2, vocab_size=16)
    source, mask = trial_input(2, 8_000, feature, torch.float32, "cpu")
    mask[1, mask.shape[1] // 2 :] = True  # the second example is half padding
    loss = forward_backward(model, source, mask, torch.float32)
    assert torch.isfinite(torch.tensor(loss))
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    out = model(source, mask)
    frames = 24 if feature == "waveform" else 23  # 0.5 s of 20 ms frames, less the edges
    assert out.shape == (2, frames, 16)
    lengths = model.output_lengths(torch.tensor([mask.shape[1], mask.shape[1] // 2]))
    assert lengths[0] == frames and 0 < lengths[1] < frames


def test_stand_in_under_bfloat16_autocast_on_cpu() -> None:
    model = StandInEncoder("waveform", d_model=32, num_layers=1, num_heads=2, vocab_size=16)
    source, mask = trial_input(1, 4_000, "waveform", torch.bfloat16, "cpu")
    assert source.dtype == torch.bfloat16
    forward_backward(model, source, mask, torch.bfloat16)
    assert all(p.grad is not None for p in model.parameters())


def test_stand_in_rejects_unknown_feature() -> None:
    with pytest.raises(ValueError, match="feature"):
        StandInEncoder("mfcc")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path")
def test_tune_on_cpu_reports_the_rule() -> None:
    result = tune_max_num_elements(max_audio_len=480_000, num_seqs_multiple_of=8)
    assert result.max_num_elements == auto_max_num_elements(480_000)[0] == 2_880_000
    assert result.measured is False
    assert result.trials == [] and result.largest_fitting is None
    assert result.device == "cpu"
    assert "not measured" in result.explanation
    assert result.buckets[-1] == (6, 480_000)
    assert result.yaml_line == "max_num_elements: 2880000"
    with pytest.raises(ValueError, match="margin"):
        tune_max_num_elements(max_audio_len=480_000, margin=1.0)


@pytest.mark.parametrize("threshold", [1, 2, 3, 13, 64, 1000])
def test_search_finds_the_largest_fitting_multiple(threshold: int) -> None:
    tried: list[int] = []

    def fits(k: int) -> bool:
        tried.append(k)
        return k <= threshold

    found = search_max_num_elements(fits, 1_000, upper=10**9, tolerance=0.0)
    assert found == threshold * 1_000
    assert len(tried) <= 2 * threshold.bit_length() + 2  # doubling, then bisection


def test_search_tolerance_caps_and_failure() -> None:
    found = search_max_num_elements(lambda k: k <= 1000, 10, upper=10**9, tolerance=0.02)
    assert found is not None and 980 * 10 <= found <= 1000 * 10
    assert search_max_num_elements(lambda k: True, 10, upper=75) == 70  # stops at the cap
    assert search_max_num_elements(lambda k: False, 10, upper=10**6) is None


def test_trial_shapes_pick_longest_fullest_widest() -> None:
    buckets = length_bucket_sizes(
        min_audio_len=1,
        max_audio_len=480_000,
        max_num_elements=12 * 480_000,
        num_seqs_multiple_of=8,
        max_bucket_size=None,
    )
    shapes = trial_shapes(buckets, 16_000)
    assert shapes[0] == (8, 480_000)  # 12 rounded down to a multiple of 8
    assert shapes[-1] == (360, 16_000)
    assert all(n >= 16_000 for _, n in shapes)
    fullest = max((b for b in buckets if b[1] >= 16_000), key=lambda b: b[0] * b[1])
    assert fullest in shapes and len(shapes) == 3


def test_model_from_path() -> None:
    model = tune.model_from_path("dali_asr.tools.standin_model:StandInEncoder")
    assert isinstance(model, StandInEncoder)
    with pytest.raises(ValueError, match="module:callable"):
        tune.model_from_path("dali_asr.tools.tune")
    with pytest.raises(ValueError, match=r"not a torch\.nn\.Module"):
        tune.model_from_path("dali_asr.tools.tune:auto_max_num_elements.__name__")


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(body, encoding="utf-8")
    return path


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path")
def test_cli_prints_the_yaml_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(
        tmp_path,
        "asr_task_config: {max_audio_len: 480000, num_seqs_multiple_of: 8, use_fbank: true}\n",
    )
    model = "dali_asr.tools.standin_model:StandInEncoder"
    args = ["tune-batch", "--config", str(config), "--model", model]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1] == "max_num_elements: 2880000"
    assert "measured          False" in out and "buckets" in out
    assert main(["tune-batch", "--max-audio-len", "800000", "--margin", "0.2"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("max_num_elements: 3200000")


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune-batch", "--model", "no_such_module_xyz:factory"]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["tune-batch", "--margin", "1.5"]) == 2


@pytest.mark.gpu
@needs_cuda
def test_gpu_search_with_the_stand_in() -> None:
    max_len = 160_000
    result = tune_max_num_elements(
        max_audio_len=max_len, num_seqs_multiple_of=8, dtype=torch.bfloat16, margin=0.1
    )
    assert result.measured and result.largest_fitting is not None
    assert result.max_num_elements % max_len == 0
    assert result.max_num_elements <= result.largest_fitting * 0.9 or (
        result.max_num_elements == max_len
    )
    assert any(not t.fits for t in result.trials), "the search never hit the memory limit"
    passed = [t.max_num_elements for t in result.trials if t.fits]
    assert max(passed) == result.largest_fitting
    assert all(len(t.peaks) >= 1 for t in result.trials)
    # The result's own largest bucket trains.
    model = StandInEncoder("waveform").cuda()
    size, length = result.buckets[-1]
    forward_backward(
        model, *trial_input(size, length, "waveform", torch.bfloat16, "cuda"), torch.bfloat16
    )


class _Budget(torch.nn.Module):
    """Raises CUDA's out-of-memory error above ``limit`` input elements (a deterministic OOM)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if source.numel() > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return source.float() * self.weight


def _cuda_on_the_cpu(monkeypatch: pytest.MonkeyPatch, peaks: list[int]) -> None:
    """Run the measured path on the CPU: 'the CUDA device' is the CPU, memory stats are fake."""
    monkeypatch.setattr(tune, "cuda_device", lambda device: torch.device("cpu"))
    props = SimpleNamespace(total_memory=80 * 10**9, name="Fake")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "Fake")
    for name in ("reset_peak_memory_stats", "synchronize", "empty_cache"):
        monkeypatch.setattr(torch.cuda, name, lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: peaks.pop(0))


def test_measured_search_with_a_simulated_device(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _cuda_on_the_cpu(monkeypatch, peaks=[2**30] * 1000)
    max_len, limit = 16_000, 37 * 16_000 + 5_000
    result = tune_max_num_elements(
        _Budget(limit), max_audio_len=max_len, num_seqs_multiple_of=1, margin=0.1, tolerance=0.0
    )
    assert result.measured and result.largest_fitting == 37 * max_len
    assert result.max_num_elements == 33 * max_len  # 37 x 0.9 = 33.3
    assert [t.max_num_elements // max_len for t in result.trials[:8]] == [
        1,
        2,
        4,
        8,
        16,
        32,
        64,
        48,
    ]
    failed = [t for t in result.trials if not t.fits]
    assert failed and all("out of memory at" in t.error for t in failed)
    text = result.render()
    assert "largest fitting   592000" in text and "1x16000: 1.00" in text
    # A model that fails for another reason on the first trial is a bug, not a size.
    with pytest.raises(RuntimeError, match="boom"):
        tune_max_num_elements(_Broken(), max_audio_len=max_len)


class _Broken(torch.nn.Module):
    def forward(self, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


@pytest.mark.gpu
@needs_cuda
def test_gpu_search_against_a_known_limit() -> None:
    max_len, limit = 16_000, 37 * 16_000 + 5_000
    result = tune_max_num_elements(
        _Budget(limit), max_audio_len=max_len, num_seqs_multiple_of=1, margin=0.0, tolerance=0.0
    )
    # With num_seqs_multiple_of 1 some bucket holds exactly N elements, so N fits iff N <= limit.
    assert result.largest_fitting == 37 * max_len
    assert result.max_num_elements == 37 * max_len
