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

import os
import time
from collections import Counter
from typing import Any

import dali_child
import numpy as np
from bench_common import SAMPLE_RATE, ChildSpec, child_main, cpu_seconds

from dali_asr.config import config_from_dict
from dali_asr.planning.planners import max_batch_size
from dali_asr.storage.opening import open_dataset
from dali_asr.storage.row_groups import AUDIO, LENGTH, ParquetFiles, RowGroupRef

# What one pass read and decoded (examples, batches, samples) and the process CPU each part
# took (read_cpu_s, decode_cpu_s).
Tally = Counter


def decode(pipe: Any, blobs: list[np.ndarray], tally: Tally) -> None:
    c0 = time.process_time()
    pipe.feed_input(dali_child.ENCODED, blobs)
    (audio,) = pipe.run()
    tally["decode_cpu_s"] += time.process_time() - c0
    tally["batches"] += 1
    tally["decoded_samples"] += sum(int(shape[0]) for shape in audio.shape())


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
        tally["read_cpu_s"] += time.process_time() - c0
        tally["examples"] += len(keep)
        tally["audio_samples"] += int(sizes[keep].sum())
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
    # fed by hand with no prefetch: an iteration's decoding happens inside its run() and
    # nowhere else, so the process CPU around that call is the decode's alone
    pipe = dali_child.decode_pipeline(None, batch_size, spec.threads, prefetch_queue_depth=1)
    tally: Tally = Counter()
    c_start, t_start = cpu_seconds(), time.perf_counter()
    for _ in range(spec.epochs):
        one_epoch(files, refs, pipe, batch_size, (task.min_audio_len, task.max_audio_len), tally)
    wall = time.perf_counter() - t_start
    return {
        "wall_s": wall,
        "cpu_s": cpu_seconds() - c_start,
        "read_cpu_s": tally["read_cpu_s"],
        "decode_cpu_s": tally["decode_cpu_s"],
        "cores": len(os.sched_getaffinity(0)),
        "epochs": spec.epochs,
        "row_groups": len(refs),
        "batch_size": batch_size,
        "batches": tally["batches"],
        "examples": tally["examples"],
        "audio_s": tally["audio_samples"] / SAMPLE_RATE,
        "decoded_s": tally["decoded_samples"] / SAMPLE_RATE,
    }


if __name__ == "__main__":
    child_main(__doc__, run_read_decode)
