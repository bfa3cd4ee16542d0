"""One rank of tests/fairseq2's 2-process torchrun test: a reader (dali-asr's or Omnilingual's)
on fairseq2's own process-group gangs (gloo), read step by step with one collective per step as
a DDP step has (a rank that stops early would hang the others), then asked once more after its
end of data. Writes what it got to ``<out>/<reader>-<sync_mode>-rank<r>.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from fairseq2.gang import ProcessGroupGang, create_parallel_gangs
from fairseq2_parity import Readers, read_steps


def main() -> None:
    data, tokenizer, out, reader, sync_mode, task = sys.argv[1:7]
    root = ProcessGroupGang.create_default_process_group(torch.device("cpu"))
    gangs = create_parallel_gangs(root)
    readers = Readers(Path(data), Path(tokenizer))
    readers.gangs = gangs
    steps = []
    built = readers.build(
        reader, "dev", {"sync_mode": sync_mode}, json.loads(task), num_accumulate=3
    )
    for step in read_steps(built):
        dist.all_reduce(torch.ones(1))
        steps.append([b.batch_size for b in step])
    try:
        next(built)
        again = "batches"
    except StopIteration:
        again = "StopIteration"
    result = {"rank": gangs.dp.rank, "world_size": gangs.dp.size, "steps": steps, "again": again}
    name = f"{reader}-{sync_mode}-rank{gangs.dp.rank}.json"
    (Path(out) / name).write_text(json.dumps(result))
    root.close()


if __name__ == "__main__":
    main()
