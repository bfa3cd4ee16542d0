"""Config: the reference's defaults, the two YAML forms, strict keys and values."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dali_asr.config import (
    AsrTaskConfig,
    BatchingStrategy,
    LoaderConfig,
    MixtureParquetStorageConfig,
    SyncMode,
    config_from_dict,
    load_config,
)
from dali_asr.errors import ConfigError

SECTIONS_YAML = """\
mixture_parquet_storage_config:
  sync_mode: UNTIL_LAST
  dataset_summary_path: /data/language_distribution_0.tsv
  beta_corpus: 0.5
  beta_language: 0.5
  fragment_streaming:
    seed: 7
asr_task_config:
  min_audio_len: 16_000
  max_audio_len: 480_000
  max_num_elements: 960_000
  num_seqs_multiple_of: 8
  batching_strategy: LENGTH
  example_shuffle_window: 1
  batch_shuffle_window: 1
  normalize_audio: true
dali_asr:
  device: cpu
  num_threads: 3
"""

# Shaped like omnilingual-asr's workflows/recipes/wav2vec2/asr/configs/ctc-finetune.yaml, plus
# the ``common.seed`` of the recipe's defaults.
RECIPE_YAML = """\
model:
  name: "omniASR_CTC_300M"

dataset:
  name: "example_dataset"
  train_split: "train"
  valid_split: "dev"
  storage_mode: "MIXTURE_PARQUET"
  task_mode: "ASR"
  mixture_parquet_storage_config:
    dataset_summary_path: "/path/to/your/dataset/language_distribution_0.tsv"
    beta_corpus: 0.5
    beta_language: 0.5
    fragment_loading:
      cache: True
  asr_task_config:
     min_audio_len: 32_000
     max_audio_len: 960_000
     max_num_elements: 960_000
     batch_shuffle_window: 1
     normalize_audio: true
     example_shuffle_window: 1

tokenizer:
  name: "omniASR_tokenizer"

optimizer:
  config:
    lr: 5e-05

trainer:
  freeze_encoder_for_n_steps: 0
  mixed_precision:
    dtype: "torch.bfloat16"
  grad_accumulation:
    num_batches: 4

regime:
  num_steps: 20_000
  validate_after_n_steps: 0
  validate_every_n_steps: 1000
  checkpoint_every_n_steps: 1000
  publish_metrics_every_n_steps: 200

common:
  seed: 1234
