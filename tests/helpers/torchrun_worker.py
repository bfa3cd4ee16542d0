"""One rank of the 2-process torchrun tests: iterate the loader (the config comes as JSON from
the test) with one collective per batch, as a DDP step has (a rank short of batches hangs the
others), and write the keys, plan indices and fillers it got."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from dali_asr.config import config_from_dict
from dali_asr.loader import AsrLoader


def main() -> None:
    data, tokenizer, out, doc = sys.argv[1:5]
    dist.init_process_group("gloo")
    config = config_from_dict(json.loads(doc))
    loader = AsrLoader(data, "train", config, tokenizer)  # rank, world from torch.distributed
    keys, indices, fillers = [], [], []
    for batch in loader:
        dist.all_reduce(torch.ones(1))
        keys.append([str(k) for k in batch.keys])
        indices.append(batch.plan_index)
        if batch.filler:
            fillers.append(batch.plan_index)
    result = {
        "rank": loader.rank,
        "world_size": loader.world_size,
        "len": len(loader),
        "batches": keys,
        "plan_indices": indices,
        "fillers": fillers,
        "filler_batches": loader.telemetry.as_dict()["filler_batches"],
    }
    with open(f"{out}/rank{loader.rank}.json", "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
