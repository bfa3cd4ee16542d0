"""GPU check, tier 2: the whole loader on the GPU, with DALI, on real data.

    python benchmarks/gpu_tier2.py [--data DIR] [--threads 4 8 16] [--seconds 5] [--out DIR]
                                   [--device gpu|cpu] [--skip tune pytest ...]

DIR defaults: ``--data`` $DALI_ASR_ESPEAK, else ../shared/data/espeak-mini; ``--out`` $OUT, else
gpu-out. Rows: DALI and cuFFT (loaded by dali_asr.pipeline.cuda_env, no LD_LIBRARY_PATH); GPU = CPU
features through the graph and makers (dev files, fbank by the criterion of
tests/pipeline/test_features.py) and through the whole loader; GPU features + collation time of a
960,000-sample batch (CUDA events, and wall); the training stream's audio-s/s and CPU ms per
audio-s at each DALI thread count against the DALI decode-only ceiling, and the CPU path's
beside it; first batch; GPU memory over 500 variable-size batches (torch's and CuPy's pools
apart); ``tune-batch``'s measured search (capped); ``pytest tests/pipeline/test_gpu.py``. Writes
tier2.json and tier2.md under DIR after every row. ``--device cpu`` rehearses the script on a
machine without CUDA (the CPU graph in the GPU's place; GPU-only rows are left out).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import gpu_loader_checks as lc
import numpy as np
from gpu_rows import REPO, Rows, default_data, stream_ms

sys.path.insert(0, str(REPO))
_CUFFT_PROBE = """
import numpy as np, torch
from nvidia.dali import fn, pipeline_def
from dali_asr.pipeline.cuda_env import preload_cufft
loaded = preload_cufft()
@pipeline_def(batch_size=1, num_threads=1, device_id=0)
def spectrum():
    ones = fn.external_source(source=lambda: [np.ones(512, np.float32)], batch=True)
    return fn.spectrogram(ones.gpu(), nfft=512, window_length=512, window_fn=[1.0] * 512)
