"""The kernels and the GPU batch maker against their NumPy twins, without DALI: the pieces of
tier 1 (``gpu_tier1.py``) that ``tests/pipeline/test_gpu.py`` runs too.

Inputs are random (never zeros) and outputs poisoned first, so an unwritten cell shows. DALI's
GPU outputs are stood in for by CuPy arrays behind the two calls the maker makes on a DALI
sample, ``shape()`` and ``data_ptr()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

# the largest error each kernel may show against its reference: float32 cells within 1e-5,
# 16-bit cells within 1 unit in the last place, integers and masks exactly
KERNEL_LIMITS = {
    "segment_stats (relative)": 1e-9,
    "collate_audio float32": 1e-5,
    "collate_audio float16 (ulp)": 1,
    "collate_audio bfloat16 (ulp)": 1,
    "collate_audio mask (cells wrong)": 0,
    "collate_targets (cells wrong)": 0,
    "log_mel": 1e-5,
    "spec_augment float32 (cells wrong)": 0,
    "spec_augment bfloat16 (cells wrong)": 0,
}
# GPU maker against CPU maker: the fbank's mel sums run in another order (float32), which the
# standardisation scales up by the bins' 1/std. A 16-bit cell may then round the other way, and
# near zero, where 16-bit steps are tiny, land several steps off: a cell passes within 1 ulp or
# within the float32 limit
MAKER_LIMITS = {
    "waveform float32 (max |Δ|)": 1e-5,
    "fbank float32 (max |Δ|)": 1e-4,
    "16-bit cells more than 1 ulp apart (max |Δ|)": 1e-4,
    "masks, lengths, targets, keys (wrong)": 0,
    "decoded lengths and NaN/inf counts (wrong)": 0,
}


@contextlib.contextmanager
def stream_context() -> Iterator[object]:
    """A torch side stream, current for torch and (wrapped) for CuPy."""
    import torch

    from dali_asr.pipeline.gpu_collate import cupy_stream

    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream), cupy_stream(stream):
        yield stream
    stream.synchronize()


def device_samples(samples: list[np.ndarray]):
    import cupy

    arrays = [cupy.asarray(s) for s in samples]
    ptrs = np.array([a.data.ptr for a in arrays], dtype=np.uint64)
    lengths = np.array([len(s) for s in samples], dtype=np.int64)
    return arrays, ptrs, lengths


def _ragged(rng, count: int, channels: int, longest: int = 5000) -> list[np.ndarray]:
    shape = (lambda n: (n,)) if channels == 1 else (lambda n: (n, channels))
    return [
        rng.normal(1.0, 3.0, shape(int(n))).astype(np.float32)
        for n in rng.integers(1, longest, count)
    ]


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per cell, the distance in units in the last place between 16-bit float bit patterns
    (sign and magnitude mapped onto one ordered integer line, so -0 and +0 are 0 apart)."""

    def line(bits: np.ndarray) -> np.ndarray:
        u = bits.view(np.uint16).astype(np.int32)
        return np.where(u & 0x8000, -(u & 0x7FFF), u)

    return np.abs(line(a) - line(b))


def ulps(a: np.ndarray, b: np.ndarray) -> int:
    return int(ulp_distance(a, b).max()) if a.size else 0


# -- kernels against their references -------------------------------------------------------


def check_kernels(rows) -> None:
    from dali_asr.pipeline.gpu_kernels import GpuKernels

    kernels = GpuKernels()
    worst: dict[str, float] = {}

    def note(name: str, error: float) -> None:
        worst[name] = max(worst.get(name, 0.0), float(error))

    rng = np.random.default_rng(0)
    for channels in (1, 80):
        _check_stats(kernels, rng, channels, note)
        _check_collate(kernels, rng, channels, note)
    _check_targets(kernels, rng, note)
    _check_log_mel(kernels, rng, note)
    _check_spec_augment(kernels, note)
    for name, limit in KERNEL_LIMITS.items():
        error = worst.get(name)
        value = "not measured" if error is None else f"max error {error:.3g}"
        ok = error is not None and error <= limit
        rows.add(f"kernel {name} = NumPy reference", ok, value, f"<= {limit:g}")


