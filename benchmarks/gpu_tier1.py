"""GPU check, tier 1: everything that needs CUDA but not DALI, in one short run.

    python benchmarks/gpu_tier1.py [--out DIR]      (DIR default: $OUT, else gpu-out)

Rows: the device; every kernel against its NumPy reference on random inputs with poisoned
outputs; zero copy (the torch tensor's pointer is the kernel's output); ``GpuBatchMaker`` fed
stand-ins for DALI's GPU outputs against the CPU ``BatchMaker`` on the same arrays, cell by cell
(waveform, layer norm, fbank from power spectra through ``log_mel`` on the CPU side: see
``gpu_kernel_checks.makers_and_outputs``; SpecAugment, float32 / bfloat16 / float16,
padding to a multiple, a dropped example); the event / ``record_stream`` hand-over to a consumer
on another stream; the device under ``LOCAL_RANK`` and ``CUDA_VISIBLE_DEVICES``; kernel times
with CUDA events for a 960,000-sample batch; the collate kernel's bandwidth against a
device-to-device copy. Writes tier1.json and tier1.md under DIR after every row.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import gpu_kernel_checks as kc
import numpy as np
from gpu_rows import REPO, Rows, cuda_ms

sys.path.insert(0, str(REPO))

# A 960,000-sample batch (the LENGTH budget of the recipes): 16 utterances of 60,000 samples.
BATCH, SAMPLES = 16, 60_000


def check_environment(rows: Rows) -> None:
    import cupy
    import torch

    props = torch.cuda.get_device_properties(0)
    rows.extra["device"] = props.name
    rows.add(
        "device",
        None,
        f"{props.name}, sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB; "
        f"torch {torch.__version__} (CUDA {torch.version.cuda}); CuPy {cupy.__version__}",
    )


def check_makers(rows: Rows) -> None:
    """GpuBatchMaker against BatchMaker on the same stand-in outputs, every option."""
    cases = [
        (fbank, norm, dtype, multiple)
        for fbank, norm in ((False, False), (False, True), (True, True))
        for dtype in ("float32", "bfloat16", "float16")
        for multiple in (1, 8)
    ]
    worst: dict[str, float] = {}
    for fbank, norm, dtype, multiple in cases:
        for name, error in kc.compare_makers(fbank, norm, dtype, multiple).items():
            worst[name] = max(worst.get(name, 0.0), error)
    for name, limit in kc.MAKER_LIMITS.items():
        error = worst.get(name)
        rows.add(
            f"GpuBatchMaker = BatchMaker: {name}",
            error is not None and error <= limit,
            "not measured" if error is None else f"max {error:.3g} over {len(cases) * 2} batches",
            f"<= {limit:g}",
        )


def check_device_choice(rows: Rows) -> None:
    """The device index in fresh processes under torchrun-like environments."""
    probe = (
        "import torch; from dali_asr.pipeline.cuda_env import device_index; "
        "i = device_index(None); torch.zeros(1, device=f'cuda:{i}'); "
        "print(i, torch.cuda.device_count())"
    )
    cases = [
        ("LOCAL_RANK=3, CUDA_VISIBLE_DEVICES=0", {"LOCAL_RANK": "3", "CUDA_VISIBLE_DEVICES": "0"}),
        ("LOCAL_RANK=0", {"LOCAL_RANK": "0"}),
        ("no LOCAL_RANK", {}),
    ]
    results = []
    ok = True
    for name, env in cases:
        full = {k: v for k, v in os.environ.items() if k != "LOCAL_RANK"} | env
        full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full.get("PYTHONPATH")]))
        done = subprocess.run(
            [sys.executable, "-c", probe], env=full, capture_output=True, text=True, timeout=120
        )
        got = done.stdout.split()[:1] if done.returncode == 0 else ["error"]
        ok = ok and got == ["0"]
        results.append(f"{name}: {got[0]}" + ("" if done.returncode == 0 else done.stderr[-150:]))
    rows.add("device index (one visible GPU)", ok, "; ".join(results), "0 in every case")


def check_hand_over(rows: Rows) -> None:
    """A consumer on another stream reads the batch only after its kernels: the maker's stream
    is held back by a sleep kernel, so reading early would see unwritten memory."""
    import torch

    from dali_asr.pipeline.gpu_collate import hand_over

    gpu_maker, cpu_maker, examples, gpu_out, cpu_out = kc.makers_and_outputs(False, True, "float32")
    decoded = gpu_maker.decoded(gpu_out, range(len(examples)))
    keep = list(range(len(examples)))
    want = cpu_maker.make(examples, cpu_maker.decoded(cpu_out, range(len(examples))), keep)
    expected = float(want.source_seqs.double().sum())
    consumer = torch.cuda.Stream()
    with torch.cuda.stream(gpu_maker.stream):
        torch.cuda._sleep(200_000_000)  # ~0.1 s of one SM busy: the kernels queue behind it
    batch = gpu_maker.make(examples, decoded, keep)
    with torch.cuda.stream(consumer):
        hand_over(batch)
        total = batch.source_seqs.double().sum()
        lens = batch.source_seq_lens.clone()
    consumer.synchronize()
    got = float(total)
    ok = abs(got - expected) <= 1e-6 * max(1.0, abs(expected)) and batch.ready is None
    ok = ok and lens.cpu().tolist() == want.source_seq_lens.tolist()
    rows.add(
        "hand-over: consumer stream waits for the batch's event",
        ok,
        f"sum {got:.6g} (CPU maker {expected:.6g}), lengths equal: "
        f"{lens.cpu().tolist() == want.source_seq_lens.tolist()}",
        "equal",
    )


def check_kernel_times(rows: Rows) -> None:
    """Each kernel on a 960,000-sample batch, CUDA events, median of 50."""
    import torch

    times = kc.kernel_times(BATCH, SAMPLES)
    for name, ms in times.items():
        rows.add(f"kernel time: {name}", None, f"{ms * 1e3:.1f} µs")
    for fbank in (False, True):
        gpu_ms, wall_ms = kc.maker_times(fbank, BATCH, SAMPLES)
        name = "fbank (log-mel → standardise → bf16)" if fbank else "waveform (layer norm, bf16)"
        rows.add(
            f"GpuBatchMaker.make, {BATCH} × {SAMPLES:,} samples: {name}",
            gpu_ms < 1.0,
            f"{gpu_ms:.3f} ms GPU (CUDA events), {wall_ms:.3f} ms wall",
            "< 1 ms GPU (the kernels' share; tier 2 adds DALI's GPU part)",
        )
    torch.cuda.synchronize()


def check_bandwidth(rows: Rows) -> None:
    import cupy
    import torch

    from dali_asr.pipeline.gpu_kernels import GpuKernels, as_cupy

    rng = np.random.default_rng(2)
    samples = [
        rng.normal(0, 1, int(n)).astype(np.float32) for n in rng.integers(400_000, 480_000, 32)
    ]
    arrays, ptrs, lengths = kc.device_samples(samples)
    width = int(lengths.max())
    out = torch.empty((32, width), dtype=torch.float32, device="cuda")
    mask = torch.empty((32, width), dtype=torch.bool, device="cuda")
    kernels = GpuKernels()
    # arguments on the device once; the timed calls are launches only
    call = kernels.collate_audio_call(
        ptrs, lengths, 1, width, None, None, "float32", as_cupy(out), as_cupy(mask)
    )
    flat = cupy.concatenate(arrays)
    copy = cupy.empty_like(flat)
    t_collate = cuda_ms(lambda: kernels.launch(call)) / 1e3
    t_copy = cuda_ms(lambda: cupy.copyto(copy, flat)) / 1e3
    moved = int(lengths.sum()) * 4 + out.numel() * 4 + mask.numel()
    bw, bw_copy = moved / t_collate / 1e9, 2 * flat.nbytes / t_copy / 1e9
    rows.add(
        "collate kernel bandwidth / device-to-device copy",
        bw >= 0.5 * bw_copy,
        f"{bw:,.0f} GB/s / {bw_copy:,.0f} GB/s = {bw / bw_copy:.2f} "
        f"({moved / 1e6:.0f} MB in {t_collate * 1e3:.3f} ms)",
        ">= 0.50",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-out"))
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_tier1: no CUDA device here; nothing to check (run it on a GPU machine)")
        return 2
    rows = Rows("tier1", args.out, deadline_s=150)
    start = time.perf_counter()
    rows.guarded("environment", lambda: check_environment(rows))
    # every check on one side stream, with CuPy's current stream over it, as the loader does
    with kc.stream_context():
        rows.guarded("kernels", lambda: kc.check_kernels(rows))
        rows.guarded("zero copy", lambda: kc.check_zero_copy(rows))
        rows.guarded("makers", lambda: check_makers(rows))
        rows.guarded("hand-over", lambda: check_hand_over(rows))
        rows.guarded("kernel times", lambda: check_kernel_times(rows))
        rows.guarded("bandwidth", lambda: check_bandwidth(rows))
    rows.guarded("device choice", lambda: check_device_choice(rows))
    rows.add("tier 1 wall time", None, f"{time.perf_counter() - start:.1f} s")
    return rows.finish()


if __name__ == "__main__":
    sys.exit(main())
