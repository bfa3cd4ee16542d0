"""End to end on real data: parquet → plan → DALI (CPU) → collation → Seq2SeqBatch."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from conftest import MILESTONE_TASK

from dali_asr.batch import Seq2SeqBatch
from dali_asr.config import LoaderConfig, config_from_dict
from dali_asr.loader import AsrLoader
from dali_asr.storage.examples import example_key

LENGTH_TASK = MILESTONE_TASK


def make_config(**task: object) -> LoaderConfig:
    dali = task.pop("dali_asr", {})
    return config_from_dict(
        {
            "asr_task_config": {**LENGTH_TASK, **task},
            "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
            "dali_asr": dali,
        }
    )


@pytest.fixture(scope="module")
def length_epoch(espeak_root: Path, espeak_tokenizer: Path) -> tuple[AsrLoader, list[Seq2SeqBatch]]:
    loader = AsrLoader(espeak_root, "train", make_config(), espeak_tokenizer)
    return loader, list(loader)


def _decode_key(root: Path, key) -> np.ndarray:
    table = pq.ParquetFile(root / key.file).read_row_group(key.row_group, columns=["audio_bytes"])
    blob = np.asarray(table.column(0)[key.row].as_py(), dtype=np.int8).view(np.uint8)
    audio, _ = sf.read(io.BytesIO(blob.tobytes()), dtype="float32")
    return audio


def test_every_example_exactly_once(length_epoch, espeak_root: Path) -> None:
    loader, batches = length_epoch
    keys = [k for b in batches for k in b.keys]
    assert len(keys) == len(set(keys)) == 466
    planned = [example_key(loader.files.files, ex) for b in loader.planner().batches() for ex in b]
    assert keys == planned
    # everything the split holds is either delivered or counted as skipped
    total_rows = sum(pq.ParquetFile(f.path).metadata.num_rows for f in loader.files.files)
    skipped = sum(
        n for r, n in loader.report.counts.items() if r in ("audio_too_short", "audio_too_long")
    )
    assert len(keys) + loader.report.total >= total_rows
    assert total_rows - len(keys) == 14 and skipped == 14


def test_reference_plan_facts(length_epoch) -> None:
    """baseline.md: 50 batches, sizes {2..9, 16, 24, 32, 40}, first batch 5 x 187,229."""
    loader, batches = length_epoch
    assert len(batches) == len(loader) == 50
    assert {b.batch_size for b in batches} == {2, 3, 4, 5, 6, 7, 8, 9, 16, 24, 32, 40}
    assert tuple(batches[0].source_seqs.shape) == (5, 187_229)
    real = sum(b.num_source_elements for b in batches)
    padded = sum(b.batch_size * b.source_seqs.shape[1] for b in batches)
    assert round(real / padded, 3) == 0.936


def test_shapes_lengths_masks_and_padding(length_epoch) -> None:
    loader, batches = length_epoch
    pad = loader.tokenizer.pad_idx
    for b in batches:
        bsz, width = b.source_seqs.shape
        assert b.source_seqs.dtype == torch.float32
        assert b.source_seq_lens.tolist() == b.audio_size  # decoded length == audio_size
        assert int(b.source_seq_lens.max()) == width
        assert b.source_padding_mask.shape == (bsz, width)
        steps = torch.arange(width)[None, :]
        assert torch.equal(b.source_padding_mask, steps >= b.source_seq_lens[:, None])
        assert torch.all(b.source_seqs[b.source_padding_mask] == 0)
        assert b.target_seqs.dtype == torch.int64
        assert b.target_seqs.shape == (bsz, int(b.target_seq_lens.max()))
        for i, n in enumerate(b.target_seq_lens.tolist()):
            assert torch.all(b.target_seqs[i, n:] == pad)
            assert torch.all(b.target_seqs[i, :n] != pad)
        assert len(b.keys) == len(b.language) == len(b.corpus) == len(b.text) == bsz
        assert all(s == "train" for s in b.split)


def test_waveform_values_match_soundfile(length_epoch, espeak_root: Path) -> None:
    loader, batches = length_epoch
    for b in (batches[0], batches[-1]):
        for i, key in enumerate(b.keys):
            ref = _decode_key(loader.root, key)
            n = int(b.source_seq_lens[i])
            np.testing.assert_allclose(b.source_seqs[i, :n].numpy(), ref, atol=1e-5, rtol=0)


def test_targets_are_the_tokenized_text(length_epoch) -> None:
    loader, batches = length_epoch
    b = batches[3]
    for i, text in enumerate(b.text):
        n = int(b.target_seq_lens[i])
        assert b.target_seqs[i, :n].tolist() == loader.tokenizer.encode(text).tolist()


def test_static_batching_and_epochs(espeak_root: Path, espeak_tokenizer: Path) -> None:
    config = make_config(batching_strategy="STATIC", batch_size=8)
    loader = AsrLoader(espeak_root, "train", config, espeak_tokenizer)
    first = [b.keys for b in loader]
    second = [b.keys for b in loader]
    assert first == second
    assert [len(k) for k in first] == [8] * 58 + [2]
    assert len(loader) == 59


def test_bfloat16_fbank_and_normalized_waveform(espeak_root: Path, espeak_tokenizer: Path) -> None:
    config = make_config(use_fbank=True, max_num_batches=3, dali_asr={"dtype": "bfloat16"})
    batches = list(AsrLoader(espeak_root, "dev", config, espeak_tokenizer))
    assert len(batches) == 3
    for b in batches:
        assert b.source_seqs.dtype == torch.bfloat16
        assert b.source_seqs.ndim == 3 and b.source_seqs.shape[2] == 80
        assert b.source_seq_lens.tolist() == [1 + (n - 400) // 160 for n in b.audio_size]
        assert torch.all(b.source_seqs[b.source_padding_mask] == 0)
    config = make_config(normalize_audio=True, max_num_batches=2)
    for b in AsrLoader(espeak_root, "dev", config, espeak_tokenizer):
        for i, n in enumerate(b.source_seq_lens.tolist()):
            row = b.source_seqs[i, :n].double()
            # eps 1e-5 in the variance pulls the std of quiet clips slightly below 1
            assert abs(float(row.mean())) < 1e-4 and abs(float(row.std()) - 1) < 5e-3


def test_endless_training_stream_has_no_len(espeak_root: Path) -> None:
    loader = AsrLoader(espeak_root, "train", None)
    assert loader.endless
    with pytest.raises(TypeError, match="max_num_batches"):
        len(loader)


def test_builtin_char_tokenizer_and_to(espeak_root: Path) -> None:
    loader = AsrLoader(espeak_root, "dev", make_config(max_num_batches=1))
    (batch,) = list(loader)
    assert loader.tokenizer.pad_idx == 1
    moved = batch.to("cpu")
    assert torch.equal(moved.source_seqs, batch.source_seqs)


def test_close_is_idempotent_and_stops_threads(espeak_root: Path, espeak_tokenizer) -> None:
    before = set(threading.enumerate())  # earlier tests' loaders may still be winding down
    loader = AsrLoader(espeak_root, "train", make_config(), espeak_tokenizer)
    it = iter(loader)
    next(it)
    loader.close()
    loader.close()
    ours = [t for t in set(threading.enumerate()) - before if t.name.startswith("dali-asr")]
    assert not ours, ours


def _expected_plan(root: Path, task: dict) -> list[list[tuple[str, int, int]]]:
    """The plan computed independently: rows in path order, the reference's filters by hand,
    then fairseq2's first-fit bucketing (checked against golden vectors in test_batching)."""
    from helpers.fairseq2_ops import bucket_by_length

    from dali_asr.batching import length_bucket_sizes

    items = []
    for path in sorted(root.rglob("split=train/**/*.parquet")):
        pf = pq.ParquetFile(path)
        for g in range(pf.metadata.num_row_groups):
            t = pf.read_row_group(g, columns=["audio_size", "text"]).to_pylist()
            for r, row in enumerate(t):
                n, text = row["audio_size"], row["text"]
                if not task["min_audio_len"] <= n <= task["max_audio_len"]:
                    continue
                if not text or n / len(text) < 160:
                    continue
                items.append(((path.relative_to(root).as_posix(), g, r), n))
    sizes = length_bucket_sizes(
        min_audio_len=task["min_audio_len"],
        max_audio_len=task["max_audio_len"],
        max_num_elements=task["max_num_elements"],
        num_seqs_multiple_of=task["num_seqs_multiple_of"],
        max_bucket_size=None,
    )
    batches = bucket_by_length(items, lambda it: it[1], sizes, min_data_len=task["min_audio_len"])
    return [[key for key, _ in b] for b in batches]


