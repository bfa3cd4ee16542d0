"""The parts of dali_asr.fairseq2 that need no fairseq2, run everywhere (CI included): the
package imports without fairseq2, and config objects convert field by field into dali-asr's."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from dali_asr.config import (
    AsrTaskConfig,
    BatchingStrategy,
    MixtureParquetStorageConfig,
    SyncMode,
)
from dali_asr.errors import ConfigError
from dali_asr.fairseq2.configs import loader_config


def test_importing_the_package_does_not_import_fairseq2() -> None:
    code = "import sys, dali_asr.fairseq2; print('fairseq2' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_config_objects_convert_field_by_field_and_stay_unchanged() -> None:
    storage = MixtureParquetStorageConfig(sync_mode=SyncMode.UNTIL_LAST, sampling_seed=5)
    storage.fragment_streaming.partition_filters = ['pc.field("corpus") == "a"']
    task = AsrTaskConfig(
        batching_strategy=BatchingStrategy.STATIC, batch_size=3, max_audio_len=480_000, seed=9
    )
    config = loader_config(storage, task, {"num_threads": 3}, torch.bfloat16, torch.device("cpu"))
    assert config.asr_task_config == task
    assert config.mixture_parquet_storage_config == storage
    assert config.mixture_parquet_storage_config is not storage
    assert (config.dali_asr.num_threads, config.dali_asr.dtype) == (3, "bfloat16")
    assert config.dali_asr.device == "cpu"  # auto, on a CPU gang
    assert task.seed == 9 and storage.sampling_seed == 5


def test_mappings_convert_and_the_recipe_dtype_wins() -> None:
    config = loader_config(
        {"sync_mode": "UNTIL_LAST"},
        {"batching_strategy": "LENGTH", "max_num_elements": 960_000, "max_audio_len": 480_000},
        {"dtype": "float16"},
        torch.float32,
        torch.device("cpu"),
    )
    assert config.mixture_parquet_storage_config.sync_mode is SyncMode.UNTIL_LAST
    assert config.dali_asr.dtype == "float32"


def test_unknown_keys_and_dtypes_are_errors_naming_them() -> None:
    with pytest.raises(ConfigError, match=r"asr_task_config\.max_audio_length"):
        loader_config(None, {"max_audio_length": 1}, None, torch.float32, torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"dtype=torch\.float64"):
        loader_config(None, None, None, torch.float64, torch.device("cpu"))
    with pytest.raises(ConfigError, match="expected Omnilingual's config dataclass"):
        loader_config("LENGTH", None, None, torch.float32, torch.device("cpu"))
