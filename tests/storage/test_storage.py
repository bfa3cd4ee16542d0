"""Storage: dataset root, split discovery, schema checks, row groups and the audio column."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SMALL_ROW_GROUP_SIZE, partition_dir, read_espeak_rows, write_parquet

from dali_asr.config import LoaderConfig, config_from_dict
from dali_asr.errors import DatasetError
from dali_asr.loader import AsrLoader
from dali_asr.storage import row_groups
from dali_asr.storage.discovery import discover_split, list_files, parse_split, resolve_dataset_root
from dali_asr.storage.row_groups import AUDIO, LENGTH, TEXT, ParquetFiles, RowGroupRef

GOOD_FILE = "corpus=c/split=train/language=eng_Latn/part-00000.parquet"
BAD_FILE = "corpus=c/split=train/language=fra_Latn/part-00000.parquet"


@pytest.fixture(scope="module")
def real_rows(espeak_root: Path) -> pa.Table:
    """Ten real rows (text, audio_bytes list<int8>, audio_size) of espeak-mini."""
    return read_espeak_rows("espeak_fast", "train", "eng_Latn").slice(0, 10)


def single_pass_config() -> LoaderConfig:
    return config_from_dict({"mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"}})


def touch_dataset(root: Path, parts: list[tuple[str, str, str]], table: pa.Table) -> Path:
    """A dataset with ``table`` in every (corpus, split, language) partition."""
    for corpus, split, language in parts:
        write_parquet(partition_dir(root, corpus, split, language) / "part-00000.parquet", table, 5)
    return root


# --- resolve_dataset_root ------------------------------------------------------------------


def test_root_itself(small_dataset: Path) -> None:
    assert resolve_dataset_root(small_dataset) == small_dataset
    assert resolve_dataset_root(str(small_dataset)) == small_dataset


def test_single_version_folder_is_descended_into(small_dataset: Path, espeak_root: Path) -> None:
    assert resolve_dataset_root(small_dataset.parent) == small_dataset
    assert resolve_dataset_root(espeak_root) == espeak_root / "version=0"


def test_several_versions_is_an_error_listing_them(tmp_path: Path, real_rows: pa.Table) -> None:
    for version in ("version=0", "version=1"):
        touch_dataset(tmp_path / version, [("c", "train", "eng_Latn")], real_rows.slice(0, 2))
    with pytest.raises(DatasetError) as info:
        resolve_dataset_root(tmp_path)
    assert "version=0" in str(info.value)
    assert "version=1" in str(info.value)


def test_nonexistent_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        resolve_dataset_root(tmp_path / "nowhere")


def test_folder_without_corpus_folders(tmp_path: Path) -> None:
    (tmp_path / "split=train").mkdir()
    with pytest.raises(DatasetError, match="corpus="):
        resolve_dataset_root(tmp_path)


def test_a_file_is_not_a_root(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    path.write_bytes(b"")
    with pytest.raises(DatasetError, match="not a folder"):
        resolve_dataset_root(path)


# --- discover_split ------------------------------------------------------------------------


def test_discover_split_sorted_with_partition_values(small_dataset: Path) -> None:
    files = discover_split(small_dataset, "train")
    rels = [f.rel for f in files]
    assert rels == sorted(rels)
    assert rels == [
        "corpus=espeak_fast/split=train/language=eng_Latn/part-00000.parquet",
        "corpus=espeak_fast/split=train/language=rus_Cyrl/part-00000.parquet",
        "corpus=espeak_read/split=train/language=eng_Latn/part-00000.parquet",
        "corpus=espeak_read/split=train/language=fra_Latn/part-00000.parquet",
    ]
    for f in files:
        assert f.path == small_dataset / f.rel
        assert (
            f.rel == f"corpus={f.corpus}/split={f.split}/language={f.language}/part-00000.parquet"
        )
        assert f.split == "train"


def test_discover_split_on_espeak_mini(espeak_root: Path) -> None:
    root = resolve_dataset_root(espeak_root)
    train = discover_split(root, "train")
    assert len(train) == 12
    assert [f.path for f in train] == sorted(f.path for f in train)
    assert {f.corpus for f in train} == {"espeak_fast", "espeak_read"}
    assert len({f.language for f in train}) == 8


def test_split_with_corpus_syntax(small_dataset: Path) -> None:
    assert parse_split("dev") == ("dev", None)
    assert parse_split("dev_espeak_read") == ("dev", "espeak_read")
    files = discover_split(small_dataset, "dev_espeak_read")
    assert [(f.corpus, f.split, f.language) for f in files] == [
        ("espeak_read", "dev", "eng_Latn"),
        ("espeak_read", "dev", "fra_Latn"),
    ]
    files = discover_split(small_dataset, "train_espeak_fast")
    assert {f.corpus for f in files} == {"espeak_fast"}
    assert {f.split for f in files} == {"train"}


def test_unknown_split_names_it_and_lists_the_available_ones(small_dataset: Path) -> None:
    with pytest.raises(DatasetError) as info:
        discover_split(small_dataset, "valid")
    message = str(info.value)
    assert "'valid'" in message
    assert "dev, train" in message


def test_unknown_corpus_of_a_split(small_dataset: Path) -> None:
    with pytest.raises(DatasetError) as info:
        discover_split(small_dataset, "dev_nope")
    assert "'nope'" in str(info.value)
    assert "'dev'" in str(info.value)


def test_files_outside_the_hive_layout_are_ignored_with_a_warning(
    tmp_path: Path, real_rows: pa.Table, caplog: pytest.LogCaptureFixture
) -> None:
    touch_dataset(tmp_path, [("c", "train", "eng_Latn")], real_rows.slice(0, 2))
    write_parquet(tmp_path / "corpus=c" / "stray.parquet", real_rows.slice(0, 2), 5)
    with caplog.at_level(logging.WARNING, logger="dali_asr"):
        files = list_files(tmp_path)
    assert [f.rel for f in files] == [GOOD_FILE]
    assert any("corpus=c/stray.parquet" in r.getMessage() for r in caplog.records)


# --- schema checks, at AsrLoader construction ---------------------------------------------


def schema_error(root: Path) -> str:
    with pytest.raises(DatasetError) as info:
        AsrLoader(root, "train", single_pass_config())
    return str(info.value)


def bad_dataset(root: Path, good: pa.Table, bad: pa.Table) -> Path:
    """A good file first (eng_Latn) and the bad one after it (fra_Latn), split train."""
    write_parquet(root / GOOD_FILE, good, 5)
    write_parquet(root / BAD_FILE, bad, 5)
    return root


def test_missing_audio_size_column(tmp_path: Path, real_rows: pa.Table) -> None:
    root = bad_dataset(tmp_path, real_rows, real_rows.drop_columns([LENGTH]))
    message = schema_error(root)
    assert BAD_FILE in message
    assert GOOD_FILE not in message
    assert "'audio_size'" in message
    assert "missing" in message
    assert "integer" in message


def test_audio_bytes_as_string(tmp_path: Path, real_rows: pa.Table) -> None:
    as_text = pa.array([f"row {i}" for i in range(real_rows.num_rows)], pa.string())
    bad = real_rows.set_column(real_rows.schema.get_field_index(AUDIO), AUDIO, as_text)
    message = schema_error(bad_dataset(tmp_path, real_rows, bad))
    assert BAD_FILE in message
    assert "'audio_bytes'" in message
    assert "string" in message  # what was found
    assert "list<int8>" in message  # what was expected


def test_text_as_int(tmp_path: Path, real_rows: pa.Table) -> None:
    numbers = pa.array(range(real_rows.num_rows), pa.int64())
    bad = real_rows.set_column(real_rows.schema.get_field_index(TEXT), TEXT, numbers)
    message = schema_error(bad_dataset(tmp_path, real_rows, bad))
    assert BAD_FILE in message
    assert "'text'" in message
    assert "int64" in message
    assert "expected string" in message


def test_audio_size_as_float(tmp_path: Path, real_rows: pa.Table) -> None:
    sizes = real_rows.column(LENGTH).cast(pa.float64())
    bad = real_rows.set_column(real_rows.schema.get_field_index(LENGTH), LENGTH, sizes)
    message = schema_error(bad_dataset(tmp_path, real_rows, bad))
    assert BAD_FILE in message
    assert "'audio_size'" in message
    assert "integer" in message


def test_corrupt_file_names_it(tmp_path: Path, real_rows: pa.Table) -> None:
    write_parquet(tmp_path / GOOD_FILE, real_rows, 5)
    (tmp_path / BAD_FILE).parent.mkdir(parents=True)
    (tmp_path / BAD_FILE).write_bytes(b"this is not a parquet file\n" * 10)
    message = schema_error(tmp_path)
    assert BAD_FILE in message
    assert "parquet" in message


def test_extra_columns_and_binary_audio_are_accepted(tmp_path: Path, real_rows: pa.Table) -> None:
    audio = real_rows.column(AUDIO).to_pylist()
    binary = pa.array([np.asarray(a, np.int8).tobytes() for a in audio], pa.binary())
    table = real_rows.set_column(real_rows.schema.get_field_index(AUDIO), AUDIO, binary)
    table = table.append_column("speaker", pa.array(["x"] * table.num_rows))
    write_parquet(tmp_path / GOOD_FILE, table, 5)
    loader = AsrLoader(tmp_path, "train", single_pass_config())
    try:
        assert [f.rel for f in loader.files.files] == [GOOD_FILE]
    finally:
        loader.close()


# --- row groups and the audio column --------------------------------------------------------


def test_row_groups_of_a_multi_row_group_file(small_dataset: Path) -> None:
    files = ParquetFiles(discover_split(small_dataset, "train_espeak_read"))
    refs = files.row_groups()
    assert refs == [
        RowGroupRef(0, 0, SMALL_ROW_GROUP_SIZE),
        RowGroupRef(0, 1, 48 - SMALL_ROW_GROUP_SIZE),
        RowGroupRef(1, 0, SMALL_ROW_GROUP_SIZE),
        RowGroupRef(1, 1, 48 - SMALL_ROW_GROUP_SIZE),
    ]
    for ref in refs:
        meta = pq.ParquetFile(files.files[ref.file_index].path).metadata
        assert meta.row_group(ref.row_group).num_rows == ref.num_rows


def test_row_groups_across_files_in_file_order(small_dataset: Path) -> None:
    files = ParquetFiles(discover_split(small_dataset, "train"))
    refs = files.row_groups()
    assert [r.file_index for r in refs] == [0, 1, 2, 2, 3, 3]
    assert sum(r.num_rows for r in refs) == 144


def test_read_returns_only_the_asked_columns(small_dataset: Path) -> None:
    files = ParquetFiles(discover_split(small_dataset, "train_espeak_read"))
    table = files.read(RowGroupRef(0, 1, 8), [LENGTH, TEXT])
    assert table.column_names == [LENGTH, TEXT]
    assert table.num_rows == 8


AUDIO_TYPES = {
    "list<int8>": pa.list_(pa.int8()),
    "list<uint8>": pa.list_(pa.uint8()),
    "large_list<int8>": pa.large_list(pa.int8()),
    "binary": pa.binary(),
    "large_binary": pa.large_binary(),
}


def audio_as(table: pa.Table, name: str) -> pa.Table:
    """``table`` with its audio column stored as AUDIO_TYPES[name]."""
    blobs = [np.asarray(a, np.int8).tobytes() for a in table.column(AUDIO).to_pylist()]
    target = AUDIO_TYPES[name]
    if pa.types.is_binary(target) or pa.types.is_large_binary(target):
        column = pa.array(blobs, target)
    else:
        dtype = np.uint8 if target.value_type == pa.uint8() else np.int8
        column = pa.array([np.frombuffer(b, dtype).tolist() for b in blobs], target)
    return table.set_column(table.schema.get_field_index(AUDIO), AUDIO, column)


@pytest.mark.parametrize("name", list(AUDIO_TYPES))
def test_audio_column_gives_the_original_bytes(
    tmp_path: Path, real_rows: pa.Table, name: str
) -> None:
    table = audio_as(real_rows, name)
    assert table.schema.field(AUDIO).type == AUDIO_TYPES[name]
    write_parquet(tmp_path / GOOD_FILE, table, 4)  # row groups of 4, 4, 2
    files = ParquetFiles(discover_split(tmp_path, "train"))
    files.check_all()
    refs = files.row_groups()
    assert [r.num_rows for r in refs] == [4, 4, 2]
    original = real_rows.column(AUDIO).to_pylist()
    start = 0
    for ref in refs:
        read = files.read(ref, [AUDIO, LENGTH])
        audio = files.audio_column(read, ref)
        assert audio.values.dtype == np.uint8
        assert audio.offsets.dtype == np.int64
        assert len(audio.offsets) == ref.num_rows + 1
        for i in range(ref.num_rows):
            expected = np.asarray(original[start + i], np.int8).tobytes()
            got = audio.row(i)
            assert got.dtype == np.uint8
            assert got.tobytes() == expected
            # the bytes are an audio file: FLAC, OGG or WAV magic
            assert got[:4].tobytes() in (b"fLaC", b"OggS", b"RIFF")
        start += ref.num_rows
    assert start == real_rows.num_rows


@pytest.mark.parametrize("batch_bytes", [1, 150_000])
def test_audio_read_in_batches_is_the_row_group(
    tmp_path: Path, real_rows: pa.Table, monkeypatch: pytest.MonkeyPatch, batch_bytes: int
) -> None:
    # A row group's audio is decoded a few rows at a time (1 byte: a row per batch) and joined
    # into one chunk: the same rows, bytes and lengths as pyarrow's whole-row-group read.
    monkeypatch.setattr(row_groups, "READ_BATCH_BYTES", batch_bytes)
    write_parquet(tmp_path / GOOD_FILE, real_rows, 10)
    files = ParquetFiles(discover_split(tmp_path, "train"))
    ref = files.row_groups()[0]
    whole = pq.ParquetFile(files.files[0].path).read_row_group(0, columns=[LENGTH, AUDIO])
    batched = files.read(ref, [LENGTH, AUDIO])
    assert all(batched.column(name).num_chunks == 1 for name in batched.column_names)
    assert batched.select([LENGTH, AUDIO]).equals(whole)
    audio = files.audio_column(batched, ref)
    for i, row in enumerate(real_rows.column(AUDIO).to_pylist()):
        assert audio.row(i).tobytes() == np.asarray(row, np.int8).tobytes()


def test_audio_column_of_a_sliced_table(real_rows: pa.Table, tmp_path: Path) -> None:
    # a table whose audio column does not start at offset 0 (a slice) still maps rows right
    write_parquet(tmp_path / GOOD_FILE, real_rows, 10)
    files = ParquetFiles(discover_split(tmp_path, "train"))
    for name in ("list<int8>", "binary"):
        sliced = audio_as(real_rows, name).slice(3, 4)
        audio = files.audio_column(sliced, RowGroupRef(0, 0, 4))
        expected = real_rows.column(AUDIO).to_pylist()[3:7]
        for i, row in enumerate(expected):
            assert audio.row(i).tobytes() == np.asarray(row, np.int8).tobytes(), name


def test_audio_column_row_count_mismatch_is_an_error(tmp_path: Path, real_rows: pa.Table) -> None:
    write_parquet(tmp_path / GOOD_FILE, real_rows, 10)
    files = ParquetFiles(discover_split(tmp_path, "train"))
    table = files.read(RowGroupRef(0, 0, 10), [AUDIO])
    with pytest.raises(DatasetError, match=GOOD_FILE):
        files.audio_column(table, RowGroupRef(0, 0, 9))