def test_small_dataset_with_several_row_groups(small_dataset: Path, espeak_tokenizer) -> None:
    """Files of several row groups (40 + 8 rows): keys address the right rows, every example
    arrives once, and the audio is the audio of that key."""
    task = {**LENGTH_TASK, "max_num_elements": 480_000}
    loader = AsrLoader(small_dataset, "train", make_config(**task), espeak_tokenizer)
    batches = list(loader)
    got = [[(k.file, k.row_group, k.row) for k in b.keys] for b in batches]
    assert got == _expected_plan(small_dataset, task)
    assert any(k.row_group == 1 for b in batches for k in b.keys)
    for b in batches[:: max(1, len(batches) // 6)]:
        for i, key in enumerate(b.keys):
            n = int(b.source_seq_lens[i])
            ref = _decode_key(small_dataset, key)
            np.testing.assert_allclose(b.source_seqs[i, :n].numpy(), ref, atol=1e-5, rtol=0)


def test_telemetry_and_auto_max_num_elements(espeak_root: Path, espeak_tokenizer) -> None:
    cfg = config_from_dict(
        {
            "asr_task_config": {**LENGTH_TASK, "max_num_elements": "auto"},
            "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
        }
    )
    assert cfg.asr_task_config.max_num_elements == "auto"  # parsing knows no device
    loader = AsrLoader(espeak_root, "dev", cfg, espeak_tokenizer)
    assert loader.task.max_num_elements == 2_880_000  # no CUDA: the default, rounded
    batches = list(loader)
    t = loader.telemetry.as_dict()
    assert t["batches"] == len(batches)
    assert t["examples"] == sum(b.batch_size for b in batches)
    real = sum(b.num_source_elements for b in batches)
    padded = sum(b.batch_size * b.source_seqs.shape[1] for b in batches)
    assert abs(t["audio_padding_efficiency"] - real / padded) < 1e-9
