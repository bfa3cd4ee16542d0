"""The NumPy reference of every CUDA kernel (the CPU path), checked against direct
computations and torch; and every kernel source compiled with NVRTC, which needs no GPU."""

from __future__ import annotations

import ctypes
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dali_asr.config import SpecAugmentSettings
from dali_asr.keys import ExampleKey
from dali_asr.pipeline.augment import Augmenter
from dali_asr.pipeline.collate import (
    LAYER_NORM,
    STANDARDIZE,
    collate_audio,
    collate_targets,
    mean_and_scale,
    nonfinite_count,
    segment_stats,
    to_bfloat16_bits,
)
from dali_asr.pipeline.fbank import LOG_FLOOR, log_mel, mel_bands, mel_matrix
from dali_asr.pipeline.gpu_kernels import KERNEL_FUNCTIONS, kernel_source, pack_into, pack_layout


def _ragged(rng: np.random.Generator, count: int, channels: int | None = None) -> list:
    lengths = rng.integers(1, 300, count)
    tail = () if channels is None else (channels,)
    return [rng.normal(3.0, 2.0, (n, *tail)).astype(np.float32) for n in lengths]


def test_segment_stats_sums_and_counts_non_finite() -> None:
    rng = np.random.default_rng(0)
    samples = _ragged(rng, 5, 3)
    samples[2][4, 1] = np.nan
    samples[2][7, 1] = np.inf
    samples[3][[0, 1], 2] = np.inf, -np.inf  # their sum is NaN, quietly
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = segment_stats(samples)
    for b, s in enumerate(samples):
        finite = np.where(np.isfinite(s), s.astype(np.float64), 0.0)
        np.testing.assert_allclose(stats[b, :, 0], finite.sum(axis=0))
        np.testing.assert_allclose(stats[b, :, 1], (finite**2).sum(axis=0))
    assert stats[:, :, 2].sum() == 4 and stats[2, 1, 2] == 2 and stats[3, 2, 2] == 2


@pytest.mark.parametrize("channels", [None, 80])
def test_segment_stats_of_finite_values_are_the_masked_sums_to_the_bit(channels) -> None:
    """The sums skip the masking when they come out finite: the same bits as masking."""
    rng = np.random.default_rng(3)
    samples = _ragged(rng, 4, channels)
    samples[1][2] = np.float32(3e38)  # finite, but its square overflows: the masked way
    stats = segment_stats(samples)
    for b, s in enumerate(samples):
        x = s.astype(np.float64).reshape(len(s), -1)
        masked = np.where(np.isfinite(x), x, 0.0)
        assert np.array_equal(stats[b, :, 0], masked.sum(axis=0))
        assert np.array_equal(stats[b, :, 1], (masked * masked).sum(axis=0))
    assert not stats[:, :, 2].any()


def test_nonfinite_count() -> None:
    a = np.linspace(-1, 1, 1000, dtype=np.float32)
    assert nonfinite_count(a) == 0
    b = a.copy()
    b[[3, 500]] = np.inf, -np.inf  # their sum is NaN
    assert nonfinite_count(b) == 2
    b[7] = np.nan
    assert nonfinite_count(b) == 3
    huge = np.full(4, 3e38, np.float32)  # finite, but the sum overflows: counted one by one
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert nonfinite_count(huge) == 0
        assert nonfinite_count(b) == 3