def _check_stats(kernels, rng, channels: int, note) -> None:
    from dali_asr.pipeline.collate import segment_stats

    samples = _ragged(rng, 13, channels, 4000 if channels == 1 else 300)
    samples[3][5] = np.nan
    samples[4][0] = np.inf
    _alive, ptrs, lengths = device_samples(samples)  # device arrays the kernel reads
    ref = segment_stats(samples)
    got = kernels.segment_stats(ptrs, lengths, channels).get()
    note("segment_stats (relative)", np.max(np.abs(got - ref) / (np.abs(ref) + 1.0)))


def _check_collate(kernels, rng, channels: int, note) -> None:
    import torch

    from dali_asr.pipeline.collate import (
        LAYER_NORM,
        STANDARDIZE,
        TORCH_DTYPES,
        collate_audio,
        padded_width,
    )
    from dali_asr.pipeline.gpu_kernels import as_cupy

    samples = _ragged(rng, 13, channels, 4000 if channels == 1 else 300)
    _alive, ptrs, lengths = device_samples(samples)
    stats = kernels.segment_stats(ptrs, lengths, channels)
    width = padded_width(lengths.tolist(), 8)
    shape = (len(samples), width) + ((channels,) if channels > 1 else ())
    for dtype in ("float32", "float16", "bfloat16"):
        for norm in (None, LAYER_NORM, STANDARDIZE):
            want, want_mask = collate_audio(samples, dtype, 8, norm, stats.get())
            # poisoned outputs: the kernel must write every cell
            out = torch.full(shape, float("nan"), dtype=TORCH_DTYPES[dtype], device="cuda")
            mask = torch.ones((len(samples), width), dtype=torch.bool, device="cuda")
            mask[:, ::2] = False
            kernels.collate_audio(
                ptrs, lengths, channels, width, None if norm is None else stats, norm, dtype,
                as_cupy(out), as_cupy(mask),
            )  # fmt: skip
            if dtype == "float32":
                got = out.cpu().numpy()
                error = np.abs(got - want).max() if np.isfinite(got).all() else np.inf
                note("collate_audio float32", error)
            else:
                got = out.view(torch.int16).cpu().numpy()
                note(f"collate_audio {dtype} (ulp)", ulps(got, want.view(np.int16)))
            wrong = np.count_nonzero(mask.cpu().numpy() != want_mask)
            note("collate_audio mask (cells wrong)", wrong)


def _check_targets(kernels, rng, note) -> None:
    import torch

    from dali_asr.pipeline.collate import collate_targets
    from dali_asr.pipeline.gpu_kernels import as_cupy, flatten_tokens

    tokens = [rng.integers(0, 500, int(n)) for n in rng.integers(0, 40, 9)]
    out = torch.full((9, max(len(t) for t in tokens)), -7, dtype=torch.int64, device="cuda")
    kernels.collate_targets(*flatten_tokens(tokens), 1, as_cupy(out))
    wrong = np.count_nonzero(out.cpu().numpy() != collate_targets(tokens, 1))
    note("collate_targets (cells wrong)", wrong)


def _check_log_mel(kernels, rng, note) -> None:
    from dali_asr.pipeline.fbank import frame_offsets, log_mel

    power = [(rng.random((int(n), 257)) * 1e8).astype(np.float32) for n in (1, 7, 300, 2999)]
    power[1][2] = 0.0  # a silent frame: the floor
    _alive, ptrs, frames = device_samples(power)  # device arrays the kernel reads
    got = kernels.log_mel(ptrs, frame_offsets(frames.tolist())).get()
    note("log_mel", np.abs(got - log_mel(np.concatenate(power))).max())


