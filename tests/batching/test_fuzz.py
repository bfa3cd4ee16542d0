"""Random inputs (hypothesis): bucketing, the parquet reader and configs raise nothing but
their documented errors, and what succeeds holds its property: bucketing loses nothing, a
schema opens exactly when its columns are Omnilingual's, a config holds the values given,
valid, and round-trips."""

from __future__ import annotations

import dataclasses
from enum import Enum
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import partition_dir, write_parquet
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dali_asr.batching import LengthBucketer, create_bucket_sizes
from dali_asr.config import BatchingStrategy, LoaderConfig, config_from_dict
from dali_asr.errors import ConfigError, DatasetError
from dali_asr.loader import AsrLoader
from dali_asr.storage.discovery import DataFile
from dali_asr.storage.row_groups import ParquetFiles


@settings(max_examples=200, deadline=None)
@given(
    max_seq_len=st.integers(1, 2_000),
    factor=st.integers(1, 40),
    min_seq_len=st.integers(1, 2_000),
    multiple=st.integers(1, 16),
    lengths=st.lists(st.integers(0, 2_500), max_size=300),
    drop=st.booleans(),
)
def test_bucketing_keeps_every_in_range_item(
    max_seq_len: int, factor: int, min_seq_len: int, multiple: int, lengths: list[int], drop: bool
) -> None:
    try:
        sizes = create_bucket_sizes(
            max_num_elements=max_seq_len * factor,
            max_seq_len=max_seq_len,
            min_seq_len=min_seq_len,
            num_seqs_multiple_of=multiple,
        )
    except ValueError:
        assert min_seq_len > max_seq_len
        return
    bucketer: LengthBucketer[int] = LengthBucketer(
        sizes, min_data_len=min_seq_len, drop_remainder=drop
    )
    out = []
    for i, n in enumerate(lengths):
        out.extend(bucketer.push(i, n))
    out.extend(bucketer.flush())
    seen = [i for b in out for i in b]
    assert len(seen) == len(set(seen))
    in_range = {i for i, n in enumerate(lengths) if min_seq_len <= n <= max_seq_len}
    assert set(seen) <= in_range
    if not drop:
        assert set(seen) == in_range
    for b in out:
        assert len(b) * max(lengths[i] for i in b) <= max_seq_len * factor


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=st.binary(max_size=2_000))
def test_random_bytes_as_parquet_are_a_dataset_error(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "x.parquet"
    path.write_bytes(blob)
    files = ParquetFiles([DataFile(path, "x.parquet", "c", "train", "l")])
    with pytest.raises(DatasetError, match=r"x\.parquet"):
        files.check_all()


COLUMN_TYPES = st.sampled_from(
    [
        pa.string(),
        pa.int64(),
        pa.int32(),
        pa.float64(),
        pa.binary(),
        pa.list_(pa.int8()),
        pa.list_(pa.uint8()),
        pa.large_string(),
        pa.bool_(),
    ]
)


ACCEPTED = {
    # Omnilingual's columns: text a string, audio_bytes the file's bytes, audio_size samples.
    "text": [pa.string(), pa.large_string()],
    "audio_bytes": [pa.binary(), pa.list_(pa.int8()), pa.list_(pa.uint8())],
    "audio_size": [pa.int32(), pa.int64()],
}
VALID = {name: types[0] for name, types in ACCEPTED.items()}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    # about one schema in six is valid, so both outcomes are drawn
    types=st.fixed_dictionaries(
        {name: st.one_of(st.sampled_from(ok), COLUMN_TYPES) for name, ok in ACCEPTED.items()}
    ),
    drop=st.one_of(st.none(), st.sampled_from(["text", "audio_bytes", "audio_size"])),
)
@example(types=VALID, drop=None)
@example(types={**VALID, "audio_size": pa.float64()}, drop=None)
@example(types={**VALID, "text": pa.binary()}, drop=None)
def test_random_schemas_open_or_fail_with_a_dataset_error(
    tmp_path_factory: pytest.TempPathFactory, types: dict, drop: str | None
) -> None:
    root = tmp_path_factory.mktemp("schema")
    columns = {name: pa.array([], type=t) for name, t in types.items() if name != drop}
    write_parquet(partition_dir(root, "c", "train", "l") / "p.parquet", pa.table(columns), 10)
    cfg = config_from_dict({"mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"}})
    accepted = ACCEPTED
    wrong = [name for name in accepted if name == drop or types[name] not in accepted[name]]
    try:
        loader = AsrLoader(root, "train", cfg, tokenizer=_char_tokenizer())
    except DatasetError as e:
        assert wrong, f"a valid schema was refused: {e}"
        assert "p.parquet" in str(e)
        assert any(f"column {name!r}" in str(e) for name in wrong), str(e)
        return
    assert not wrong, f"opened with {wrong} missing or mistyped"
    with loader:
        assert len(loader) == 0 and list(loader.plan()) == []  # no rows: an empty epoch


