"""dali-asr: a GPU-native data loader for speech recognition training on NVIDIA DALI."""

from __future__ import annotations

from dali_asr.batch import Seq2SeqBatch
from dali_asr.config import ConfigError, LoaderConfig, config_from_dict, load_config
from dali_asr.loader import AsrLoader
from dali_asr.report import ExampleKey, SkipReport
from dali_asr.storage.discovery import DatasetError

__all__ = [
    "AsrLoader",
    "ConfigError",
    "DatasetError",
    "ExampleKey",
    "LoaderConfig",
    "Seq2SeqBatch",
    "SkipReport",
    "config_from_dict",
    "load_config",
]
__version__ = "0.1.0"