pipe = spectrum(); pipe.build(); (out,) = pipe.run()
print(float(np.asarray(out.as_cpu()[0])[0, 0]), loaded)
"""


def check_environment(rows: Rows, device: str) -> None:
    import nvidia.dali as dali
    import torch

    name = torch.cuda.get_device_name() if device == "gpu" else "CPU rehearsal"
    rows.extra["device"] = name
    rows.add("device", None, f"{name}; DALI {dali.__version__}; torch {torch.__version__}")
    if device != "gpu":
        return
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", _CUFFT_PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    words = done.stdout.split(maxsplit=1)
    ok = done.returncode == 0 and abs(float(words[0]) - 512**2) < 1
    value = f"DC power of 512 ones = {words[0]}; preloaded {words[1].strip()}" if ok else (
        done.stderr.strip()[-300:]
    )  # fmt: skip
    rows.add("cuFFT for DALI's GPU spectrogram, no LD_LIBRARY_PATH", ok, value, "512² = 262144")


def check_equal(rows: Rows, data: Path, device: str, tokenizer) -> None:
    for fbank in (False, True):
        name = "fbank" if fbank else "waveform (layer norm)"
        ok, value, goal = lc.graph_gpu_equals_cpu(data, fbank, device)
        rows.add(f"{device.upper()} = CPU, graph + maker, {name}", ok, value, goal)
        ok, value, goal = lc.loader_gpu_equals_cpu(data, fbank, device, tokenizer)
        rows.add(f"{device.upper()} = CPU, whole loader (dev split), {name}", ok, value, goal)


def check_batch_time(rows: Rows) -> None:
    """DALI's GPU part (resample; Kaldi framing and FFT for fbank) and the kernels for one
    960,000-sample batch of decoded audio already on the GPU."""
    for fbank in (False, True):
        for count in (16, 2):
            n = 960_000 // count
            gpu_ms, wall_ms = _features_ms(count, n, fbank)
            name = "fbank" if fbank else "waveform"
            rows.add(
                f"GPU {name} features + collation, {count} × {n:,} samples",
                gpu_ms < 1.0,
                f"{gpu_ms:.3f} ms GPU (CUDA events), {wall_ms:.3f} ms wall",
                "< 1 ms GPU",
            )


def _features_ms(count: int, n: int, fbank: bool, reps: int = 30) -> tuple[float, float]:
    import cupy
    from nvidia.dali import fn, pipeline_def, types

    from dali_asr.pipeline.cuda_env import preload_cufft
    from dali_asr.pipeline.gpu_collate import GpuBatchMaker
    from dali_asr.pipeline.graph import kaldi_power
    from dali_asr.storage.discovery import DataFile
    from dali_asr.storage.examples import Example

    preload_cufft()  # as build_pipeline does for the fbank graph
    rng = np.random.default_rng(1)
    audio = [cupy.asarray(rng.normal(0, 0.1, n).astype(np.float32)) for _ in range(count)]
    cupy.cuda.get_current_stream().synchronize()

    @pipeline_def(batch_size=count, num_threads=4, device_id=0, exec_dynamic=True)
    def features():
        wav = fn.external_source(source=lambda: audio, batch=True, device="gpu", dtype=types.FLOAT)
        rate = fn.external_source(
            source=lambda: [np.float32(16_000)] * count, batch=True, dtype=types.FLOAT
        )
        wav = fn.audio_resample(wav, in_rate=rate, out_rate=16_000.0)
        return (kaldi_power(wav, "gpu") if fbank else wav), wav.shape()[0:1]

    pipe = features()
    pipe.build()
    files = [DataFile("x.parquet", "x.parquet", "c", "train", "l")]
    maker = GpuBatchMaker(files, 0, "bfloat16", use_fbank=fbank, normalize_audio=True, device_id=0)
    examples = [Example(0, 0, i, n, "", np.arange(20)) for i in range(count)]
    keep = list(range(count))

    def one() -> None:
        maker.make(examples, maker.decoded(maker.run(pipe), range(count)), keep)

    return stream_ms(one, maker.stream, reps)


def check_throughput(rows: Rows, data: Path, tokenizer, device: str, threads, seconds) -> None:
    plan = lc.planning_rate(data, tokenizer, seconds)
    rows.add(
        "planning alone (the loader's planning thread: read, filter, tokenize, bucket)",
        None,
        f"{plan['rate']:,.0f} audio-s/s, {plan['cpu_ms']:.3f} CPU ms/audio-s",
    )
    for t in threads:
        ceiling = lc.decode_ceiling(data, tokenizer, t, seconds)
        rows.add(
            f"decode-only ceiling, {t} DALI threads",
            None,
            f"{ceiling['rate']:,.0f} audio-s/s, {ceiling['cpu_ms']:.3f} CPU ms/audio-s",
        )
        for fbank in (False, True):
            r = lc.stream_rate(data, tokenizer, fbank, device, t, seconds)
            name = "fbank" if fbank else "waveform"
            rows.add(
                f"{device.upper()} {name} training stream / ceiling, {t} threads",
                r["rate"] >= 0.9 * ceiling["rate"] if t == max(threads) else None,
                f"{r['rate']:,.0f} audio-s/s = {r['rate'] / ceiling['rate']:.2f}×; "
                f"{r['cpu_ms']:.3f} CPU ms/audio-s; first batch {r['first_s']:.2f} s",
                ">= 0.90×" if t == max(threads) else "",
            )
    t = max(threads)
    wide = {"prefetch_queue_depth": 4, "decode_batch": 128, "decode_samples": 4 * 960_000}
    r = lc.stream_rate(data, tokenizer, False, device, t, seconds, settings=wide)
    rows.add(
        f"{device.upper()} waveform training stream, {t} threads, 4 batches per DALI iteration",
        None,
        f"{r['rate']:,.0f} audio-s/s; {r['cpu_ms']:.3f} CPU ms/audio-s ({wide})",
    )
    if device == "gpu":
        for fbank in (False, True):
            r = lc.stream_rate(data, tokenizer, fbank, "cpu", t, seconds)
            rows.add(
                f"CPU path {'fbank' if fbank else 'waveform'} training stream, {t} threads",
                None,
                f"{r['rate']:,.0f} audio-s/s; {r['cpu_ms']:.3f} CPU ms/audio-s",
            )


def check_memory(rows: Rows, data: Path, tokenizer, threads: int, batches: int = 500) -> None:
    import cupy
    import torch

    from dali_asr.loader import AsrLoader

    config = lc.loader_config(True, "gpu", threads, True, data)
    pool = cupy.get_default_memory_pool()
    marks: dict[int, tuple[float, float]] = {}
    widths = set()
    with AsrLoader(data, "train", config, tokenizer) as loader:
        for i, batch in enumerate(loader):
            batch.source_seqs.float().mean().item()  # a consumer, as a training step
            widths.add(int(batch.source_seqs.shape[1]))
            del batch
            if i + 1 in (100, batches):
                marks[i + 1] = (torch.cuda.memory_reserved() / 2**20, pool.total_bytes() / 2**20)
            if i + 1 == batches:
                break
    (t0, c0), (t1, c1) = marks[100], marks[batches]
    growth = (t1 + c1) / (t0 + c0) - 1
    rows.add(
        f"GPU memory over {batches} variable-size fbank batches ({len(widths)} widths)",
        growth < 0.05,
        f"torch reserved {t0:.0f} → {t1:.0f} MiB, CuPy pool {c0:.0f} → {c1:.0f} MiB "
        f"(batch 100 → {batches}: {growth:+.1%})",
        "< +5 %",
    )


def check_tune(rows: Rows, cap_s: float = 45.0) -> None:
    cmd = [sys.executable, "-m", "dali_asr.tools.cli", "tune-batch", "--max-audio-len", "480000"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get(
        "PYTHONPATH")])))  # fmt: skip
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=cap_s, env=env)
    except subprocess.TimeoutExpired:
        rows.add("tune-batch measured search", False, f"not done in {cap_s:.0f} s", "finishes")
        return
    last = [line for line in done.stdout.splitlines() if line.strip()]
    value = f"{last[-1] if last else done.stderr[-200:]} in {time.perf_counter() - start:.0f} s"
    rows.add("tune-batch measured search (stand-in model)", done.returncode == 0, value, "exit 0")


GPU_TESTS = "tests/pipeline/test_gpu.py"


def check_pytest(rows: Rows, data: Path) -> None:
    env = dict(os.environ, DALI_ASR_ESPEAK=str(data))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", GPU_TESTS],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=270,
    )  # fmt: skip
    (rows.out / "pytest.log").write_text(done.stdout + done.stderr)
    lines = done.stdout.strip().splitlines()
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    value = "; ".join([lines[-1] if lines else "no output", *failed[:3]])
    rows.add(f"pytest {GPU_TESTS}", done.returncode == 0, value[:600])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--tokenizer", type=Path, help="default: the dataset's char_spm.model")
    parser.add_argument("--threads", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per rate")
    parser.add_argument("--device", choices=["gpu", "cpu"], default="gpu")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-out"))
    parser.add_argument("--skip", nargs="*", default=[], help="sections to leave out")
    args = parser.parse_args()
    import torch

    if args.device == "gpu" and not torch.cuda.is_available():
        print("gpu_tier2: no CUDA device here (use --device cpu to rehearse)")
        return 2
    data = args.data.resolve()
    tokenizer = args.tokenizer or data / "tokenizer" / "char_spm.model"
    tokenizer = tokenizer if Path(tokenizer).is_file() else None
    rows = Rows("tier2", args.out, deadline_s=240)
    gpu = args.device == "gpu"
    sections = {
        "environment": lambda: check_environment(rows, args.device),
        "equal": lambda: check_equal(rows, data, args.device, tokenizer),
        "batch time": (lambda: check_batch_time(rows)) if gpu else None,
        "throughput": lambda: check_throughput(
            rows, data, tokenizer, args.device, args.threads, args.seconds
        ),
        "memory": (lambda: check_memory(rows, data, tokenizer, max(args.threads))) if gpu else None,
        "tune": (lambda: check_tune(rows)) if gpu else None,
        "pytest": (lambda: check_pytest(rows, data)) if gpu else None,
    }
    start = time.perf_counter()
    for name, fn in sections.items():
        if fn is not None and name not in args.skip:
            rows.guarded(name, fn, deadline_s=300 if name == "pytest" else None)
    rows.add("tier 2 wall time", None, f"{time.perf_counter() - start:.1f} s")
    return rows.finish()


if __name__ == "__main__":
    sys.exit(main())
