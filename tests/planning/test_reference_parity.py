"""Batch for batch against the reference: plans recorded from omnilingual-asr 0.2.0's own
reader on espeak-mini (tests/golden/reference-plans.json, see its "what")."""

from __future__ import annotations

import hashlib
import json
from itertools import islice
from pathlib import Path

import pytest
import torch
from helpers.reference_oracle import golden_plan_task

from dali_asr.config import config_from_dict
from dali_asr.loader import AsrLoader

GOLDEN = json.loads((Path(__file__).parents[1] / "golden" / "reference-plans.json").read_text())


def example_id(language: str, text: str) -> str:
    return hashlib.sha1(f"{language}\t{text}".encode()).hexdigest()[:16]


def reference_config(batching: str, mode: str, root: Path, **dali: object):
    task = golden_plan_task(GOLDEN, batching, mode != "det")
    if mode == "train":
        storage = {
            "dataset_summary_path": str(root / "language_distribution_0.tsv"),
            "beta_corpus": 0.5,
            "beta_language": 0.5,
        }
    else:
        storage = {"sync_mode": "UNTIL_LAST"}
    return config_from_dict(
        {"asr_task_config": task, "mixture_parquet_storage_config": storage, "dali_asr": dali}
    )


@pytest.mark.parametrize("batching", ["length", "static"])
@pytest.mark.parametrize("mode", ["det", "shuf", "train"])
def test_plan_equals_the_reference(
    espeak_root: Path, espeak_tokenizer: Path, batching: str, mode: str
) -> None:
    """Single pass with and without shuffles is the reference's plan by default; the training
    stream is, with ``reference_train_stream`` (its seed and warm-up quirks) switched on."""
    config = reference_config(batching, mode, espeak_root, reference_train_stream=True)
    loader = AsrLoader(espeak_root, "train", config, espeak_tokenizer)
    files = loader.files.files
    expected = GOLDEN["plans"][f"{batching}/{mode}"]
    planned = [
        [example_id(files[ex.file_index].language, ex.text) for ex in batch]
        for batch in islice(loader.planner().batches(), len(expected) + 1)
    ]
    if mode != "train":
        assert len(planned) == len(expected)
    assert planned[: len(expected)] == expected


def test_default_training_stream_differs_only_by_documented_quirks(
    espeak_root: Path, espeak_tokenizer: Path
) -> None:
    config = reference_config("length", "train", espeak_root)
    loader = AsrLoader(espeak_root, "train", config, espeak_tokenizer)
    planned = list(islice(loader.planner().batches(), 50))
    assert len(planned) == 50
    assert [len(b) for b in planned] != [len(b) for b in GOLDEN["plans"]["length/train"]]


def test_waveform_batches_equal_the_reference(espeak_root: Path, espeak_tokenizer: Path) -> None:
    """Lengths, target lengths and float64 sums of the padded source, batch by batch."""
    loader = AsrLoader(
        espeak_root, "train", reference_config("length", "det", espeak_root), espeak_tokenizer
    )
    reference = GOLDEN["length_waveform_det_sources"]
    batches = list(loader)
    assert len(batches) == len(reference)
    for batch, ref in zip(batches, reference, strict=True):
        assert batch.source_seq_lens.tolist() == ref["source_seq_lens"]
        assert batch.target_seq_lens.tolist() == ref["target_seq_lens"]
        source = batch.source_seqs.to(torch.float64)
        assert float(source.sum()) == pytest.approx(ref["source_sum"], abs=1e-3)
        assert float(source.abs().sum()) == pytest.approx(ref["source_abs_sum"], rel=1e-6)
