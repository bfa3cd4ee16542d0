"""One measured pass of the read + decode ceiling in its own process. Run by benchmarks/run.py
with the project's python:

    python benchmarks/read_decode_child.py '<ChildSpec JSON>'

Any loader of this layout must at least read each row group's ``audio_bytes`` column (a
``list<int8>`` parquet column; pyarrow, one thread) and decode the audio (DALI
``decoders.audio`` on the CPU). This child does only that, ``epochs`` times over the split:
every row group of the split through dali-asr's own reader (footers read before the clock, as
a plan reads them at construction), every example within the task's length filter decoded with
the loader's decoder arguments, its DALI batch size and ``threads``. Reading and decoding
alternate, a row group then the full batches it completed, and each is timed in process CPU
(all threads), so neither is charged the other's work. The ceiling is what the cores could do
if they did nothing else:

    cores / (read CPU ms per audio-s + decode CPU ms per audio-s)   audio-s/s

with cores = ``len(os.sched_getaffinity(0))``. Prints one ``BENCH-RESULT {json}`` line on
stdout (see bench_common.emit).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from bench_common import (
    SAMPLE_RATE,
    ChildSpec,
    cpu_seconds,
    current_rss_mb,
    emit,
    spec_from_argv,
)

from dali_asr.config import config_from_dict
from dali_asr.planning.planners import max_batch_size
from dali_asr.storage.opening import open_dataset
from dali_asr.storage.row_groups import AUDIO, LENGTH, ParquetFiles, RowGroupRef

ENCODED = "encoded"


@dataclass
class Tally:
    """What one pass read and decoded, and the process CPU each part took."""

    read_cpu_s: float = 0.0
    decode_cpu_s: float = 0.0
    batches: int = 0
    examples: int = 0
    audio_samples: int = 0
    decoded_samples: int = 0


def decoder(batch_size: int, threads: int) -> Any:
    """external_source → decoders.audio with the loader's arguments. Fed by hand with no
    prefetch: an iteration's decoding happens inside its ``run()`` and nowhere else, so the
    process CPU around that call is the decode's alone."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(
        batch_size=batch_size,
        num_threads=threads,
        device_id=None,
        prefetch_queue_depth=1,
        exec_dynamic=True,
    )
    def decode_only():
        encoded = fn.external_source(name=ENCODED, dtype=types.UINT8, ndim=1)
        audio, _ = fn.decoders.audio(
            encoded, dtype=types.FLOAT, downmix=True, sample_rate=float(SAMPLE_RATE)
        )
        return audio

    pipe = decode_only()
    pipe.build()
    return pipe


def decode(pipe: Any, blobs: list[np.ndarray], tally: Tally) -> None:
    c0 = time.process_time()
    pipe.feed_input(ENCODED, blobs)
    (audio,) = pipe.run()
    tally.decode_cpu_s += time.process_time() - c0
    tally.batches += 1
    tally.decoded_samples += sum(int(shape[0]) for shape in audio.shape())


def one_epoch(
    files: ParquetFiles,
    refs: list[RowGroupRef],
    pipe: Any,
    batch_size: int,
    length_range: tuple[int, int],
    tally: Tally,
) -> None:
    lo, hi = length_range
    pending: list[np.ndarray] = []
    for ref in refs:
        c0 = time.process_time()
        table = files.read(ref, [AUDIO, LENGTH])
        column = files.audio_column(table, ref)
        sizes = table.column(LENGTH).to_numpy()
        keep = np.flatnonzero((sizes >= lo) & (sizes <= hi))
        pending.extend(column.row(int(i)) for i in keep)
        tally.read_cpu_s += time.process_time() - c0
        tally.examples += len(keep)
        tally.audio_samples += int(sizes[keep].sum())
        while len(pending) >= batch_size:
            decode(pipe, pending[:batch_size], tally)
            del pending[:batch_size]
    if pending:
        decode(pipe, pending, tally)


def run_read_decode(spec: ChildSpec) -> dict[str, Any]:
    task = config_from_dict({"asr_task_config": spec.task}, source="benchmarks").asr_task_config
    files = open_dataset(spec.data, [spec.split]).files
    if not isinstance(files, ParquetFiles):
        raise SystemExit("read_decode_child.py: the read + decode ceiling needs parquet files")
    refs = files.row_groups()
    batch_size = max_batch_size(task)
    pipe = decoder(batch_size, spec.threads)
    tally = Tally()
    c_start, t_start = cpu_seconds(), time.perf_counter()
    for _ in range(spec.epochs):
        one_epoch(files, refs, pipe, batch_size, (task.min_audio_len, task.max_audio_len), tally)
    wall = time.perf_counter() - t_start
    return {
        "wall_s": wall,
        "cpu_s": cpu_seconds() - c_start,
        "read_cpu_s": tally.read_cpu_s,
        "decode_cpu_s": tally.decode_cpu_s,
        "cores": len(os.sched_getaffinity(0)),
        "epochs": spec.epochs,
        "row_groups": len(refs),
        "batch_size": batch_size,
        "batches": tally.batches,
        "examples": tally.examples,
        "audio_s": tally.audio_samples / SAMPLE_RATE,
        "decoded_s": tally.decoded_samples / SAMPLE_RATE,
    }


def main() -> None:
    spec = spec_from_argv(__doc__, sys.argv[1:])
    if spec is None:
        return
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    rss_import = current_rss_mb()
    result = run_read_decode(spec)
    result["rss_after_import_mb"] = rss_import
    result["threads"] = spec.threads
    emit(result)


if __name__ == "__main__":
    main()
