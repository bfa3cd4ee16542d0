"""The Kaldi fbank on the CPU three ways, in CPU ms per audio-second on one thread.

DALI's CPU operators (``graph.kaldi_power`` and NumPy's ``log_mel``: the CPU path before
``kaldi_fbank``, the GPU's recipe today), ``fbank.kaldi_fbank`` (the CPU path now), and
kaldi-native-fbank, the C++ fbank the reference wraps, as the yardstick:

    python benchmarks/fbank_cost.py [--data DIR] [--split train] [--repeats 5] [--limit N]

The split's audio is decoded once with the CPU graph (not timed) and grouped in path order
into batches of up to 960,000 samples (the loader's LENGTH batches). Each variant then makes
the unnormalised fbank of every batch, once per repeat, the variants taking turns so that a
busy machine slows all alike; a variant's figure is its fastest repeat. CPU time is the
process's (DALI's worker threads included); DALI runs one worker thread and torch one
intra-op thread.

- ``dali operators``: ``external_source`` of the decoded audio → ``kaldi_power`` on DALI's
  CPU, and ``log_mel`` of each batch's power spectra;
- ``kaldi_fbank``: :func:`dali_asr.pipeline.fbank.kaldi_fbank` of each batch;
- ``kaldi-native-fbank``: one ``OnlineFbank`` per utterance, fed its samples ×32768 as a
  Python list made before timing (``accept_waveform`` computes every frame in C++; the
  frames are not read back);
- ``kaldi-native-fbank binding``: ``OnlineRawAudioSamples`` fed the same lists: the share of
  the line above that is pybind's list conversion and framing copies, not the fbank.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import gpu_loader_checks as lc
import numpy as np
import torch
from bench_common import SAMPLE_RATE, cpu_seconds
from gpu_rows import default_data

BATCH_SAMPLES = 960_000
Variant = Callable[[list[list[np.ndarray]]], Callable[[], None]]
"""Given the batches, prepares what must not be timed and returns the timed pass."""


def batches_of(audio: list[np.ndarray], samples: int = BATCH_SAMPLES) -> list[list[np.ndarray]]:
    batches: list[list[np.ndarray]] = [[]]
    size = 0
    for a in audio:
        if batches[-1] and size + len(a) > samples:
            batches.append([])
            size = 0
        batches[-1].append(a)
        size += len(a)
    return batches


def dali_operators(batches: list[list[np.ndarray]]) -> Callable[[], None]:
    from nvidia.dali import fn, pipeline_def, types

    from dali_asr.pipeline.fbank import log_mel
    from dali_asr.pipeline.graph import kaldi_power

    feed = iter(batches)

    @pipeline_def(
        batch_size=max(len(b) for b in batches), num_threads=1, device_id=None,
        prefetch_queue_depth=1, exec_dynamic=True,
    )  # fmt: skip
    def power():
        wav = fn.external_source(source=lambda: next(feed), batch=True, dtype=types.FLOAT, ndim=1)
        return kaldi_power(wav, "cpu")

    pipe = power()
    pipe.build()

    def one_pass() -> None:
        for _ in batches:
            (out,) = pipe.run()
            log_mel(np.concatenate([np.asarray(out[i]) for i in range(len(out))]))

    return one_pass


def kaldi_fbank(batches: list[list[np.ndarray]]) -> Callable[[], None]:
    from dali_asr.pipeline.fbank import kaldi_fbank as fbank

    def one_pass() -> None:
        for batch in batches:
            fbank(batch)

    return one_pass


def _knf(raw: bool) -> Variant:
    def prepare(batches: list[list[np.ndarray]]) -> Callable[[], None]:
        import kaldi_native_fbank as knf

        from dali_asr.pipeline.fbank import WAVEFORM_SCALE

        if raw:
            opts = knf.RawAudioSamplesOptions()
            make = knf.OnlineRawAudioSamples
        else:
            opts = knf.FbankOptions()
            opts.mel_opts.num_bins = 80
            make = knf.OnlineFbank
        opts.frame_opts.dither = 0.0
        opts.frame_opts.snip_edges = True
        lists = [(a * WAVEFORM_SCALE).tolist() for batch in batches for a in batch]

        def one_pass() -> None:
            for samples in lists:
                extractor = make(opts)
                extractor.accept_waveform(SAMPLE_RATE, samples)
                extractor.input_finished()

        return one_pass

    return prepare


VARIANTS: dict[str, Variant] = {
    "dali operators": dali_operators,
    "kaldi_fbank": kaldi_fbank,
    "kaldi-native-fbank": _knf(raw=False),
    "kaldi-native-fbank binding": _knf(raw=True),
}


def measure(batches: list[list[np.ndarray]], repeats: int) -> dict[str, list[float]]:
    """CPU seconds of each variant's pass over ``batches``, per repeat."""
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(repeats):
        for name, prepare in VARIANTS.items():
            one_pass = prepare(batches)
            start = cpu_seconds()
            one_pass()
            seconds[name].append(cpu_seconds() - start)
            del one_pass  # a DALI pipeline goes before the next one is built
    return seconds


def table(seconds: dict[str, list[float]], audio_s: float) -> str:
    per = {name: 1000 * min(s) / audio_s for name, s in seconds.items()}
    yardstick, old = per["kaldi-native-fbank"], per["dali operators"]
    lines = [
        "| variant | CPU ms per audio-s, best | median | × kaldi-native-fbank | × dali operators |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, s in seconds.items():
        median = 1000 * statistics.median(s) / audio_s
        lines.append(
            f"| {name} | {per[name]:.3f} | {median:.3f} | {per[name] / yardstick:.2f} "
            f"| {per[name] / old:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=default_data())
    p.add_argument("--split", default="train")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--limit", type=int, default=1_000_000, help="files of the split at most")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    blobs = lc.split_blobs(args.data, args.split, args.limit)
    _, audio = lc._graph_outputs(blobs, "cpu", False, 64, False)
    audio_s = sum(len(a) for a in audio) / SAMPLE_RATE
    batches = batches_of(audio)
    load = os.getloadavg()
    print(
        f"{len(audio)} files, {audio_s:,.0f} audio-s of {args.split} in {len(batches)} "
        f"batches; load average before {load[0]:.2f}",
        file=sys.stderr,
    )
    seconds = measure(batches, args.repeats)
    print(table(seconds, audio_s))
    print(f"\nload average (1 min) before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