@pytest.mark.parametrize("channels", [None, 80])
@pytest.mark.parametrize("norm", [None, LAYER_NORM, STANDARDIZE])
def test_collate_audio_pads_normalises_and_masks(channels, norm) -> None:
    rng = np.random.default_rng(1)
    samples = _ragged(rng, 6, channels)
    out, mask = collate_audio(samples, pad_to_multiple=64, norm=norm)
    width = max(len(s) for s in samples)
    assert out.shape[1] == -(-width // 64) * 64 and out.dtype == np.float32
    for b, s in enumerate(samples):
        n = len(s)
        expected = s
        if norm is not None:
            axis = 0 if channels else None
            std = s.std(axis=axis, ddof=norm.ddof)
            expected = (s - s.mean(axis=axis)) / np.sqrt(std**2 + norm.eps)
        np.testing.assert_allclose(out[b, :n], expected, atol=2e-5, rtol=1e-5)
        assert not out[b, n:].any()
        assert not mask[b, :n].any() and mask[b, n:].all()


def test_collate_audio_writes_every_cell_of_reused_memory() -> None:
    """The batch is allocated without zeroing: its padding and mask are written row by row,
    whatever the allocator's reused block held before (here NaN and True)."""
    rng = np.random.default_rng(3)
    samples = _ragged(rng, 6, None)
    width = max(len(s) for s in samples)
    for _ in range(3):
        dirty = np.full((len(samples), width), np.nan, np.float32)
        dirty_mask = np.ones((len(samples), width), dtype=bool)
        del dirty, dirty_mask  # their blocks go back to the allocator for the next ones
        out, mask = collate_audio(samples)
        for b, s in enumerate(samples):
            assert np.array_equal(out[b, : len(s)], s)
            assert not out[b, len(s) :].any() and not np.isnan(out[b]).any()
            assert not mask[b, : len(s)].any() and mask[b, len(s) :].all()


def test_constant_channel_normalises_to_zeros_not_nan() -> None:
    samples = [np.full((10, 2), 4.0, np.float32)]
    out, _ = collate_audio(samples, norm=STANDARDIZE)
    assert np.array_equal(out, np.zeros_like(out))
    mean, scale = mean_and_scale(segment_stats(samples), np.array([10]), STANDARDIZE)
    assert np.all(scale == 0) and np.allclose(mean, 4.0)


@pytest.mark.parametrize(
    ("dtype", "torch_dtype"), [("bfloat16", torch.bfloat16), ("float16", torch.float16)]
)
def test_cast_rounds_like_torch(dtype: str, torch_dtype: torch.dtype) -> None:
    rng = np.random.default_rng(2)
    samples = [rng.normal(0, 1e3, 257).astype(np.float32) * rng.random(257).astype(np.float32)]
    samples[0][:4] = [np.inf, -np.inf, 1e-40, 65520.0]
    out, _ = collate_audio(samples, dtype=dtype)
    expected = torch.from_numpy(samples[0]).to(torch_dtype).view(torch.int16).numpy()
    got = torch.from_numpy(out[0]).view(torch.int16).numpy()
    assert np.array_equal(got, expected)


def test_bfloat16_bits_of_nan_and_ties() -> None:
    values = np.array([np.nan, 1.0 + 2**-8, 1.0 + 3 * 2**-8, -0.0], np.float32)
    assert to_bfloat16_bits(values).tolist() == [0x7FC0, 0x3F80, 0x3F82, 0x8000]


def test_collate_targets_pads_with_pad_idx() -> None:
    out = collate_targets([np.array([5, 6, 7]), np.array([], np.int64), np.array([9])], 1)
    assert out.tolist() == [[5, 6, 7], [1, 1, 1], [9, 1, 1]] and out.dtype == np.int64


def test_log_mel_sums_kaldis_triangles_and_floors() -> None:
    """The reference of log_mel.cu against a direct sum over each triangle's bins (the
    kernel's loop), and the floor for silence."""
    rng = np.random.default_rng(3)
    power = rng.random((7, 257)).astype(np.float32) * 1e6
    power[3] = 0.0
    got = log_mel(power)
    weights, bands = mel_matrix(), mel_bands()
    for b in range(80):
        first, count = bands[b]
        assert np.all(weights[first : first + count, b] > 0)
        assert not weights[:first, b].any() and not weights[first + count :, b].any()
        direct = (power[:, first : first + count] * weights[first : first + count, b]).sum(1)
        np.testing.assert_allclose(got[:, b], np.log(np.maximum(direct, LOG_FLOOR)), rtol=1e-5)
    assert np.all(got[3] == np.float32(np.log(np.float32(LOG_FLOOR))))


def test_spec_augment_masks_are_seeded_per_example_and_in_range() -> None:
    spec = SpecAugmentSettings(p=1.0, max_time_width=30)
    aug = Augmenter(7, None, spec)
    keys = [ExampleKey("a.parquet", 0, r) for r in range(8)]
    frames = [50, 200, 3, 1000, 80, 80, 80, 80]
    freq, time = aug.masks(keys, 4, frames)
    again_freq, again_time = Augmenter(7, None, spec).masks(keys[::-1], 4, frames[::-1])
    assert np.array_equal(freq, again_freq[::-1]) and np.array_equal(time, again_time[::-1])
    other, _ = aug.masks(keys, 5, frames)
    assert not np.array_equal(freq, other)  # a new batch index draws anew
    assert (freq[..., 1] <= spec.max_freq_width).all() and (freq.sum(-1) <= 80).all()
    for b, n in enumerate(frames):
        assert (time[b, :, 1] <= min(30, int(0.2 * n))).all()
        assert (time[b].sum(-1) <= max(n, 0) + 0).all()
    features = np.ones((8, 1000, 80), np.float32)
    Augmenter.apply(features, freq, time)
    f0, fw = freq[3, 0]
    assert not features[3, :, f0 : f0 + fw].any()
    t0, tw = time[3, 0]
    assert not features[3, t0 : t0 + tw].any()


def test_speed_factors_come_from_the_list_and_repeat() -> None:
    aug = Augmenter(0, [0.9, 1.0, 1.1], SpecAugmentSettings())
    keys = [ExampleKey("x.parquet", g, r) for g in range(4) for r in range(50)]
    factors = aug.speed_factors(keys, 0)
    np.testing.assert_allclose(np.unique(factors), [0.9, 1.0, 1.1], rtol=1e-6)
    assert np.array_equal(factors, aug.speed_factors(keys, 0))


# -- the CUDA sources -------------------------------------------------------------------------


def _nvrtc() -> ctypes.CDLL:
    nvidia = pytest.importorskip("nvidia.cuda_nvrtc", reason="nvidia-cuda-nvrtc-cu12 not installed")
    found = sorted(Path(next(iter(nvidia.__path__))).glob("lib/libnvrtc.so*"))
    if not found:
        pytest.skip("libnvrtc not found")
    return ctypes.CDLL(str(found[0]))


@pytest.mark.parametrize("name", sorted(KERNEL_FUNCTIONS))
def test_kernel_compiles_with_nvrtc_and_documents_its_launch(name: str) -> None:
    """Each kernel compiles (as CuPy will compile it on the GPU) and exports its functions;
    its header states the launch contract and names its NumPy reference."""
    source = kernel_source(name)
    header = source.split("extern", 1)[0]
    assert "Launch contract" in header and "NumPy reference" in header
    for function in KERNEL_FUNCTIONS[name]:
        assert re.search(rf"\b{function}\b", source)
    lib = _nvrtc()
    prog = ctypes.c_void_p()
    assert (
        lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None)
        == 0
    )
    options = [b"-arch=compute_80", b"-std=c++17"]
    result = lib.nvrtcCompileProgram(prog, len(options), (ctypes.c_char_p * 2)(*options))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    assert result == 0, log.value.decode()


def test_launch_arguments_pack_into_one_aligned_buffer() -> None:
    """The GPU maker sends a batch's small arrays in one copy: each lands 8-byte aligned and
    reads back unchanged (views of the mixed dtypes the kernels take)."""
    arrays = [
        np.array([2**63 + 5, 7], dtype=np.uint64),
        np.array([1, 2, 3], dtype=np.int64),
        np.arange(5, dtype=np.int32).reshape(1, 5),
        np.zeros((2, 0, 2), dtype=np.int32),
        np.array([[1, 2], [3, 4]], dtype=np.int64).T,  # not contiguous
    ]
    starts, size = pack_layout(arrays)
    assert all(s % 8 == 0 for s in starts) and size >= starts[-1] + arrays[-1].nbytes
    buffer = np.full(size, 0xAB, dtype=np.uint8)
    pack_into(buffer, arrays, starts)
    for a, s in zip(arrays, starts, strict=True):
        back = buffer[s : s + a.nbytes].view(a.dtype).reshape(a.shape)
        assert back.dtype == a.dtype and np.array_equal(back, a)
