"""One measured pass of the reference reader (omnilingual-asr 0.2.0 on fairseq2 0.6), in its own
process, with the reference virtualenv's python (benchmarks/setup_reference.sh builds it):

    $REFERENCE_VENV/bin/python benchmarks/reference_child.py '<ChildSpec JSON>'

Builds ``MixtureParquetAsrDataset.from_path(...).create_reader(...)`` as omnilingual's wav2vec2
ASR recipe does, from the same ``asr_task_config`` / ``mixture_parquet_storage_config`` dicts
that dali-asr gets, and prints one ``BENCH-RESULT {json}`` line on stdout.

Reference behaviour the measurement has to work around (baseline.md §2): the training stream
never ends, so ``max_num_batches`` caps it; with ``fragment_loading.cache`` and no
``cache_dir`` it leaves temporary folders behind, so the child passes its own and removes it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Imports happen before any clock starts, as in a training script.
import torch
from bench_common import (
    IMPORTED_AT,
    ChildSpec,
    PassMeter,
    current_rss_mb,
    emit,
    spec_from_argv,
)
from fairseq2.data.tokenizers.char import load_char_tokenizer
from fairseq2.datasets import SyncMode
from fairseq2.gang import create_fake_gangs
from omnilingual_asr.datasets.impl.mixture_parquet_asr_dataset import MixtureParquetAsrDataset
from omnilingual_asr.datasets.storage.mixture_parquet_storage import MixtureParquetStorageConfig
from omnilingual_asr.datasets.tasks.asr_task import AsrTaskConfig
from omnilingual_asr.datasets.utils.batching import BatchingStrategy


def storage_config(settings: dict[str, Any], cache_dir: str) -> MixtureParquetStorageConfig:
    values = dict(settings)
    values["sync_mode"] = SyncMode[values["sync_mode"]]
    storage = MixtureParquetStorageConfig(**values)
    # The reference turns the cache off itself outside training streams; the folder is ours.
    storage.fragment_loading.cache_dir = cache_dir
    return storage


def task_config(settings: dict[str, Any]) -> AsrTaskConfig:
    values = dict(settings)
    values["batching_strategy"] = BatchingStrategy[values["batching_strategy"]]
    return AsrTaskConfig(**values)


def build_reader(spec: ChildSpec, task: AsrTaskConfig, storage: MixtureParquetStorageConfig) -> Any:
    """The reader as the recipe builds it from its config objects; the tokenizer load counts as
    construction, as dali-asr loads its tokenizer inside ``AsrLoader(...)``."""
    tokenizer = load_char_tokenizer(Path(spec.tokenizer), None)
    dataset = MixtureParquetAsrDataset.from_path(Path(spec.data))
    return dataset.create_reader(
        split=spec.split,
        tokenizer=tokenizer,
        gangs=create_fake_gangs(device=torch.device("cpu")),
        dtype=torch.float32,
        num_accumulate=1,
        storage_config=storage,
        task_config=task,
    )


def run_reference(spec: ChildSpec, cache_root: str) -> dict[str, Any]:
    """``epochs`` single passes (one reader each: a finished reader does not restart) or one
    capped training stream; constructions after the first are left out of the throughput."""
    meter = PassMeter()
    readers = 1 if spec.endless else spec.epochs
    # the config objects exist before the clock starts, as dali-asr's LoaderConfig does: the
    # first batch counts from the reader's construction, as dali-asr's from AsrLoader's
    task, storage = task_config(spec.task), storage_config(spec.storage, f"{cache_root}/r0")
    meter.start()
    reader = build_reader(spec, task, storage)
    meter.built()
    for r in range(readers):
        if r > 0:
            t0 = time.perf_counter()
            task = task_config(spec.task)
            storage = storage_config(spec.storage, f"{cache_root}/r{r}")
            reader = build_reader(spec, task, storage)
            meter.rebuilt(time.perf_counter() - t0)
        for batches in reader:
            for batch in batches:
                meter.batch(
                    int(batch.source_seqs.shape[0]),
                    int(batch.source_seqs.shape[1]),
                    sum(int(n) for n in batch.source_seq_lens),
                    sum(int(n) for n in batch.example["length"]),
                )
        del reader
    return meter.result()


def main() -> None:
    spec = spec_from_argv(__doc__, sys.argv[1:])
    if spec is None:
        return
    if spec.tokenizer is None:
        raise SystemExit("reference_child.py: the reference needs a SentencePiece tokenizer")
    rss_import, import_s = current_rss_mb(), time.perf_counter() - IMPORTED_AT
    cache_root = tempfile.mkdtemp(prefix="bench-ref-cache-")
    try:
        result = run_reference(spec, cache_root)
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)
    result["rss_after_import_mb"] = rss_import
    result["import_s"] = import_s
    result["torch_threads"] = torch.get_num_threads()
    emit(result)


if __name__ == "__main__":
    main()