def _char_tokenizer():
    from dali_asr.text import CharTokenizer

    return CharTokenizer.from_texts(["abc"])


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    blobs=st.lists(st.binary(min_size=0, max_size=600), min_size=1, max_size=6),
    magic=st.sampled_from([b"", b"fLaC", b"OggS", b"RIFF\x00\x00\x00\x00WAVE", b"ID3"]),
)
def test_random_audio_bytes_never_end_the_epoch(
    tmp_path_factory: pytest.TempPathFactory, espeak_root: Path, blobs: list[bytes], magic: bytes
) -> None:
    source = (
        espeak_root / "version=0/corpus=espeak_read/split=dev/language=eng_Latn/part-00000.parquet"
    )
    good = pq.read_table(source).slice(0, 4).to_pylist()
    rows = good + [
        {"text": "abc abc", "audio_size": 20_000, "audio_bytes": magic + b} for b in blobs
    ]
    table = pa.table(
        {
            "text": [r["text"] for r in rows],
            "audio_bytes": pa.array(
                [
                    list(
                        np.frombuffer(
                            bytes(r["audio_bytes"])
                            if isinstance(r["audio_bytes"], bytes)
                            else np.asarray(r["audio_bytes"], np.int8).tobytes(),
                            np.int8,
                        )
                    )
                    for r in rows
                ],
                pa.list_(pa.int8()),
            ),
            "audio_size": pa.array([r["audio_size"] for r in rows], pa.int64()),
        }
    )
    root = tmp_path_factory.mktemp("audio")
    write_parquet(partition_dir(root, "c", "dev", "eng_Latn") / "p.parquet", table, 100)
    cfg = config_from_dict(
        {
            "asr_task_config": {
                "min_audio_len": 1,
                "max_audio_len": 480_000,
                "max_num_elements": 960_000,
                "example_shuffle_window": 1,
                "batch_shuffle_window": 1,
                "min_samples_per_char": 0,
            },
            "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
        }
    )
    loader = AsrLoader(root, "dev", cfg, tokenizer=_char_tokenizer())
    delivered = {k.row for b in loader for k in b.keys}
    skipped = {k.row for keys in loader.report.keys.values() for k in keys}
    assert delivered | skipped == set(range(len(rows)))
    assert not delivered & skipped
    assert set(range(4)) <= delivered  # the real clips survive their bad neighbours


CONFIG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**7),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
)
TASK_KEYS = [
    "min_audio_len",
    "max_audio_len",
    "max_num_elements",
    "batch_size",
    "batching_strategy",
    "example_shuffle_window",
    "normalize_audio",
    "max_bucket_size",
    "bogus_key",
]


INT_KEYS = {"min_audio_len", "max_audio_len", "batch_size", "example_shuffle_window"}


def _expected_value(key: str, value: object) -> object:
    """What a loaded config must hold for ``key: value`` (YAML's way of writing it); raises
    ValueError for a value of the wrong kind, which must not load."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if key in INT_KEYS or (key == "max_bucket_size" and value is not None):
        if not is_int:
            raise ValueError(value)
        return value
    if key == "max_bucket_size":
        return None
    if key == "max_num_elements":
        if str(value).lower() == "auto":
            return "auto"
        if not is_int:
            raise ValueError(value)
        return value
    if key == "normalize_audio":
        if not isinstance(value, bool):
            raise ValueError(value)
        return value
    if key == "batching_strategy":
        return BatchingStrategy(str(value).upper())
    raise ValueError(key)  # bogus_key


def _as_document(config: LoaderConfig) -> dict:
    """The config written back as the YAML sections (enums as their names)."""

    def plain(value: object) -> object:
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    whole = plain(dataclasses.asdict(config))
    assert isinstance(whole, dict)
    return {
        key: whole[key] for key in ("asr_task_config", "mixture_parquet_storage_config", "dali_asr")
    }


@settings(max_examples=300, deadline=None)
@given(task=st.dictionaries(st.sampled_from(TASK_KEYS), CONFIG_VALUES, max_size=4))
def test_random_configs_load_or_raise_config_error(task: dict) -> None:
    """A config either loads, holding exactly the values given, valid, and writing it back
    loads the same config; or raises ConfigError. A key that does not exist never loads."""
    try:
        config = config_from_dict({"asr_task_config": task})
    except ConfigError:
        return
    expected = {key: _expected_value(key, value) for key, value in task.items()}
    t = config.asr_task_config
    assert {key: getattr(t, key) for key in task} == expected
    assert t.min_audio_len >= 1 and t.max_audio_len >= t.min_audio_len
    assert t.example_shuffle_window >= 0
    if t.batching_strategy is BatchingStrategy.STATIC:
        assert t.batch_size >= 1
    elif t.max_num_elements != "auto":
        assert isinstance(t.max_num_elements, int) and t.max_num_elements >= t.max_audio_len
    assert config_from_dict(_as_document(config)) == config
