"""Reading a configuration: a YAML file holds either the sections at top level, or a whole
Omnilingual recipe, from which ``dataset.*``, ``common.seed`` and
``trainer.mixed_precision.dtype`` are read. Unknown keys are errors with a did-you-mean hint;
known keys dali-asr does not act on are reported (``keys.py``)."""

from __future__ import annotations

import dataclasses
import logging
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from dali_asr.config.keys import close_match, report_status
from dali_asr.config.schema import (
    AsrTaskConfig,
    DaliAsrSettings,
    LoaderConfig,
    MixtureParquetStorageConfig,
)
from dali_asr.errors import ConfigError

log = logging.getLogger(__name__)


_DATASET_KEYS = {
    "name",
    "family",
    "config_overrides",
    "path",
    "train_split",
    "valid_split",
    "storage_mode",
    "task_mode",
    "manifest_storage_config",
    "mixture_parquet_storage_config",
    "asr_task_config",
}
_SECTIONS = ("asr_task_config", "mixture_parquet_storage_config", "dali_asr")


def load_config(path: str | Path | None = None) -> LoaderConfig:
    """Read a YAML file (sections or a whole Omnilingual recipe); None gives the defaults."""
    if path is None:
        cfg = LoaderConfig()
        cfg.validate()
        return cfg
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise ConfigError(f"config file {path}: expected a mapping at top level")
    return config_from_dict(doc, source=str(path))


def config_from_dict(doc: dict[str, Any], source: str = "<dict>") -> LoaderConfig:
    """Build a LoaderConfig from a parsed YAML document (see load_config)."""
    doc = dict(doc)
    sections: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    where = ""
    if "dataset" in doc:
        sections, extra = _from_recipe(doc, source)
        where = "dataset."
    else:
        unknown = sorted(k for k in doc if k not in _SECTIONS)
        if unknown:
            raise ConfigError(
                f"{source}: unknown top-level key(s) {', '.join(unknown)}; expected "
                f"{', '.join(_SECTIONS)} or a recipe with a 'dataset' section"
            )
        sections = doc
    own = sections.get("dali_asr")
    if own is not None:
        if not isinstance(own, dict):
            raise ConfigError(f"{source}: config key dali_asr: expected a mapping, got {own!r}")
        extra = {**extra, **own}
    task = sections.get("asr_task_config")
    auto = isinstance(task, dict) and str(task.get("max_num_elements", "")).lower() == "auto"
    if auto:
        task = {k: v for k, v in task.items() if k != "max_num_elements"}
    cfg = LoaderConfig(
        asr_task_config=_build(AsrTaskConfig, task, f"{where}asr_task_config"),
        mixture_parquet_storage_config=_build(
            MixtureParquetStorageConfig,
            sections.get("mixture_parquet_storage_config"),
            f"{where}mixture_parquet_storage_config",
        ),
        dali_asr=_build(DaliAsrSettings, extra or None, "dali_asr"),
    )
    for key in ("train_split", "valid_split"):
        if key in sections:
            setattr(cfg, key, sections[key])
    if auto:
        cfg.asr_task_config.max_num_elements = "auto"  # the loader resolves it on its device
    cfg.validate()
    return cfg


def _from_recipe(doc: dict[str, Any], source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    dataset = doc.pop("dataset") or {}
    if not isinstance(dataset, dict):
        raise ConfigError(f"{source}: 'dataset' must be a mapping")
    unknown = sorted(set(dataset) - _DATASET_KEYS)
    if unknown:
        names = ", ".join(f"dataset.{k}" for k in unknown)
        raise ConfigError(f"{source}: unknown config key(s) {names}")
    storage_mode = dataset.get("storage_mode", "MIXTURE_PARQUET")
    if storage_mode not in ("MIXTURE_PARQUET", "MANIFEST"):
        raise ConfigError(
            f"{source}: dataset.storage_mode {storage_mode!r} is not supported; expected "
            "MIXTURE_PARQUET or MANIFEST (dali-asr tells them apart by the --data folder)"
        )
    extra: dict[str, Any] = {}
    dtype = ((doc.get("trainer") or {}).get("mixed_precision") or {}).get("dtype")
    if dtype is not None:
        extra["dtype"] = str(dtype).removeprefix("torch.")
    sections: dict[str, Any] = {
        k: dataset[k]
        for k in ("asr_task_config", "mixture_parquet_storage_config", "train_split", "valid_split")
        if k in dataset
    }
    seed = (doc.get("common") or {}).get("seed")
    if seed is not None:
        task = dict(sections.get("asr_task_config") or {})
        task.setdefault("seed", seed)
        sections["asr_task_config"] = task
    own = doc.pop("dali_asr", None)
    if own is not None:
        sections["dali_asr"] = own
    ignored = sorted(k for k in doc if k not in ("common",))
    if ignored:
        log.info("%s: recipe sections %s are not read by dali-asr", source, ", ".join(ignored))
    return sections, extra


def _build(cls: type, values: dict[str, Any] | None, prefix: str) -> Any:
    """Instantiate a config dataclass from a mapping, strictly: unknown keys are errors."""
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise ConfigError(f"config key {prefix}: expected a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}"
        if key not in fields:
            hint = close_match(key, fields)
            suggestion = f" (did you mean {prefix}.{hint}?)" if hint else ""
            raise ConfigError(f"unknown config key {name}{suggestion}")
        default = getattr(cls(), key)
        if dataclasses.is_dataclass(default):
            kwargs[key] = _build(type(default), value, name)
            report_status(name, kwargs[key], default)
            continue
        kwargs[key] = _coerce(name, value, default, fields[key].type)
        report_status(name, kwargs[key], default)
    return cls(**kwargs)


def _coerce(name: str, value: Any, default: Any, annotation: Any) -> Any:
    if isinstance(default, Enum):
        try:
            return type(default)(str(value).upper())
        except ValueError:
            allowed = ", ".join(m.value for m in type(default))
            raise ConfigError(f"config key {name}: {value!r} is not one of {allowed}") from None
    text = str(annotation)
    if value is None:
        if "None" in text or text == "Any" or default is None:  # Any-typed, or null by default
            return None
        raise ConfigError(f"config key {name}: may not be null")
    if isinstance(default, bool) or text.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"config key {name}: expected true or false, got {value!r}")
        return value
    if text.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {name}: expected an integer, got {value!r}")
        return value
    if text.startswith("str") and not isinstance(value, str):
        if not (
            "list" in text and isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            raise ConfigError(f"config key {name}: expected a string, got {value!r}")
        return value
    if text.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {name}: expected a number, got {value!r}")
        return float(value)
    return value