"""


def write_yaml(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_error(doc: dict[str, Any]) -> str:
    """The message of the ConfigError that ``doc`` raises."""
    with pytest.raises(ConfigError) as info:
        config_from_dict(doc)
    return str(info.value)


# --- defaults ------------------------------------------------------------------------------


def test_asr_task_defaults_are_the_reference_table() -> None:
    # omnilingual-semantics.md §4.1
    t = AsrTaskConfig()
    assert t.min_audio_len == 1
    assert t.max_audio_len == 800_000
    assert t.batching_strategy is BatchingStrategy.LENGTH
    assert t.batch_size == 8
    assert t.num_seqs_multiple_of == 8
    assert t.max_num_elements == 3_200_000
    assert t.max_bucket_size is None
    assert t.drop_remainder is False
    assert t.filter_long_text_threshold is None
    assert t.remove_unknown is False
    assert t.min_samples_per_char == 160
    assert t.normalize_audio is False
    assert t.use_fbank is False
    assert t.spec_aug_p is None
    assert (t.spec_aug_freq_mask_param, t.spec_aug_time_mask_param) == (80, 80)
    assert t.unified_audio_feature_keys is True
    assert t.example_shuffle_window == 0
    assert t.batch_shuffle_window == 1000
    assert t.npc == 10
    assert t.seed == 2
    assert t.no_padding is False
    assert t.max_num_batches is None
    assert t.num_prefetch == 4


def test_storage_defaults_are_the_reference_table() -> None:
    # omnilingual-semantics.md §3.1
    s = MixtureParquetStorageConfig()
    assert s.sync_batches is True
    assert s.sync_mode is SyncMode.UNTIL_FIRST
    assert s.dataset_summary_path is None
    assert (s.beta_corpus, s.beta_language) == (None, None)
    assert (s.pa_cpu_count, s.max_workers, s.num_prefetch) == (20, 30, 1)
    assert s.sampling_seed == 261
    fs = s.fragment_streaming
    assert fs.parquet_path == ""
    assert fs.filesystem is None
    assert fs.partition_filters is None
    assert fs.split_to_row_groups is True
    assert fs.seed == 2
    assert fs.fragment_shuffle_window == 0
    assert fs.nb_epochs is None
    assert (fs.limit.fraction_of_files, fs.limit.nb_files) == (None, None)
    assert (fs.limit.nb_fragments, fs.limit.nb_rows) == (None, None)
    fl = s.fragment_loading
    assert (fl.rename_columns, fl.add_fragment_traces, fl.filters) == (True, False, None)
    assert (fl.drop_null, fl.min_batch_size) == (False, 1)
    assert (fl.non_deterministic_read, fl.use_threads) == (False, False)
    assert (fl.nb_prefetch, fl.num_parallel_fragments) == (1, 1)
    # the one deliberate difference (README): the reference defaults to a mapped row-group copy
    assert (fl.cache, fl.cache_dir) == (False, None)


def test_no_file_and_an_empty_file_give_the_defaults(tmp_path: Path) -> None:
    assert load_config(None) == LoaderConfig()
    assert load_config(write_yaml(tmp_path, "")) == LoaderConfig()
    assert LoaderConfig().output_dtype == "float32"


# --- the two YAML forms --------------------------------------------------------------------


def test_sections_yaml(tmp_path: Path) -> None:
    cfg = load_config(write_yaml(tmp_path, SECTIONS_YAML))
    t = cfg.asr_task_config
    assert (t.min_audio_len, t.max_audio_len, t.max_num_elements) == (16_000, 480_000, 960_000)
    assert t.num_seqs_multiple_of == 8
    assert (t.example_shuffle_window, t.batch_shuffle_window) == (1, 1)
    assert t.normalize_audio is True
    assert t.batching_strategy is BatchingStrategy.LENGTH
    s = cfg.mixture_parquet_storage_config
    assert s.sync_mode is SyncMode.UNTIL_LAST
    assert s.dataset_summary_path == "/data/language_distribution_0.tsv"
    assert (s.beta_corpus, s.beta_language) == (0.5, 0.5)
    assert s.fragment_streaming.seed == 7
    assert (cfg.dali_asr.device, cfg.dali_asr.num_threads) == ("cpu", 3)
    # untouched keys keep their defaults
    assert t.min_samples_per_char == 160
    assert s.sampling_seed == 261


def test_whole_recipe(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="dali_asr"):
        cfg = load_config(write_yaml(tmp_path, RECIPE_YAML))
    t = cfg.asr_task_config
    assert (t.min_audio_len, t.max_audio_len, t.max_num_elements) == (32_000, 960_000, 960_000)
    assert (t.example_shuffle_window, t.batch_shuffle_window) == (1, 1)
    assert t.normalize_audio is True
    assert t.seed == 1234  # common.seed
    s = cfg.mixture_parquet_storage_config
    assert s.dataset_summary_path == "/path/to/your/dataset/language_distribution_0.tsv"
    assert (s.beta_corpus, s.beta_language) == (0.5, 0.5)
    assert s.fragment_loading.cache is True
    assert s.sync_mode is SyncMode.UNTIL_FIRST
    assert (cfg.train_split, cfg.valid_split) == ("train", "dev")
    assert cfg.dali_asr.dtype == "bfloat16"
    assert cfg.output_dtype == "bfloat16"

    # exactly one log line: the info line naming the ignored recipe sections
    assert [r.levelno for r in caplog.records] == [logging.INFO], caplog.text
    message = caplog.records[0].getMessage()
    assert "not read" in message
    for section in ("model", "tokenizer", "optimizer", "trainer", "regime"):
        assert section in message
    for read in ("dataset", "common"):
        assert read not in message


def test_recipe_seed_does_not_override_the_task_seed() -> None:
    cfg = config_from_dict({"dataset": {"asr_task_config": {"seed": 5}}, "common": {"seed": 1234}})
    assert cfg.asr_task_config.seed == 5


def test_recipe_dali_asr_section_overrides_the_recipe_dtype() -> None:
    cfg = config_from_dict(
        {
            "dataset": {},
            "trainer": {"mixed_precision": {"dtype": "torch.bfloat16"}},
            "dali_asr": {"dtype": "float32"},
        }
    )
    assert cfg.dali_asr.dtype == "float32"


def test_recipe_float16_dtype() -> None:
    cfg = config_from_dict(
        {"dataset": {}, "trainer": {"mixed_precision": {"dtype": "torch.float16"}}}
    )
    assert cfg.output_dtype == "float16"


def test_storage_modes() -> None:
    config_from_dict({"dataset": {"storage_mode": "MANIFEST"}})
    config_from_dict({"dataset": {"storage_mode": "MIXTURE_PARQUET"}})
    message = config_error({"dataset": {"storage_mode": "HUGGINGFACE"}})
    assert "dataset.storage_mode" in message
    assert "MANIFEST" in message


# --- values as the reference writes them ---------------------------------------------------


def test_numbers_with_underscores(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        """\
        asr_task_config:
          max_audio_len: 1_600_000
          max_num_elements: 6_400_000
        mixture_parquet_storage_config:
          pa_cpu_count: 1_0
        """,
    )
    cfg = load_config(path)
    assert cfg.asr_task_config.max_audio_len == 1_600_000
    assert cfg.asr_task_config.max_num_elements == 6_400_000
    assert cfg.mixture_parquet_storage_config.pa_cpu_count == 10


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("batching_strategy", "LENGTH", BatchingStrategy.LENGTH),
        ("batching_strategy", "STATIC", BatchingStrategy.STATIC),
        ("batching_strategy", '"STATIC"', BatchingStrategy.STATIC),
    ],
)
def test_batching_strategy_strings(tmp_path: Path, key: str, text: str, expected: Any) -> None:
    cfg = load_config(write_yaml(tmp_path, f"asr_task_config:\n  {key}: {text}\n"))
    assert cfg.asr_task_config.batching_strategy is expected


@pytest.mark.parametrize("text", ["UNTIL_LAST", "UNTIL_FIRST"])
def test_sync_mode_strings(tmp_path: Path, text: str) -> None:
    cfg = load_config(
        write_yaml(tmp_path, f"mixture_parquet_storage_config:\n  sync_mode: {text}\n")
    )
    assert cfg.mixture_parquet_storage_config.sync_mode is SyncMode(text)


def test_bad_enum_value_names_the_key_and_the_choices() -> None:
    message = config_error({"asr_task_config": {"batching_strategy": "DYNAMIC"}})
    assert "asr_task_config.batching_strategy" in message
    assert "LENGTH" in message and "STATIC" in message
    message = config_error({"mixture_parquet_storage_config": {"sync_mode": "UNTIL_NEVER"}})
    assert "mixture_parquet_storage_config.sync_mode" in message
    assert "UNTIL_LAST" in message


# --- unknown keys --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"asr_task_config": {"bucket_size": 3}}, "asr_task_config.bucket_size"),
        (
            {"mixture_parquet_storage_config": {"fragment_streaming": {"colour": 1}}},
            "mixture_parquet_storage_config.fragment_streaming.colour",
        ),
        (
            {"mixture_parquet_storage_config": {"fragment_loading": {"colour": 1}}},
            "mixture_parquet_storage_config.fragment_loading.colour",
        ),
        ({"dali_asr": {"threads": 4}}, "dali_asr.threads"),
    ],
)
def test_unknown_key_names_the_full_dotted_key(doc: dict[str, Any], key: str) -> None:
    assert key in config_error(doc)


def test_misspelt_key_has_a_did_you_mean_hint() -> None:
    message = config_error({"asr_task_config": {"max_audio_lenght": 480_000}})
    assert "asr_task_config.max_audio_lenght" in message
    assert "did you mean asr_task_config.max_audio_len?" in message
    message = config_error({"mixture_parquet_storage_config": {"fragment_streaming": {"sede": 3}}})
    assert "did you mean mixture_parquet_storage_config.fragment_streaming.seed?" in message


def test_unknown_top_level_section() -> None:
    message = config_error({"asr_task_cfg": {}})
    assert "asr_task_cfg" in message


def test_unknown_key_in_a_recipe_dataset_section() -> None:
    assert "min_audio_lenn" in config_error({"dataset": {"asr_task_config": {"min_audio_lenn": 3}}})
    assert "bogus" in config_error({"dataset": {"bogus": 1}})


def test_unknown_key_in_a_yaml_file(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "asr_task_config:\n  min_audio_lenn: 16_000\n")
    with pytest.raises(ConfigError, match=r"asr_task_config\.min_audio_lenn"):
        load_config(path)


# --- wrong types and impossible values -----------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"asr_task_config": {"max_audio_len": "480000"}}, "asr_task_config.max_audio_len"),
        ({"asr_task_config": {"max_audio_len": 4.8e5}}, "asr_task_config.max_audio_len"),
        ({"asr_task_config": {"batch_size": True}}, "asr_task_config.batch_size"),
        ({"asr_task_config": {"normalize_audio": "yes"}}, "asr_task_config.normalize_audio"),
        ({"asr_task_config": {"use_fbank": 1}}, "asr_task_config.use_fbank"),
        ({"asr_task_config": {"seed": None}}, "asr_task_config.seed"),
        ({"asr_task_config": {"spec_aug_p": "often"}}, "asr_task_config.spec_aug_p"),
        (
            {"mixture_parquet_storage_config": {"beta_corpus": "half"}},
            "mixture_parquet_storage_config.beta_corpus",
        ),
        (
            {"mixture_parquet_storage_config": {"fragment_streaming": {"seed": "2"}}},
            "mixture_parquet_storage_config.fragment_streaming.seed",
        ),
        ({"asr_task_config": [1, 2]}, "asr_task_config"),
        ({"dali_asr": "cpu"}, "dali_asr"),
        ({"dali_asr": {"num_threads": "two"}}, "dali_asr.num_threads"),
    ],
)
def test_wrong_type_names_the_key(doc: dict[str, Any], key: str) -> None:
    assert key in config_error(doc)


def test_optional_ints_accept_null() -> None:
    cfg = config_from_dict({"asr_task_config": {"max_bucket_size": None, "max_num_batches": 3}})
    assert cfg.asr_task_config.max_bucket_size is None
    assert cfg.asr_task_config.max_num_batches == 3


def test_keys_whose_default_is_null_accept_null() -> None:
    """The defaults written out, as a dump of the reference's config has them: the untyped
    (``Any``) keys too."""
    storage = {
        "fragment_streaming": {"filesystem": None},
        "fragment_loading": {"columns": None},
    }
    cfg = config_from_dict({"mixture_parquet_storage_config": storage})
    assert cfg == config_from_dict({})


def test_float_keys_accept_ints() -> None:
    cfg = config_from_dict({"mixture_parquet_storage_config": {"beta_corpus": 1}})
    assert cfg.mixture_parquet_storage_config.beta_corpus == 1.0


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        (
            {"asr_task_config": {"max_audio_len": 480_000, "max_num_elements": 400_000}},
            "asr_task_config.max_num_elements",
        ),
        (
            {"asr_task_config": {"example_shuffle_window": -1}},
            "asr_task_config.example_shuffle_window",
        ),
        ({"asr_task_config": {"batch_shuffle_window": -5}}, "asr_task_config.batch_shuffle_window"),
        ({"asr_task_config": {"min_audio_len": 0}}, "asr_task_config.min_audio_len"),
        (
            {"asr_task_config": {"min_audio_len": 20_000, "max_audio_len": 10_000}},
            "asr_task_config.max_audio_len",
        ),
        ({"asr_task_config": {"num_seqs_multiple_of": 0}}, "asr_task_config.num_seqs_multiple_of"),
        (
            {"asr_task_config": {"batching_strategy": "STATIC", "batch_size": 0}},
            "asr_task_config.batch_size",
        ),
        ({"dali_asr": {"device": "tpu"}}, "dali_asr.device"),
        ({"dali_asr": {"num_threads": 0}}, "dali_asr.num_threads"),
        ({"dali_asr": {"on_bad_audio": "ignore"}}, "dali_asr.on_bad_audio"),
        ({"dali_asr": {"dtype": "float64"}}, "dali_asr.dtype"),
        ({"dali_asr": {"pad_to_multiple": 0}}, "dali_asr.pad_to_multiple"),
    ],
)
def test_impossible_value_names_the_key(doc: dict[str, Any], key: str) -> None:
    assert key in config_error(doc)


def test_static_batching_ignores_the_length_budget() -> None:
    # max_num_elements only matters for LENGTH batching
    cfg = config_from_dict(
        {"asr_task_config": {"batching_strategy": "STATIC", "max_num_elements": 1}}
    )
    assert cfg.asr_task_config.batching_strategy is BatchingStrategy.STATIC


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write_yaml(tmp_path, "asr_task_config: [1,\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write_yaml(tmp_path, "- 1\n- 2\n"))


# --- known keys that dali-asr does not implement -------------------------------------------


def test_not_implemented_key_is_a_warning_naming_it(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="dali_asr"):
        cfg = config_from_dict({"asr_task_config": {"spec_aug_p": 0.5}})
    assert cfg.asr_task_config.spec_aug_p == 0.5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "asr_task_config.spec_aug_p" in warnings[0]


def test_nested_not_implemented_key_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dali_asr"):
        config_from_dict(
            {"mixture_parquet_storage_config": {"fragment_loading": {"filters": "pc.field('x')"}}}
        )
    assert any(
        "mixture_parquet_storage_config.fragment_loading.filters" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
    )


def test_limit_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dali_asr"):
        config_from_dict(
            {"mixture_parquet_storage_config": {"fragment_streaming": {"limit": {"nb_files": 2}}}}
        )
    assert any("fragment_streaming.limit" in r.getMessage() for r in caplog.records)


def test_default_valued_keys_are_silent(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="dali_asr"):
        config_from_dict({"asr_task_config": {"spec_aug_p": None, "npc": 10}})
    assert not caplog.records


def test_no_effect_key_is_an_info_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="dali_asr"):
        config_from_dict({"asr_task_config": {"npc": 4}})
    messages = [r.getMessage() for r in caplog.records]
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "asr_task_config.npc" in messages[0]


def test_string_key_with_a_number_names_the_key() -> None:
    message = config_error({"mixture_parquet_storage_config": {"dataset_summary_path": 5}})
    assert "mixture_parquet_storage_config.dataset_summary_path" in message


def test_unknown_recipe_key_names_its_full_dotted_path() -> None:
    assert "dataset.asr_task_config.min_audio_lenn" in config_error(
        {"dataset": {"asr_task_config": {"min_audio_lenn": 3}}}
    )
    assert "dataset.bogus" in config_error({"dataset": {"bogus": 1}})
