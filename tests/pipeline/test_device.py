"""Which GPU a rank uses: ``dali_asr.device_id``, else torchrun's LOCAL_RANK modulo the visible
GPUs, else the current device; never every rank on GPU 0 (checked on the CPU: the loader
resolves the index either way, and the rule is a pure function)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MILESTONE_TASK

from dali_asr.config import config_from_dict
from dali_asr.errors import ConfigError
from dali_asr.loader import AsrLoader
from dali_asr.pipeline.cuda_env import choose_device_index, cufft_libraries


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


@pytest.mark.parametrize(
    ("configured", "local_rank", "count", "current", "expected"),
    [
        (None, "3", 8, 0, 3),  # torchrun on an 8-GPU node
        (None, "3", 1, 0, 0),  # one GPU per task (CUDA_VISIBLE_DEVICES): every rank's is 0
        (None, "5", 4, 0, 1),  # two nodes' worth of local ranks on 4 GPUs
        (None, None, 4, 2, 2),  # no torchrun: the device torch.cuda.set_device chose
        (None, "", 4, 2, 2),
        (1, "3", 4, 0, 1),  # the setting wins
        (None, "3", 0, 0, 3),  # no GPU: the index is only recorded
        (None, None, 0, 0, 0),
    ],
)
def test_device_index_rule(
    configured: int | None, local_rank: str | None, count: int, current: int, expected: int
) -> None:
    assert choose_device_index(configured, local_rank, count, current) == expected


def test_device_id_beyond_the_visible_gpus_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"dali_asr.device_id: 2.*sees 1 CUDA device"):
        choose_device_index(2, None, 1, 0)


def test_cufft_is_found_in_nvidia_wheel_folders(tmp_path: Path) -> None:
    """The CUDA 12 and CUDA 13 wheels' layouts; cufftw and fully versioned names are not
    what DALI opens."""
    for rel in (
        "cufft/lib/libcufft.so.11",
        "cufft/lib/libcufftw.so.11",
        "cu13/lib/libcufft.so.12",
        "cu13/lib/libcufft.so.12.0.0",
        "dali/libdali.so",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in cufft_libraries([tmp_path])]
    assert found == ["cu13/lib/libcufft.so.12", "cufft/lib/libcufft.so.11"]


def test_cpu_loader_collates_with_the_numpy_references(
    small_dataset: Path, espeak_tokenizer: Path
) -> None:
    from dali_asr.pipeline.collate import BatchMaker

    maker = _loader(small_dataset, espeak_tokenizer).batch_maker()
    assert type(maker) is BatchMaker


@pytest.mark.parametrize("fbank", [False, True])
@pytest.mark.parametrize("speed", [False, True])
def test_gpu_graph_is_defined_without_a_gpu(fbank: bool, speed: bool) -> None:
    """The GPU variant of the one graph definition traces here (only building it needs
    CUDA): the same operators with a ``.gpu()`` after decoding."""
    from dali_asr.pipeline.graph import build_pipeline

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


def test_gpu_graph_keeps_the_window_on_the_gpu() -> None:
    """The fbank's Povey window is a constant made on the GPU (once), not a CPU constant copied
    to the GPU every iteration; the audio work after the decoder all runs there. (Reads the
    traced graph through DALI's private ``_build_graph``/``_ops``.)"""
    from dali_asr.pipeline.graph import build_pipeline

    pipe = build_pipeline(
        lambda: [], max_batch_size=4, num_threads=1, device="gpu", device_id=0, fbank=True
    )
    if not hasattr(pipe, "_build_graph"):
        pytest.skip("this DALI has no _build_graph to inspect")
    pipe._build_graph()
    ops = {
        (getattr(op._op, "schema_name", type(op._op).__name__), op._op.device) for op in pipe._ops
    }
    assert ("Constant", "gpu") in ops and ("Constant", "cpu") not in ops, sorted(ops)
    for name in ("AudioResample", "PreemphasisFilter", "Spectrogram", "Slice", "Cat"):
        assert (name, "gpu") in ops and (name, "cpu") not in ops, name
