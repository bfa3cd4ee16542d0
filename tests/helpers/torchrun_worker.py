"""One rank of the 2-process torchrun test: iterate the loader (the config comes as JSON from
the test), write the keys it got."""

from __future__ import annotations

import json
import sys

import torch.distributed as dist

from dali_asr.config import config_from_dict
from dali_asr.loader import AsrLoader


def main() -> None:
    data, tokenizer, out, doc = sys.argv[1:5]
    dist.init_process_group("gloo")
    config = config_from_dict(json.loads(doc))
    loader = AsrLoader(data, "train", config, tokenizer)  # rank, world from torch.distributed
    keys = [[str(k) for k in batch.keys] for batch in loader]
    result = {
        "rank": loader.rank,
        "world_size": loader.world_size,
        "len": len(loader),
        "batches": keys,
    }
    with open(f"{out}/rank{loader.rank}.json", "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