def _check_spec_augment(kernels, note) -> None:
    import torch

    from dali_asr.config import SpecAugmentSettings
    from dali_asr.keys import ExampleKey
    from dali_asr.pipeline.augment import Augmenter
    from dali_asr.pipeline.collate import TORCH_DTYPES
    from dali_asr.pipeline.gpu_kernels import as_cupy

    aug = Augmenter(3, None, SpecAugmentSettings(p=1.0))
    freq, time_ = aug.masks([ExampleKey("f", 0, i) for i in range(6)], 0, [300] * 6)
    for dtype, bits in (("float32", torch.int32), ("bfloat16", torch.int16)):
        data = torch.randn((6, 300, 80), device="cuda").to(TORCH_DTYPES[dtype])
        want = data.cpu().view(bits).numpy().copy()
        Augmenter.apply(want, freq, time_)
        kernels.spec_augment(as_cupy(data), freq, time_)
        wrong = np.count_nonzero(data.cpu().view(bits).numpy() != want)
        note(f"spec_augment {dtype} (cells wrong)", wrong)


def check_zero_copy(rows) -> None:
    import torch

    from dali_asr.pipeline.gpu_kernels import as_cupy

    for dtype in (torch.float32, torch.bfloat16):
        t = torch.full((4, 1000), 3.0, dtype=dtype, device="cuda")
        view = as_cupy(t)
        view.fill(0)  # written through CuPy, read through torch: the same memory
        same = view.data.ptr == t.data_ptr() and int(torch.count_nonzero(t)) == 0
        rows.add(
            f"zero copy ({dtype}): kernel output pointer == torch tensor pointer",
            same,
            f"{view.data.ptr:#x} / {t.data_ptr():#x}",
            "equal, and a CuPy write seen by torch",
        )


# -- the GPU batch maker against the CPU one --------------------------------------------------


class StandInSample:
    """One sample of a DALI GPU batch: what ``GpuBatchMaker.decoded`` asks of it."""

    def __init__(self, array) -> None:
        self.array = array

    def shape(self) -> list[int]:
        return list(self.array.shape)

    def data_ptr(self) -> int:
        return self.array.data.ptr


