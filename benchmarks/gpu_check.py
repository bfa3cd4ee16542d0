"""Everything GPU-only, in one run of a few minutes, ending in a table (and JSON with --json).

On a machine with an NVIDIA GPU and DALI:

    python benchmarks/gpu_check.py [--data ../shared/data/espeak-mini] [--threads 16] [--json F]

Rows: cuFFT and the GPU graph build; every kernel against its NumPy reference on random inputs
with poisoned output buffers; zero copy (the torch tensor's pointer is the kernel's output);
GPU against CPU features through the loader (waveform 1e-5, fbank 1e-4); GPU memory over 500
variable-size batches; throughput of decode-only, waveform and fbank (audio-s/s); features +
collation time per 960,000-sample batch; the collate kernel's bandwidth against a
device-to-device copy; and the ``gpu``-marked pytest tests. Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ESPEAK = REPO.parent / "shared" / "data" / "espeak-mini"
sys.path.insert(0, str(REPO))

ROWS: list[dict] = []


def row(check: str, ok: bool | None, value: str, goal: str = "") -> None:
    ROWS.append({"check": check, "ok": ok, "value": value, "goal": goal})
    mark = {True: "PASS", False: "FAIL", None: "info"}[ok]
    print(f"[{mark}] {check}: {value}" + (f" (goal {goal})" if goal else ""), flush=True)


def guarded(name: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception as e:  # a check that crashes is a failed row, the rest still run
        row(name, False, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")


# -- kernels against their references -------------------------------------------------------


def _ragged(rng, count: int, channels: int, longest: int = 5000) -> list[np.ndarray]:
    shape = (lambda n: (n,)) if channels == 1 else (lambda n: (n, channels))
    return [
        rng.normal(1.0, 3.0, shape(int(n))).astype(np.float32)
        for n in rng.integers(1, longest, count)
    ]


def _device_samples(samples: list[np.ndarray]):
    import cupy

    arrays = [cupy.asarray(s) for s in samples]
    ptrs = np.array([a.data.ptr for a in arrays], dtype=np.uint64)
    lengths = np.array([len(s) for s in samples], dtype=np.int64)
    return arrays, ptrs, lengths


# the largest error each kernel may show against its reference: float32 cells within 1e-5,
# 16-bit cells within 1 unit in the last place, integers and masks exactly
LIMITS = {
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


def check_kernels() -> None:
    from dali_asr.gpu_collate import GpuKernels

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
    for name, limit in LIMITS.items():
        error = worst.get(name)
        value = "not measured" if error is None else f"max error {error:.3g}"
        ok = error is not None and error <= limit
        row(f"kernel {name} = NumPy reference", ok, value, f"<= {limit:g}")


def _check_stats(kernels, rng, channels: int, note) -> None:
    from dali_asr.collate import segment_stats

    samples = _ragged(rng, 13, channels, 4000 if channels == 1 else 300)
    samples[3][5] = np.nan
    samples[4][0] = np.inf
    _alive, ptrs, lengths = _device_samples(samples)  # device arrays the kernel reads
    ref = segment_stats(samples)
    got = kernels.segment_stats(ptrs, lengths, channels).get()
    note("segment_stats (relative)", np.max(np.abs(got - ref) / (np.abs(ref) + 1.0)))


def _check_collate(kernels, rng, channels: int, note) -> None:
    import torch

    from dali_asr.collate import LAYER_NORM, STANDARDIZE, TORCH_DTYPES, collate_audio
    from dali_asr.gpu_collate import as_cupy, padded_width

    samples = _ragged(rng, 13, channels, 4000 if channels == 1 else 300)
    _alive, ptrs, lengths = _device_samples(samples)
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
                got = out.view(torch.int16).cpu().numpy().astype(np.int32)
                note(f"collate_audio {dtype} (ulp)", np.abs(got - want.view(np.int16)).max())
            wrong = np.count_nonzero(mask.cpu().numpy() != want_mask)
            note("collate_audio mask (cells wrong)", wrong)


def _check_targets(kernels, rng, note) -> None:
    import torch

    from dali_asr.collate import collate_targets
    from dali_asr.gpu_collate import as_cupy

    tokens = [rng.integers(0, 500, int(n)) for n in rng.integers(0, 40, 9)]
    out = torch.full((9, max(len(t) for t in tokens)), -7, dtype=torch.int64, device="cuda")
    kernels.collate_targets(tokens, 1, as_cupy(out))
    wrong = np.count_nonzero(out.cpu().numpy() != collate_targets(tokens, 1))
    note("collate_targets (cells wrong)", wrong)


def _check_log_mel(kernels, rng, note) -> None:
    from dali_asr.fbank import frame_offsets, log_mel

    power = [(rng.random((int(n), 257)) * 1e8).astype(np.float32) for n in (1, 7, 300, 2999)]
    power[1][2] = 0.0  # a silent frame: the floor
    _alive, ptrs, frames = _device_samples(power)  # device arrays the kernel reads
    got = kernels.log_mel(ptrs, frame_offsets(frames.tolist())).get()
    note("log_mel", np.abs(got - log_mel(np.concatenate(power))).max())


def _check_spec_augment(kernels, note) -> None:
    import torch

    from dali_asr.augment import Augmenter, SpecAugmentSettings
    from dali_asr.collate import TORCH_DTYPES
    from dali_asr.gpu_collate import as_cupy
    from dali_asr.report import ExampleKey

    aug = Augmenter(3, None, SpecAugmentSettings(p=1.0))
    freq, time_ = aug.masks([ExampleKey("f", 0, i) for i in range(6)], 0, [300] * 6)
    for dtype, bits in (("float32", torch.int32), ("bfloat16", torch.int16)):
        data = torch.randn((6, 300, 80), device="cuda").to(TORCH_DTYPES[dtype])
        want = data.cpu().view(bits).numpy().copy()
        Augmenter.apply(want, freq, time_)
        kernels.spec_augment(as_cupy(data), freq, time_)
        wrong = np.count_nonzero(data.cpu().view(bits).numpy() != want)
        note(f"spec_augment {dtype} (cells wrong)", wrong)


def check_zero_copy() -> None:
    import torch

    from dali_asr.gpu_collate import as_cupy

    for dtype in (torch.float32, torch.bfloat16):
        t = torch.empty((4, 1000), dtype=dtype, device="cuda")
        view = as_cupy(t)
        view.fill(0)
        same = view.data.ptr == t.data_ptr()
        row(
            f"zero copy ({dtype}): kernel output pointer == torch tensor pointer",
            same,
            f"{view.data.ptr:#x} / {t.data_ptr():#x}",
        )


# -- through the loader ---------------------------------------------------------------------


def _config(
    fbank: bool, device: str, threads: int, normalize: bool = True, split_train: bool = False
):
    from dali_asr.config import config_from_dict

    sync = "UNTIL_FIRST" if split_train else "UNTIL_LAST"
    return config_from_dict(
        {
            "asr_task_config": {
                "min_audio_len": 16_000, "max_audio_len": 480_000, "max_num_elements": 960_000,
                "num_seqs_multiple_of": 8, "use_fbank": fbank, "normalize_audio": normalize,
                "example_shuffle_window": 1, "batch_shuffle_window": 1,
            },
            "mixture_parquet_storage_config": {"sync_mode": sync},
            "dali_asr": {"device": device, "num_threads": threads},
        }
    )  # fmt: skip


def check_gpu_equals_cpu(data: Path, threads: int) -> None:
    from dali_asr.loader import AsrLoader

    for fbank, tol in ((False, 1e-5), (True, 1e-4)):
        gpu = list(AsrLoader(data, "dev", _config(fbank, "gpu", threads)))
        cpu = list(AsrLoader(data, "dev", _config(fbank, "cpu", 2)))
        assert [b.keys for b in gpu] == [b.keys for b in cpu], "different batches"
        err = max(
            float((g.source_seqs.float().cpu() - c.source_seqs.float()).abs().max())
            for g, c in zip(gpu, cpu, strict=True)
        )
        masks = all(
            bool((g.source_padding_mask.cpu() == c.source_padding_mask).all())
            for g, c in zip(gpu, cpu, strict=True)
        )
        name = "fbank" if fbank else "waveform (layer norm)"
        row(
            f"GPU = CPU features, {name}",
            err <= tol and masks,
            f"max |Δ| {err:.2e} over {len(gpu)} batches",
            f"<= {tol:g}",
        )


def check_memory(data: Path, threads: int, batches: int = 500) -> None:
    import torch

    from dali_asr.loader import AsrLoader

    loader = AsrLoader(data, "train", _config(True, "gpu", threads, split_train=True))
    used = []
    for i, batch in enumerate(loader):
        torch.cuda.current_stream().synchronize()
        del batch
        if i in (99, batches - 1):
            free, total = torch.cuda.mem_get_info()
            used.append((total - free) / 2**20)
        if i == batches - 1:
            break
    loader.close()
    growth = used[1] / used[0] - 1
    row(
        f"GPU memory over {batches} variable-size batches",
        growth < 0.05,
        f"{used[0]:.0f} MiB at 100 → {used[1]:.0f} MiB at {batches} ({growth:+.1%})",
        "< +5 %",
    )


def _throughput(data: Path, fbank: bool | None, threads: int, batches: int) -> float:
    """Audio seconds per second of the training stream over ``batches`` batches after 20 of
    warm-up (one pipeline, no epoch boundaries); ``fbank`` None = decode only (the DALI
    graph's outputs, no features or collation)."""
    import torch

    from dali_asr.loader import AsrLoader

    loader = AsrLoader(data, "train", _config(bool(fbank), "gpu", threads, split_train=True))
    if fbank is None:
        maker = loader.batch_maker()
        loader.batch_maker = lambda: _DecodeOnly(maker)  # type: ignore[method-assign]
    samples, start = 0, time.perf_counter()
    for i, batch in enumerate(loader):
        if i == 20:
            torch.cuda.synchronize()
            samples, start = 0, time.perf_counter()
        samples += sum(batch.audio_size)
        if i == 20 + batches:
            break
    torch.cuda.synchronize()
    loader.close()
    return samples / 16_000 / (time.perf_counter() - start)


class _DecodeOnly:
    """A maker that takes DALI's outputs and builds nothing: the decode ceiling."""

    def __init__(self, maker) -> None:
        self.inner, self.augmenter = maker, None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def make(self, examples, decoded, keep, plan_index=0):
        import torch

        empty = torch.zeros((len(keep), 1))
        lens = torch.ones(len(keep), dtype=torch.int64)
        return self.inner.batch(examples, empty, lens, empty.bool(), lens[:, None], [1] * len(keep))


def check_throughput(data: Path, threads: int, batches: int) -> None:
    ceiling = _throughput(data, None, threads, batches)
    row(f"decode-only ceiling ({threads} DALI threads)", None, f"{ceiling:,.0f} audio-s/s")
    for fbank in (False, True):
        rate = _throughput(data, fbank, threads, batches)
        name = "fbank" if fbank else "waveform"
        row(
            f"{name} end to end / decode ceiling",
            rate >= 0.9 * ceiling,
            f"{rate:,.0f} audio-s/s = {rate / ceiling:.2f}×",
            ">= 0.90×",
        )


def check_batch_time() -> None:
    """GPU features + collation of one 960,000-sample batch (2 × 480,000 and 16 × 60,000
    samples of decoded audio already on the GPU): the DALI graph's GPU part (resample; Kaldi
    framing and FFT for fbank) and the kernels, wall time per batch, launches included."""
    import torch

    rng = np.random.default_rng(1)
    for fbank in (False, True):
        for count in (2, 16):
            n = 960_000 // count
            audio = [rng.normal(0, 0.1, n).astype(np.float32) for _ in range(count)]
            ms = _features_ms(audio, fbank, torch.cuda.current_device())
            name = "fbank" if fbank else "waveform"
            row(
                f"GPU {name} + collation, {count} × {n:,} samples",
                ms < 1.0,
                f"{ms:.3f} ms per batch (wall)",
                "< 1 ms",
            )


def _features_ms(audio: list[np.ndarray], fbank: bool, device_id: int, reps: int = 50) -> float:
    import cupy
    import torch
    from nvidia.dali import fn, pipeline_def, types

    from dali_asr.gpu_collate import GpuBatchMaker
    from dali_asr.graph import kaldi_power
    from dali_asr.storage.discovery import DataFile
    from dali_asr.storage.examples import Example

    on_gpu = [cupy.asarray(a) for a in audio]

    @pipeline_def(batch_size=len(audio), num_threads=4, device_id=device_id, exec_dynamic=True)
    def features():
        wav = fn.external_source(source=lambda: on_gpu, batch=True, device="gpu", dtype=types.FLOAT)
        rate = fn.external_source(
            source=lambda: [np.float32(16_000)] * len(audio), batch=True, dtype=types.FLOAT
        )
        wav = fn.audio_resample(wav, in_rate=rate, out_rate=16_000.0)
        return (kaldi_power(wav) if fbank else wav), wav.shape()[0:1]

    pipe = features()
    pipe.build()
    files = [DataFile("x.parquet", "x.parquet", "c", "train", "l")]
    maker = GpuBatchMaker(
        files, 0, "bfloat16", use_fbank=fbank, normalize_audio=True, device_id=device_id
    )
    examples = [Example(0, 0, i, len(a), "", np.arange(20)) for i, a in enumerate(audio)]
    keep = list(range(len(audio)))
    for i in range(reps + 5):
        if i == 5:
            torch.cuda.synchronize()
            start = time.perf_counter()
        outputs = maker.run(pipe)
        maker.make(examples, maker.decoded(outputs, range(len(audio))), keep)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps * 1e3


def check_bandwidth() -> None:
    import cupy
    import torch

    from dali_asr.gpu_collate import GpuKernels, as_cupy

    rng = np.random.default_rng(2)
    samples = [
        rng.normal(0, 1, int(n)).astype(np.float32) for n in rng.integers(400_000, 480_000, 32)
    ]
    keep, ptrs, lengths = _device_samples(samples)
    kernels = GpuKernels()
    width = int(lengths.max())
    out = torch.empty((32, width), dtype=torch.float32, device="cuda")
    mask = torch.empty((32, width), dtype=torch.bool, device="cuda")
    flat = cupy.concatenate(keep)
    copy = cupy.empty_like(flat)

    def timed(fn) -> float:
        fn()
        cupy.cuda.Device().synchronize()
        start = time.perf_counter()
        for _ in range(50):
            fn()
        cupy.cuda.Device().synchronize()
        return (time.perf_counter() - start) / 50

    t_collate = timed(
        lambda: kernels.collate_audio(
            ptrs, lengths, 1, width, None, None, "float32", as_cupy(out), as_cupy(mask)
        )
    )
    t_copy = timed(lambda: cupy.copyto(copy, flat))
    moved = int(lengths.sum()) * 4 + out.numel() * 4 + mask.numel()
    bw, bw_copy = moved / t_collate / 1e9, 2 * flat.nbytes / t_copy / 1e9
    row(
        "collate kernel bandwidth / device-to-device copy",
        bw >= 0.5 * bw_copy,
        f"{bw:,.0f} GB/s / {bw_copy:,.0f} GB/s = {bw / bw_copy:.2f}",
        ">= 0.50",
    )


def check_environment() -> None:
    import cupy
    import nvidia.dali as dali
    import torch
    from nvidia.dali import fn, pipeline_def

    name = torch.cuda.get_device_name()
    versions = f"torch {torch.__version__}; CuPy {cupy.__version__}; DALI {dali.__version__}"
    row("device", None, f"{name}; {versions}")

    @pipeline_def(batch_size=1, num_threads=1, device_id=torch.cuda.current_device())
    def spectrum():
        ones = fn.external_source(source=lambda: [np.ones(512, np.float32)], batch=True)
        return fn.spectrogram(ones.gpu(), nfft=512, window_length=512, window_fn=[1.0] * 512)

    pipe = spectrum()
    pipe.build()
    (out,) = pipe.run()
    dc = float(np.asarray(out.as_cpu()[0])[0, 0])
    ok = abs(dc - 512**2) < 1
    row("cuFFT found (DALI GPU spectrogram)", ok, f"DC power of 512 ones = {dc:g}")


def run_pytest_gpu() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", str(REPO / "tests")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-200:]
    row("pytest -m gpu", done.returncode == 0, tail)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ESPEAK)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--batches", type=int, default=600, help="timed batches per path")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing to check (run it on a GPU machine)")
        return 2
    guarded("environment", check_environment)
    guarded("kernels", check_kernels)
    guarded("zero copy", check_zero_copy)
    guarded("GPU = CPU", lambda: check_gpu_equals_cpu(args.data, args.threads))
    guarded("batch time", check_batch_time)
    guarded("bandwidth", check_bandwidth)
    guarded("memory", lambda: check_memory(args.data, args.threads))
    guarded("throughput", lambda: check_throughput(args.data, args.threads, args.batches))
    guarded("pytest -m gpu", run_pytest_gpu)
    print("\n| check | result | value | goal |\n| --- | --- | --- | --- |")
    for r in ROWS:
        mark = {True: "pass", False: "**FAIL**", None: "—"}[r["ok"]]
        print(f"| {r['check']} | {mark} | {r['value']} | {r['goal']} |")
    if args.json:
        args.json.write_text(json.dumps(ROWS, indent=1))
    return 1 if any(r["ok"] is False for r in ROWS) else 0


if __name__ == "__main__":
    sys.exit(main())
