"""One rank of the 2-process torchrun test: iterate the loader, write the keys it got."""

from __future__ import annotations

import json
import sys

import torch.distributed as dist

from dali_asr.config import config_from_dict
from dali_asr.loader import AsrLoader


def main() -> None:
    data, tokenizer, out = sys.argv[1], sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo")
    config = config_from_dict(
        {
            "asr_task_config": {
                "min_audio_len": 16_000,
                "max_audio_len": 480_000,
                "max_num_elements": 960_000,
                "example_shuffle_window": 1,
                "batch_shuffle_window": 1,
            },
            "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
        }
    )
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
