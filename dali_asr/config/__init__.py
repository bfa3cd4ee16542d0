"""Configuration: the schema (dataclasses with Omnilingual's keys and defaults, and dali-asr's
own ``dali_asr`` section) and reading it from YAML or a dict."""

from __future__ import annotations

from dali_asr.config.loading import config_from_dict, load_config
from dali_asr.config.schema import (
    AsrTaskConfig,
    BatchingStrategy,
    DaliAsrSettings,
    FragmentLoadingConfig,
    FragmentStreamingConfig,
    LoaderConfig,
    MixtureParquetStorageConfig,
    ParquetDatasetLimitOptions,
    SpecAugmentSettings,
    SyncMode,
)
from dali_asr.errors import ConfigError

__all__ = [
    "AsrTaskConfig",
    "BatchingStrategy",
    "ConfigError",
    "DaliAsrSettings",
    "FragmentLoadingConfig",
    "FragmentStreamingConfig",
    "LoaderConfig",
    "MixtureParquetStorageConfig",
    "ParquetDatasetLimitOptions",
    "SpecAugmentSettings",
    "SyncMode",
    "config_from_dict",
    "load_config",
]
