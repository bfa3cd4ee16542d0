"""End to end on real data: parquet → plan → DALI (CPU) → collation → Seq2SeqBatch."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from conftest import MILESTONE_TASK, SHARED
from helpers.loader_threads import loader_threads, threads_before
from helpers.reference_oracle import oracle_batches, oracle_bucket_sizes

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
    before = threads_before()
    loader = AsrLoader(espeak_root, "train", make_config(), espeak_tokenizer)
    it = iter(loader)
    next(it)
    loader.close()
    loader.close()
    assert not loader_threads() - before


def test_with_block_closes_the_loader_on_an_exception(espeak_root: Path, espeak_tokenizer) -> None:
    before = threads_before()
    config = make_config()
    with (
        pytest.raises(RuntimeError, match="in the training step"),
        AsrLoader(espeak_root, "train", config, espeak_tokenizer) as loader,
    ):
        it = iter(loader)
        next(it)
        assert loader_threads() - before  # the epoch's threads run
        raise RuntimeError("in the training step")
    # the loader and its iterator are still referenced: the with block stopped the threads,
    # not the garbage collector
    assert not loader_threads() - before
    assert loader.files and it is not None


@pytest.mark.parametrize(
    ("fbank", "multiple"), [(False, 1000), (True, 7)], ids=["waveform", "fbank"]
)
def test_pad_to_multiple(
    espeak_root: Path, espeak_tokenizer: Path, fbank: bool, multiple: int
) -> None:
    """The time axis of every batch is the least multiple of ``pad_to_multiple`` that holds it;
    the values, lengths and targets are those of the unpadded batch, the padding is zeros
    and the mask marks it."""
    plain_config = make_config(use_fbank=fbank, max_num_batches=3)
    config = make_config(use_fbank=fbank, max_num_batches=3, dali_asr={"pad_to_multiple": multiple})
    plain = list(AsrLoader(espeak_root, "dev", plain_config, espeak_tokenizer))
    padded = list(AsrLoader(espeak_root, "dev", config, espeak_tokenizer))
    assert len(padded) == len(plain) == 3
    widths = []
    for p, b in zip(plain, padded, strict=True):
        assert b.keys == p.keys
        width, real = b.source_seqs.shape[1], p.source_seqs.shape[1]
        assert width % multiple == 0 and real <= width < real + multiple
        widths.append((real, width))
        assert torch.equal(b.source_seq_lens, p.source_seq_lens)
        assert torch.equal(b.target_seqs, p.target_seqs)
        assert torch.equal(b.source_seqs[:, :real], p.source_seqs)
        assert torch.all(b.source_seqs[:, real:] == 0)
        steps = torch.arange(width)[None, :]
        assert torch.equal(b.source_padding_mask, steps >= b.source_seq_lens[:, None])
    assert any(real < width for real, width in widths)


# -- an oracle of the reference's LENGTH plan that shares no code with dali_asr ---------------
# Written from Omnilingual's and fairseq2's behaviour as ../shared/reference/omnilingual-
# semantics.md describes it (sections 5.1-5.3), and held to the reference's own outputs by
# ``test_the_plan_oracle_is_the_reference``: fairseq2's bucket vectors and the plan Omnilingual
# recorded on espeak-mini.

GOLDEN_VECTORS = SHARED / "reference" / "bucket-vectors.json"
GOLDEN_PLANS = Path(__file__).parent / "golden" / "reference-plans.json"


def oracle_plan(root: Path, task: dict) -> list[list[tuple[str, int, int, str]]]:
    """The single-pass LENGTH plan of split train: rows in path order, the reference's length
    and text filters by hand (no row of espeak-mini is all-unknown), then the buckets above.
    Each example is (file, row group, row, language + tab + text)."""
    items = []
    for path in sorted(root.rglob("split=train/**/*.parquet")):
        pf = pq.ParquetFile(path)
        language = path.parent.name.removeprefix("language=")
        for g in range(pf.metadata.num_row_groups):
            rows = pf.read_row_group(g, columns=["audio_size", "text"]).to_pylist()
            for r, row in enumerate(rows):
                n, text = row["audio_size"], row["text"]
                if not task["min_audio_len"] <= n <= task["max_audio_len"]:
                    continue
                if not text or n / len(text) < 160:  # empty text, too fast
                    continue
                key = (path.relative_to(root).as_posix(), g, r, f"{language}\t{text}")
                items.append((key, n))
    buckets = oracle_bucket_sizes(
        task["min_audio_len"],
        task["max_audio_len"],
        task["max_num_elements"],
        task["num_seqs_multiple_of"],
    )
    return oracle_batches(items, buckets, task["min_audio_len"])


def test_the_plan_oracle_is_the_reference(espeak_root: Path) -> None:
    vectors = json.loads(GOLDEN_VECTORS.read_text())
    for case in vectors["create_bucket_sizes"]:
        got = oracle_bucket_sizes(
            case["min_seq_len"],
            case["max_seq_len"],
            case["max_num_elements_requested"],
            case["num_seqs_multiple_of"],
        )
        assert got == [tuple(b) for b in case["buckets"]], case["count"]
    case = vectors["bucket_by_length"]
    lengths = case["input_lengths_by_index"]
    got = oracle_batches(
        list(enumerate(lengths)), [tuple(b) for b in case["bucket_sizes"]], case["min_data_len"]
    )
    assert got == [[i for i, _ in b] for b in case["output_drop_remainder_false"]]
    golden = json.loads(GOLDEN_PLANS.read_text())
    assert golden["length_batching"].items() <= {**LENGTH_TASK, "drop_remainder": False}.items()
    plan = oracle_plan(espeak_root / "version=0", LENGTH_TASK)
    ids = [[hashlib.sha1(k[3].encode()).hexdigest()[:16] for k in b] for b in plan]
    assert ids == golden["plans"]["length/det"]


def test_small_dataset_with_several_row_groups(small_dataset: Path, espeak_tokenizer) -> None:
    """Files of several row groups (40 + 8 rows): the batches are the reference's (the oracle
    above), keys address the right rows, every example arrives once, and the audio is the
    audio of that key."""
    task = {**LENGTH_TASK, "max_num_elements": 480_000}
    loader = AsrLoader(small_dataset, "train", make_config(**task), espeak_tokenizer)
    batches = list(loader)
    got = [[(k.file, k.row_group, k.row) for k in b.keys] for b in batches]
    assert got == [[k[:3] for k in b] for b in oracle_plan(small_dataset, task)]
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
