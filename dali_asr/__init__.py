"""dali-asr: a GPU-native data loader for speech recognition training on NVIDIA DALI."""

from __future__ import annotations

from dali_asr.batch import Seq2SeqBatch
from dali_asr.config import LoaderConfig, config_from_dict, load_config
from dali_asr.errors import ConfigError, DatasetError
from dali_asr.keys import ExampleKey
from dali_asr.loader import AsrLoader
from dali_asr.report import SkipReport

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
