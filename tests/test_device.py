"""Which GPU a rank uses: torchrun's LOCAL_RANK unless ``dali_asr.device_id`` says otherwise,
never every rank on GPU 0 (checked on the CPU: the loader resolves the index either way)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MILESTONE_TASK

from dali_asr.config import config_from_dict
from dali_asr.loader import AsrLoader


def _loader(root: Path, tokenizer: Path, **dali: object) -> AsrLoader:
    config = config_from_dict(
        {
            "asr_task_config": MILESTONE_TASK,
            "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
            "dali_asr": {"device": "cpu", **dali},
        }
    )
    return AsrLoader(root, "dev", config, tokenizer)


def test_device_follows_local_rank(
    small_dataset: Path, espeak_tokenizer: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert _loader(small_dataset, espeak_tokenizer).device_id == 3
    monkeypatch.delenv("LOCAL_RANK")
    assert _loader(small_dataset, espeak_tokenizer).device_id == 0


def test_device_id_setting_wins(
    small_dataset: Path, espeak_tokenizer: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert _loader(small_dataset, espeak_tokenizer, device_id=1).device_id == 1


def test_cpu_loader_collates_with_the_numpy_references(
    small_dataset: Path, espeak_tokenizer: Path
) -> None:
    from dali_asr.collate import BatchMaker

    maker = _loader(small_dataset, espeak_tokenizer).batch_maker()
    assert type(maker) is BatchMaker


@pytest.mark.parametrize("fbank", [False, True])
@pytest.mark.parametrize("speed", [False, True])
def test_gpu_graph_is_defined_without_a_gpu(fbank: bool, speed: bool) -> None:
    """The GPU variant of the one graph definition traces here (only building it needs
    CUDA): the same operators with a ``.gpu()`` after decoding."""
    from dali_asr.graph import build_pipeline

    pipe = build_pipeline(
        lambda: [],
        max_batch_size=4,
        num_threads=1,
        device="gpu",
        device_id=0,
        fbank=fbank,
        speed_perturb=speed,
    )
    assert pipe.device_id == 0
