"""Omnilingual's config objects as dali-asr's: ``MixtureParquetStorageConfig`` and
``AsrTaskConfig`` (omnilingual-asr 0.2.0, fields of fairseq2's own dataclasses inside) are read
field by field into the ``LoaderConfig`` that ``AsrLoader`` takes. The keys are the same, so
the conversion goes through ``config_from_dict``: the same type checks, the same warnings for
keys dali-asr does not act on, the same validation as a YAML file gets.

Nothing here imports fairseq2: the objects are read by their dataclass fields and enums by
their names, so dali-asr's own dataclasses convert the same way.
"""

from __future__ import annotations

import dataclasses
import logging
from enum import Enum
from typing import Any

import torch

from dali_asr.config import DaliAsrSettings, LoaderConfig, config_from_dict
from dali_asr.errors import ConfigError

log = logging.getLogger(__name__)

DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
"""The source dtypes dali-asr makes, by the torch dtype a recipe passes to ``create_reader``."""


def plain(value: Any) -> Any:
    """A config value as YAML would hold it: dataclasses as mappings, enums by name."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def section(value: Any, where: str) -> dict[str, Any] | None:
    """One config section (an Omnilingual or dali-asr dataclass, a mapping, or None)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(value)
    raise ConfigError(
        f"{where}: expected Omnilingual's config dataclass (or dali-asr's, or a mapping), got "
        f"{type(value).__name__}"
    )


def settings_dict(settings: DaliAsrSettings | dict[str, Any] | None) -> dict[str, Any]:
    """dali-asr's own section, from its dataclass, a mapping or None (the defaults)."""
    if settings is None:
        return {}
    if isinstance(settings, DaliAsrSettings):
        return plain(settings)
    if isinstance(settings, dict):
        return dict(settings)
    raise ConfigError(
        f"dali_asr settings: expected DaliAsrSettings, a mapping or None, got "
        f"{type(settings).__name__}"
    )


def dtype_name(dtype: torch.dtype) -> str:
    """The ``dali_asr.dtype`` of a torch dtype, or a ConfigError naming the ones dali-asr makes."""
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ConfigError(
            f"create_reader(dtype={dtype}): dali-asr makes sources in "
            f"{', '.join(str(d) for d in DTYPES)}"
        ) from None


def loader_config(
    storage_config: Any,
    task_config: Any,
    settings: DaliAsrSettings | dict[str, Any] | None,
    dtype: torch.dtype,
    device: torch.device,
) -> LoaderConfig:
    """The LoaderConfig of one ``create_reader`` call.

    The config objects are read, never changed: the recipe hands the same objects to its
    validation readers after changing a few fields (and the reference itself bumps seeds in
    them), so each call converts what it is given at that moment. ``dtype`` is the recipe's
    (its mixed-precision dtype); ``device`` is the gang's: with ``dali_asr.device: auto`` the
    GPU path runs when the gang's device is a CUDA device, on that device.
    """
    own = settings_dict(settings)
    wanted = dtype_name(dtype)
    if own.get("dtype") not in (None, wanted):
        log.warning(
            "dali_asr.dtype %s is overridden by create_reader(dtype=%s), as the reference "
            "casts its sources to the recipe's dtype",
            own["dtype"],
            dtype,
        )
    own["dtype"] = wanted
    if own.get("device", "auto") == "auto":
        own["device"] = "gpu" if device.type == "cuda" else "cpu"
    if own["device"] == "gpu" and own.get("device_id") is None and device.type == "cuda":
        own["device_id"] = device.index if device.index is not None else torch.cuda.current_device()
    storage = section(storage_config, "mixture_parquet_storage_config")
    if storage is not None and isinstance(storage.get("fragment_loading"), dict):
        # Omnilingual's storage replaces this with its own schema (LangASRSchema) whatever it
        # holds; dali-asr reads the same columns
        storage["fragment_loading"].pop("columns", None)
    doc = {
        "mixture_parquet_storage_config": storage,
        "asr_task_config": section(task_config, "asr_task_config"),
        "dali_asr": own,
    }
    return config_from_dict({k: v for k, v in doc.items() if v is not None}, "create_reader")
