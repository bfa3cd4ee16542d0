"""Omnilingual config keys dali-asr accepts without acting on them, and how it says so."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

# Keys that are accepted, with a warning, because dali-asr does not implement them (yet), and
# what to use instead where there is something.
NOT_IMPLEMENTED = {
    "asr_task_config.spec_aug_p": "dali_asr.spec_augment masks fbank on the GPU instead",
    "asr_task_config.no_padding": "",
    "mixture_parquet_storage_config.fragment_streaming.limit": "",
    "mixture_parquet_storage_config.fragment_streaming.files_circular_shift": "",
    "mixture_parquet_storage_config.fragment_loading.filters": "",
}

# fairseq2 tuning knobs with no meaning in dali-asr's design; accepted and reported once.
NO_EFFECT = {
    "asr_task_config.npc",
    "asr_task_config.unified_audio_feature_keys",
    "asr_task_config.spec_aug_freq_mask_param",
    "asr_task_config.spec_aug_time_mask_param",
    "mixture_parquet_storage_config.sync_batches",
    "mixture_parquet_storage_config.num_prefetch",
    "mixture_parquet_storage_config.split_column",
    "mixture_parquet_storage_config.parquet_path_name",
    "mixture_parquet_storage_config.fragment_streaming.parquet_path",
    "mixture_parquet_storage_config.fragment_streaming.filesystem",
    "mixture_parquet_storage_config.fragment_streaming.name",
    "mixture_parquet_storage_config.fragment_streaming.weight",
    "mixture_parquet_storage_config.fragment_streaming.split_to_row_groups",
    "mixture_parquet_storage_config.fragment_streaming.fragment_shuffle_window",
    "mixture_parquet_storage_config.fragment_streaming.nb_epochs",
}
NO_EFFECT_PREFIXES = tuple(
    f"mixture_parquet_storage_config.fragment_loading.{key}"
    for key in (
        "columns",
        "rename_columns",
        "add_fragment_traces",
        "drop_null",
        "min_batch_size",
        "non_deterministic_read",
        "num_parallel_fragments",
    )
)


def report_status(name: str, value: Any, default: Any) -> None:
    """Log once per key set away from its default: not implemented (warning) or no effect."""
    if value == default:
        return
    name = name.removeprefix("dataset.")
    if name in NOT_IMPLEMENTED:
        hint = f" ({NOT_IMPLEMENTED[name]})" if NOT_IMPLEMENTED[name] else ""
        log.warning("config key %s is not implemented by dali-asr and is ignored%s", name, hint)
    elif name in NO_EFFECT or name.startswith(NO_EFFECT_PREFIXES):
        log.info("config key %s has no effect in dali-asr (a fairseq2 tuning knob)", name)


def close_match(key: str, candidates: dict[str, Any]) -> str | None:
    """The known key a misspelt ``key`` most resembles, for the error's suggestion."""
    import difflib

    match = difflib.get_close_matches(key, list(candidates), n=1)
    return match[0] if match else None