def makers_and_outputs(
    fbank: bool, norm: bool, dtype: str, multiple: int = 1, nan_at: int | None = None,
    count: int = 16, longest: int = 60_000, seed: int = 0, exact: bool = False,
):  # fmt: skip
    """(GpuBatchMaker, BatchMaker, examples, stand-in GPU outputs, the same on the host):
    ``count`` utterances of random lengths under ``longest`` samples (all of ``longest`` with
    ``exact``).

    With fbank the stand-ins are power spectra, as the GPU graph outputs them; the CPU maker,
    which computes its fbank from the waveform, takes them through ``log_mel`` instead (the
    kernel's NumPy reference), so that both makers compare cell by cell on the same arrays.
    That the two devices' fbanks agree from the audio on is tier 2's check."""
    import cupy

    from dali_asr.config import SpecAugmentSettings
    from dali_asr.pipeline.augment import Augmenter
    from dali_asr.pipeline.collate import BatchMaker
    from dali_asr.pipeline.fbank import log_mel, num_fbank_frames
    from dali_asr.pipeline.gpu_collate import GpuBatchMaker
    from dali_asr.storage.discovery import DataFile
    from dali_asr.storage.examples import Example

    class SpectraMaker(BatchMaker):
        def features(self, audio: list[np.ndarray]) -> list[np.ndarray]:
            return [log_mel(p) for p in audio] if self.use_fbank else audio

    rng = np.random.default_rng(seed)
    samples = np.full(count, longest) if exact else rng.integers(1, longest, count)
    if fbank:
        frames = [num_fbank_frames(int(n)) for n in samples]
        host = [(rng.random((n, 257)) * 1e6).astype(np.float32) for n in frames]
    else:
        host = [rng.normal(0, 0.2, int(n)).astype(np.float32) for n in samples]
    sizes = [int(n) for n in samples]
    if nan_at is not None:
        host[nan_at].reshape(-1)[len(host[nan_at].reshape(-1)) // 2] = np.nan
    files = [DataFile("x.parquet", "x.parquet", "c", "train", "l")]
    examples = [
        Example(0, 0, i, size, f"t{i}", rng.integers(1, 100, int(rng.integers(0, 30))))
        for i, size in enumerate(sizes)
    ]
    augmenter = Augmenter(5, None, SpecAugmentSettings(p=1.0)) if fbank else None
    common = (files, 0, dtype, multiple)
    options = {"use_fbank": fbank, "normalize_audio": norm, "augmenter": augmenter}
    gpu_maker = GpuBatchMaker(*common, device_id=cupy.cuda.Device().id, **options)
    cpu_maker = SpectraMaker(*common, **options)
    lengths = [np.array([s], dtype=np.int64) for s in sizes]
    gpu_out = ([StandInSample(cupy.asarray(a)) for a in host], lengths)
    # the maker reads them on its own stream, as DALI's outputs are ordered on it
    cupy.cuda.get_current_stream().synchronize()
    return gpu_maker, cpu_maker, examples, gpu_out, (host, lengths)


def compare_makers(fbank: bool, norm: bool, dtype: str, multiple: int) -> dict[str, float]:
    """Worst differences over two batches: everything kept, and one example with a NaN dropped
    (as the feeder drops it)."""
    import torch

    worst: dict[str, float] = {}

    def note(name: str, error: float) -> None:
        worst[name] = max(worst.get(name, 0.0), float(error))

    for nan_at in (None, 3):
        gpu_maker, cpu_maker, examples, gpu_out, cpu_out = makers_and_outputs(
            fbank, norm, dtype, multiple, nan_at
        )
        rows = range(len(examples))
        g_dec, c_dec = gpu_maker.decoded(gpu_out, rows), cpu_maker.decoded(cpu_out, rows)
        same = np.array_equal(g_dec.lengths, c_dec.lengths)
        same = same and np.array_equal(g_dec.nonfinite > 0, c_dec.nonfinite > 0)
        note("decoded lengths and NaN/inf counts (wrong)", 0 if same else 1)
        keep = [i for i in rows if c_dec.nonfinite[i] == 0]
        kept = [examples[i] for i in keep]
        got = gpu_maker.make(kept, g_dec, keep, plan_index=7)
        want = cpu_maker.make(kept, c_dec, keep, plan_index=7)
        torch.cuda.synchronize()
        if got.source_seqs.shape != want.source_seqs.shape:
            note("masks, lengths, targets, keys (wrong)", 1)
            continue
        if dtype == "float32":
            error = (got.source_seqs.cpu() - want.source_seqs).abs().max()
            note(f"{'fbank' if fbank else 'waveform'} float32 (max |Δ|)", float(error))
        else:
            g, w = got.source_seqs.cpu(), want.source_seqs
            apart = ulp_distance(g.view(torch.int16).numpy(), w.view(torch.int16).numpy()) > 1
            delta = (g.float() - w.float()).abs().numpy()[apart]
            note("16-bit cells more than 1 ulp apart (max |Δ|)", delta.max() if delta.size else 0)
        wrong = sum(
            int((getattr(got, f).cpu() != getattr(want, f)).sum())
            for f in (
                "source_padding_mask", "source_seq_lens", "target_seqs", "target_seq_lens"
            )
        ) + (got.keys != want.keys) + (got.host_lengths != want.host_lengths)  # fmt: skip
        note("masks, lengths, targets, keys (wrong)", wrong)
    return worst


def kernel_times(count: int, samples: int) -> dict[str, float]:
    """Milliseconds (CUDA events, median of 50) of each kernel on one batch of ``count`` ×
    ``samples`` samples, on the current stream."""
    import cupy
    import torch
    from gpu_rows import cuda_ms

    from dali_asr.pipeline.collate import LAYER_NORM, STANDARDIZE
    from dali_asr.pipeline.fbank import NUM_MEL_BINS, frame_offsets, num_fbank_frames
    from dali_asr.pipeline.gpu_kernels import GpuKernels, as_cupy, flatten_tokens

    kernels = GpuKernels()
    rng = np.random.default_rng(3)
    audio = [rng.normal(0, 0.2, samples).astype(np.float32) for _ in range(count)]
    _a, ptrs, lengths = device_samples(audio)
    frames = num_fbank_frames(samples)
    power = [(rng.random((frames, 257)) * 1e6).astype(np.float32) for _ in range(count)]
    _p, power_ptrs, frame_counts = device_samples(power)
    offsets = frame_offsets(frame_counts.tolist())
    mel = kernels.log_mel(power_ptrs, offsets)
    mel_ptrs = (mel.data.ptr + offsets[:-1] * NUM_MEL_BINS * 4).astype(np.uint64)
    stats1 = kernels.segment_stats(ptrs, lengths, 1)
    stats80 = kernels.segment_stats(mel_ptrs, frame_counts, NUM_MEL_BINS)
    wave = torch.empty((count, samples), dtype=torch.bfloat16, device="cuda")
    feats = torch.empty((count, frames, NUM_MEL_BINS), dtype=torch.bfloat16, device="cuda")
    mask_wave = torch.empty((count, samples), dtype=torch.bool, device="cuda")
    mask_fbank = torch.empty((count, frames), dtype=torch.bool, device="cuda")
    packed = flatten_tokens([rng.integers(1, 100, 200) for _ in range(count)])
    targets = torch.empty((count, 200), dtype=torch.int64, device="cuda")
    freq = np.tile(np.array([[[3, 20], [40, 10]]], np.int32), (count, 1, 1))
    time_ = np.tile(np.array([[[10, 50], [200, 30]]], np.int32), (count, 1, 1))
    m1, m80 = as_cupy(mask_wave), as_cupy(mask_fbank)
    jobs = {
        "segment_stats, waveform": lambda: kernels.segment_stats(ptrs, lengths, 1),
        "collate_audio, waveform, layer norm, bf16": lambda: kernels.collate_audio(
            ptrs, lengths, 1, samples, stats1, LAYER_NORM, "bfloat16", as_cupy(wave), m1
        ),
        "log_mel": lambda: kernels.log_mel(power_ptrs, offsets),
        "segment_stats, fbank (80 bins)": lambda: kernels.segment_stats(
            mel_ptrs, frame_counts, NUM_MEL_BINS
        ),
        "collate_audio, fbank, standardise, bf16": lambda: kernels.collate_audio(
            mel_ptrs,
            frame_counts,
            NUM_MEL_BINS,
            frames,
            stats80,
            STANDARDIZE,
            "bfloat16",
            as_cupy(feats),
            m80,
        ),
        "spec_augment, bf16": lambda: kernels.spec_augment(as_cupy(feats), freq, time_),
        "collate_targets": lambda: kernels.collate_targets(*packed, 0, as_cupy(targets)),
    }
    out = {f"{name} ({count} × {samples:,})": cuda_ms(job) for name, job in jobs.items()}
    cupy.cuda.get_current_stream().synchronize()
    return out


def maker_times(fbank: bool, count: int, samples: int, reps: int = 30) -> tuple[float, float]:
    """(GPU ms by CUDA events on the maker's stream, wall ms) of ``decoded`` + ``make`` for one
    batch of stand-in outputs, bfloat16 output, normalised; medians."""
    from gpu_rows import stream_ms

    gpu_maker, _, examples, gpu_out, _ = makers_and_outputs(
        fbank, True, "bfloat16", count=count, longest=samples, seed=4, exact=True
    )
    keep = list(range(count))

    def one() -> None:
        gpu_maker.make(examples, gpu_maker.decoded(gpu_out, range(count)), keep)

    return stream_ms(one, gpu_maker.stream, reps)
