"""``dali_asr.fairseq2.DaliAsrDataset`` against Omnilingual's ``MixtureParquetAsrDataset`` on
espeak-mini: both built with the reference's ``create_reader`` arguments, read step by step.

Needs fairseq2 0.6 and omnilingual-asr 0.2.0 (``scripts/check_fairseq2.sh``); skipped without.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fairseq2")
pytest.importorskip("omnilingual_asr")

import torch
from fairseq2.datasets import DataReader, Seq2SeqBatch
from helpers.fairseq2_parity import (
    FBANK_RULE,
    WAVEFORM_LIMIT,
    Readers,
    batch_mismatch,
    compare,
    fbank_agrees,
    fbank_figures,
    flat,
    read_steps,
    structure_differences,
)
from omnilingual_asr.datasets.impl.mixture_parquet_asr_dataset import (
    MixtureParquetAsrDataset,
)

from dali_asr.errors import ConfigError
from dali_asr.fairseq2 import DaliAsrDataset, DaliAsrReader

SINGLE_PASS = {"sync_mode": "UNTIL_LAST"}
TASK = {
    "min_audio_len": 16_000,
    "max_audio_len": 480_000,
    "max_num_elements": 960_000,
    "normalize_audio": True,
    "example_shuffle_window": 1,
    "batch_shuffle_window": 1,
}
SHUFFLED = {**TASK, "example_shuffle_window": 32, "batch_shuffle_window": 4, "seed": 7}
STATIC = {**TASK, "batching_strategy": "STATIC", "batch_size": 5}


@pytest.fixture(scope="module")
def readers(espeak_root: Path, espeak_tokenizer: Path) -> Readers:
    return Readers(espeak_root / "version=0", espeak_tokenizer)


@pytest.fixture(scope="module")
def train_stream(espeak_root: Path) -> dict[str, Any]:
    """The shipped recipes' storage settings for a training split (UNTIL_FIRST, the stats TSV
    with beta 0.5 / 0.5)."""
    return {
        "dataset_summary_path": str(espeak_root / "language_distribution_0.tsv"),
        "beta_corpus": 0.5,
        "beta_language": 0.5,
    }


def both(readers: Readers, *args: Any, **kwargs: Any) -> tuple[DataReader, DataReader]:
    return readers.build("dali", *args, **kwargs), readers.build("reference", *args, **kwargs)


def test_single_pass_waveform_equals_the_reference(readers: Readers, f2_report: dict) -> None:
    """LENGTH, example and batch shuffles on, 3 batches a step (the last step short)."""
    ours, theirs = both(readers, "train", SINGLE_PASS, SHUFFLED, num_accumulate=3)
    assert isinstance(ours, DaliAsrReader) and ours.num_accumulate == 3
    figures = compare(read_steps(ours), read_steps(theirs))
    f2_report["single_pass_waveform"] = {**figures, "limit": WAVEFORM_LIMIT}
    assert figures["source_max_abs_diff"] <= WAVEFORM_LIMIT, figures


def test_single_pass_fbank_equals_the_reference(readers: Readers, f2_report: dict) -> None:
    """Everything but the fbank values equal; the values by fbank_agreement's criterion, where
    a cell float32 does not resolve (its mel energy under 1e-8 of the frame's power) holds
    the rounding noise of each side's float32 FFT and is counted, not bounded."""
    task = {**TASK, "use_fbank": True}
    ours, theirs = both(readers, "train", SINGLE_PASS, task, num_accumulate=2)
    a, b = read_steps(ours), read_steps(theirs)
    figures = compare(a, b)
    plain = {**TASK, "normalize_audio": False}
    waves = read_steps(readers.build("dali", "train", SINGLE_PASS, plain, num_accumulate=2))
    fbank = fbank_figures(a, b, waves)
    f2_report["single_pass_fbank"] = {**figures, **fbank, "rule": FBANK_RULE}
    assert fbank_agrees(fbank), fbank


def test_static_batches_equal_the_reference_and_have_its_types(
    readers: Readers, f2_report: dict
) -> None:
    ours, theirs = both(readers, "dev", SINGLE_PASS, STATIC, num_accumulate=2)
    a, b = read_steps(ours), read_steps(theirs)
    assert structure_differences(flat(a)[0], flat(b)[0]) == []
    figures = compare(a, b)
    f2_report["single_pass_static"] = figures
    assert figures["source_max_abs_diff"] <= WAVEFORM_LIMIT


def test_training_stream_in_reference_mode_equals_the_reference_batch_for_batch(
    readers: Readers, train_stream: dict, f2_report: dict
) -> None:
    settings = {"reference_train_stream": True}
    ours = readers.build("dali", "train", train_stream, TASK, num_accumulate=2, settings=settings)
    theirs = readers.build("reference", "train", train_stream, TASK, num_accumulate=2)
    a, b = read_steps(ours, 12), read_steps(theirs, 12)
    assert structure_differences(flat(a)[0], flat(b)[0]) == []
    figures = compare(a, b)
    f2_report["train_stream_reference_mode"] = figures
    assert figures["source_max_abs_diff"] <= WAVEFORM_LIMIT


def test_training_stream_by_default_yields_the_reference_types(
    readers: Readers, train_stream: dict
) -> None:
    """dali-asr's own stream (seeds per partition without the world size, no discarded first
    examples): other batches, the same kind of steps."""
    ours = readers.build("dali", "train", train_stream, TASK, num_accumulate=2)
    theirs = readers.build("reference", "train", train_stream, TASK, num_accumulate=2)
    a, b = read_steps(ours, 4), read_steps(theirs, 4)
    assert [len(s) for s in a] == [len(s) for s in b] == [2] * 4
    for x, y in zip(flat(a), flat(b), strict=True):
        assert structure_differences(x, y) == []


def test_bfloat16_sources_as_the_reference_casts_them(readers: Readers) -> None:
    ours, theirs = both(readers, "dev", SINGLE_PASS, TASK, dtype=torch.bfloat16)
    for x, y in zip(flat(read_steps(ours, 3)), flat(read_steps(theirs, 3)), strict=True):
        assert batch_mismatch(x, y) is None
        assert x.source_seqs.dtype == torch.bfloat16
        a, b = x.source_seqs.float(), y.source_seqs.float()
        # float32 values within 1e-6 may round to neighbouring bfloat16 values
        assert bool(((a - b).abs() <= b.abs() * 2**-7 + 1e-6).all())


def _resumed(
    readers: Readers, k: int, split: str, storage: dict, task: dict, **kwargs: Any
) -> tuple[list, list]:
    """An uninterrupted run's steps after k, and a new reader's after loading the state taken
    after step k (round-tripped through JSON, as a checkpoint might store it)."""
    whole = read_steps(readers.build("dali", split, storage, task, **kwargs), k + 6)
    first = readers.build("dali", split, storage, task, **kwargs)
    read_steps(first, k)
    state = json.loads(json.dumps(first.state_dict()))
    second = readers.build("dali", split, storage, task, **kwargs)
    second.load_state_dict(state)
    return whole[k:], read_steps(second, 6)


def test_state_after_step_k_resumes_at_step_k_plus_1_single_pass(readers: Readers) -> None:
    expected, got = _resumed(readers, 5, "train", SINGLE_PASS, SHUFFLED, num_accumulate=3)
    assert [len(s) for s in got] == [len(s) for s in expected]
    for x, y in zip(flat(got), flat(expected), strict=True):
        assert batch_mismatch(x, y) is None and torch.equal(x.source_seqs, y.source_seqs)


def test_state_after_step_k_resumes_at_step_k_plus_1_training_stream(
    readers: Readers, train_stream: dict
) -> None:
    task = {**TASK, "example_shuffle_window": 16, "batch_shuffle_window": 3}
    expected, got = _resumed(readers, 7, "train", train_stream, task, num_accumulate=2)
    for x, y in zip(flat(got), flat(expected), strict=True):
        assert batch_mismatch(x, y) is None and torch.equal(x.source_seqs, y.source_seqs)


def test_end_of_data_stays_until_reset_then_a_new_epoch(readers: Readers) -> None:
    reader = readers.build("dali", "dev", SINGLE_PASS, TASK, num_accumulate=4)
    first = read_steps(reader)
    for _ in range(2):
        with pytest.raises(StopIteration):
            next(reader)
    reader.reset()
    second = read_steps(reader)
    assert [len(s) for s in second] == [len(s) for s in first]
    assert all(batch_mismatch(x, y) is None for x, y in zip(flat(first), flat(second), strict=True))


def test_a_reference_reader_state_is_refused_by_name(readers: Readers) -> None:
    theirs = readers.build("reference", "dev", SINGLE_PASS, TASK)
    next(theirs)
    ours = readers.build("dali", "dev", SINGLE_PASS, TASK)
    with pytest.raises(ConfigError, match="DataPipeline state"):
        ours.load_state_dict(theirs.state_dict())


def test_a_dtype_dali_asr_does_not_make_is_an_error(readers: Readers) -> None:
    with pytest.raises(ConfigError, match=r"dtype=torch.float64.*float32"):
        readers.build("dali", "dev", SINGLE_PASS, TASK, dtype=torch.float64)


def test_the_dataset_is_what_the_recipe_asks_for(espeak_root: Path) -> None:
    """Omnilingual's recipe takes ``context.default_dataset.as_(MixtureParquetAsrDataset)``."""
    dataset = DaliAsrDataset.from_path(espeak_root / "version=0", {"num_threads": 1})
    assert isinstance(dataset, MixtureParquetAsrDataset)
    assert dataset.path == espeak_root / "version=0"


def test_the_extension_registers_the_dataset_family(espeak_root: Path) -> None:
    from fairseq2.composition import _register_library
    from fairseq2.datasets import DatasetFamily
    from fairseq2.runtime.dependency import DependencyContainer
    from importlib_metadata import entry_points

    from dali_asr.fairseq2 import DALI_ASR_DATASET, DaliAsrDatasetConfig

    names = {e.value for e in entry_points(group="fairseq2.extension")}
    assert "dali_asr.fairseq2:setup_fairseq2_extension" in names
    container = DependencyContainer()
    _register_library(container)  # runs every installed extension, as a recipe's start does
    family = container.resolve(DatasetFamily, key=DALI_ASR_DATASET)
    config = DaliAsrDatasetConfig(data=espeak_root / "version=0")
    config.dali_asr.num_threads = 1
    dataset = family.open_custom_dataset(config)
    assert isinstance(dataset, DaliAsrDataset) and dataset.settings["num_threads"] == 1


def test_the_tokenizer_encodes_as_the_recipes_encoder(readers: Readers) -> None:
    from dali_asr.fairseq2 import Fairseq2Tokenizer

    ours = Fairseq2Tokenizer(readers.tokenizer)
    encoder = readers.tokenizer.create_encoder()
    for text in ["hello world", "  ça va  ", "привет", ""]:
        assert ours.encode(text).tolist() == encoder(text).tolist()
    info = readers.tokenizer.vocab_info
    assert (ours.pad_idx, ours.unk_idx, ours.vocab_size) == (info.pad_idx, info.unk_idx, info.size)


def test_batches_are_fairseq2_seq2seq_batches_with_python_lengths(readers: Readers) -> None:
    batch = next(readers.build("dali", "dev", SINGLE_PASS, TASK))[0]
    assert isinstance(batch, Seq2SeqBatch)
    assert all(type(n) is int for n in batch.source_seq_lens)
    extras = batch.example["dali_asr"]  # type: ignore[index]
    assert len(extras["text"]) == len(extras["keys"]) == batch.batch_size
    assert extras["filler"] is False


@pytest.mark.parametrize("sync_mode", ["UNTIL_LAST", "UNTIL_FIRST"])
def test_two_ranks_stop_together_at_the_end_of_a_single_pass(
    readers: Readers, sync_mode: str, tmp_path: Path, f2_report: dict
) -> None:
    """torchrun, 2 CPU ranks on fairseq2's gangs: every rank gets the same number of steps,
    together all of the split's batches, and StopIteration after them."""
    import os
    import socket
    import subprocess
    import sys

    worker = Path(__file__).resolve().parents[1] / "helpers" / "fairseq2_ranks_worker.py"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE"))}
    env["PYTHONPATH"] = os.pathsep.join([str(worker.parent), env.get("PYTHONPATH", "")])
    results = {}
    for which in ("dali", "reference"):
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
            "--master-port", str(port), str(worker), str(readers.data),
            str(readers.tokenizer_path), str(tmp_path), which, sync_mode, json.dumps(TASK),
        ]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        results[which] = [
            json.loads((tmp_path / f"{which}-{sync_mode}-rank{r}.json").read_text())
            for r in range(2)
        ]
    ours = results["dali"]
    alone = sum(
        len(s)
        for s in read_steps(readers.build("dali", "dev", SINGLE_PASS, TASK, num_accumulate=3))
    )
    assert len(ours[0]["steps"]) == len(ours[1]["steps"])
    assert sum(len(s) for r in ours for s in r["steps"]) == alone
    assert all(r["again"] == "StopIteration" for r in ours)
    f2_report[f"two_ranks_{sync_mode}"] = {
        which: [[len(s) for s in r["steps"]] for r in rs] for which, rs in results.items()
    }
