"""Manifest (TSV + WRD) storage: layout detection, chunks, reads, validation, and a whole
single-pass plan over a manifest built from real espeak-mini audio."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import MILESTONE_TASK

from dali_asr.config import AsrTaskConfig
from dali_asr.errors import DatasetError
from dali_asr.planning.planners import PlanInputs, SinglePassPlanner
from dali_asr.report import SkipReport
from dali_asr.storage.manifest import (
    ManifestFiles,
    is_manifest_dir,
    list_manifest_splits,
    parse_audio_spec,
)
from dali_asr.storage.row_groups import AUDIO, LENGTH, TEXT, RowGroupRef
from dali_asr.text import SentencePieceTokenizer

SOURCE = "version=0/corpus=espeak_read/split=train/language=eng_Latn/part-00000.parquet"
NUM_FILES = 30
CHUNK = 7


@dataclass
class Row:
    """One manifest line as written: TSV path field, sample count, transcript, audio bytes."""

    spec: str
    size: int
    text: str
    audio: bytes


@pytest.fixture(scope="module")
def source_rows(espeak_root: Path) -> list[tuple[bytes, int, str]]:
    """The first 30 rows of an espeak-mini file: (encoded audio, audio_size, text)."""
    table = pq.read_table(espeak_root / SOURCE, columns=["audio_bytes", "audio_size", "text"])
    assert table.num_rows >= NUM_FILES
    out = []
    for i in range(NUM_FILES):
        blob = np.asarray(table["audio_bytes"][i].values.to_numpy(), np.int8).tobytes()
        out.append((blob, table["audio_size"][i].as_py(), table["text"][i].as_py()))
    return out


def build_manifest(root: Path, rows: list[tuple[bytes, int, str]]) -> list[Row]:
    """``root/train.tsv`` + ``train.wrd`` over ``root/audio``: one file per source row (named
    by its magic: FLAC, Ogg or WAV, all three occur in espeak-mini), then two entries slicing
    a blob (``path:offset:size`` and ``path:offset``, to its end)."""
    audio = root / "audio"
    audio.mkdir(parents=True)
    written = []
    for i, (blob, size, text) in enumerate(rows):
        ext = {b"fLaC": "flac", b"OggS": "ogg", b"RIFF": "wav"}[blob[:4]]
        (audio / f"{i}.{ext}").write_bytes(blob)
        written.append(Row(f"{i}.{ext}", size, text, blob))
    junk = b"\0junk\0" * 7
    first, second = rows[3], rows[5]
    (audio / "blob.bin").write_bytes(junk + first[0] + second[0])
    written.append(Row(f"blob.bin:{len(junk)}:{len(first[0])}", first[1], first[2], first[0]))
    offset = len(junk) + len(first[0])
    written.append(Row(f"blob.bin:{offset}", second[1], second[2], second[0]))
    tsv = [str(audio)] + [f"{r.spec}\t{r.size}" for r in written]
    (root / "train.tsv").write_text("\n".join(tsv) + "\n", encoding="utf-8")
    (root / "train.wrd").write_text("".join(f"{r.text}\n" for r in written), encoding="utf-8")
    return written


@pytest.fixture
def manifest(tmp_path: Path, source_rows: list[tuple[bytes, int, str]]) -> tuple[Path, list[Row]]:
    root = tmp_path / "my_corpus"
    return root, build_manifest(root, source_rows)


def test_splits_and_detection(manifest: tuple[Path, list[Row]], espeak_root: Path) -> None:
    root, _ = manifest
    (root / "dev.tsv").write_text(f"{root / 'audio'}\n", encoding="utf-8")
    assert list_manifest_splits(root) == ["dev", "train"]
    assert is_manifest_dir(root)
    # espeak-mini has a listing TSV next to version=0: it is a parquet dataset.
    assert not is_manifest_dir(espeak_root)
    assert not is_manifest_dir(root / "audio")


def test_parse_audio_spec() -> None:
    assert parse_audio_spec("a/b.flac") == ("a/b.flac", -1, -1)
    assert parse_audio_spec("a/b.flac:10") == ("a/b.flac", 10, -1)
    assert parse_audio_spec("a/b.flac: 10 :20") == ("a/b.flac", 10, 20)
    for bad in ("a:b", "a:1:2:3", "a::2", ":1:2", "a:-1:2", "a:²"):
        with pytest.raises(ValueError, match="expected"):
            parse_audio_spec(bad)


def test_files_and_chunks(manifest: tuple[Path, list[Row]]) -> None:
    root, rows = manifest
    files = ManifestFiles(root, "train", chunk_rows=CHUNK)
    (f,) = files.files
    assert (f.path, f.rel, f.corpus, f.split, f.language) == (
        root / "train.tsv",
        "train.tsv",
        "my_corpus",
        "train",
        "",
    )
    files.check_all()
    refs = files.row_groups()
    assert [r.num_rows for r in refs] == [7, 7, 7, 7, 4]
    assert [(r.file_index, r.row_group) for r in refs] == [(0, g) for g in range(5)]
    assert sum(r.num_rows for r in refs) == len(rows) == NUM_FILES + 2
    assert files.row_groups_read == 0


def test_read_round_trip(manifest: tuple[Path, list[Row]]) -> None:
    root, rows = manifest
    files = ManifestFiles(root, "train", chunk_rows=CHUNK)
    got: list[tuple[int, str, bytes]] = []
    for ref in files.row_groups():
        table = files.read(ref, [LENGTH, TEXT, AUDIO])
        assert table.column_names == [LENGTH, TEXT, AUDIO]
        assert table.schema.field(LENGTH).type == pa.int64()
        assert table.schema.field(TEXT).type == pa.string()
        assert table.schema.field(AUDIO).type == pa.binary()
        column = files.audio_column(table, ref)
        sizes, texts = table[LENGTH].to_pylist(), table[TEXT].to_pylist()
        got += [(sizes[i], texts[i], column.row(i).tobytes()) for i in range(ref.num_rows)]
    assert got == [(r.size, r.text, r.audio) for r in rows]
    assert files.row_groups_read == 5


def test_audio_is_read_only_when_asked(manifest: tuple[Path, list[Row]]) -> None:
    root, rows = manifest
    (root / "audio" / rows[8].spec).unlink()
    files = ManifestFiles(root, "train", chunk_rows=CHUNK)
    ref = files.row_groups()[1]
    table = files.read(ref, [TEXT, LENGTH])
    assert table.column_names == [TEXT, LENGTH]
    assert table[TEXT].to_pylist() == [r.text for r in rows[7:14]]
    # Line 10 of train.tsv: the header, then rows 0..8.
    with pytest.raises(DatasetError, match=rf"train\.tsv: line 10: audio file .*{rows[8].spec}"):
        files.read(ref, [AUDIO])


def test_slice_past_end_fails_at_read(manifest: tuple[Path, list[Row]]) -> None:
    root, rows = manifest
    tsv = root / "train.tsv"
    tsv.write_text(tsv.read_text().replace(rows[-1].spec, "blob.bin:10:999999999"))
    files = ManifestFiles(root, "train", chunk_rows=CHUNK)
    files.check_all()
    last = files.row_groups()[-1]
    with pytest.raises(DatasetError, match=r"line 33: audio file .*blob\.bin: expected bytes"):
        files.read(last, [AUDIO])


def test_crlf_and_trailing_whitespace(manifest: tuple[Path, list[Row]]) -> None:
    root, rows = manifest
    for name in ("train.tsv", "train.wrd"):
        path = root / name
        path.write_bytes(path.read_bytes().replace(b"\n", b" \r\n"))
    files = ManifestFiles(root, "train", chunk_rows=100)
    (ref,) = files.row_groups()
    table = files.read(ref, [TEXT, AUDIO])
    assert table[TEXT].to_pylist() == [r.text for r in rows]
    column = files.audio_column(table, ref)
    assert [column.row(i).tobytes() for i in range(len(rows))] == [r.audio for r in rows]


def _replace_line(path: Path, lineno: int, text: str | None) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    if text is None:
        del lines[lineno - 1]
    else:
        lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    ("name", "lineno", "text", "message"),
    [
        ("train.wrd", 32, None, r"train\.wrd: line 32: expected 32 transcript lines.*found 31"),
        ("train.tsv", 5, "3.flac\tmany", r"train\.tsv: line 5: expected a non-negative integer"),
        ("train.tsv", 6, "4.flac\t-3", r"train\.tsv: line 6: expected a non-negative integer"),
        ("train.tsv", 7, "5.flac", r"train\.tsv: line 7: expected 2 tab-separated fields"),
        ("train.tsv", 8, "6.flac\t1\tx", r"train\.tsv: line 8: expected 2 tab-separated"),
        ("train.tsv", 9, "blob.bin::4\t1", r"train\.tsv: line 9: expected path\[:offset"),
        ("train.tsv", 1, "/no/such/dir", r"train\.tsv: line 1: expected the audio root"),
        ("train.tsv", 1, "", r"train\.tsv: line 1: expected the audio root"),
    ],
)
def test_validation_errors(
    manifest: tuple[Path, list[Row]], name: str, lineno: int, text: str | None, message: str
) -> None:
    root, _ = manifest
    _replace_line(root / name, lineno, text)
    files = ManifestFiles(root, "train")
    with pytest.raises(DatasetError, match=message):
        files.check_all()
    with pytest.raises(DatasetError, match=message):
        files.row_groups()


def test_missing_files(manifest: tuple[Path, list[Row]]) -> None:
    root, _ = manifest
    with pytest.raises(DatasetError, match=r"dev\.tsv: manifest file not found.*found: train"):
        ManifestFiles(root, "dev").check_all()
    (root / "train.wrd").unlink()
    with pytest.raises(DatasetError, match=r"train\.wrd"):
        ManifestFiles(root, "train").check_all()
    (root / "empty.tsv").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"empty\.tsv: line 1"):
        ManifestFiles(root, "empty").check_all()


def test_single_pass_plan_end_to_end(
    manifest: tuple[Path, list[Row]], espeak_tokenizer: Path
) -> None:
    """Every row with its length in range comes out once, with its own audio bytes; the
    others are reported with the reason and the key ``train.tsv:<chunk>:<row>``."""
    root, rows = manifest
    files = ManifestFiles(root, "train", chunk_rows=CHUNK)
    task = AsrTaskConfig(
        min_audio_len=16000,
        max_audio_len=480000,
        max_num_elements=960000,
        example_shuffle_window=1,
        batch_shuffle_window=1,
    )
    report = SkipReport()
    planner = SinglePassPlanner(
        PlanInputs(files, task, SentencePieceTokenizer(espeak_tokenizer), report=report)
    )
    seen: Counter[int] = Counter()
    for batch in planner.batches(with_audio=True):
        for ex in batch:
            line = ex.row_group * CHUNK + ex.row
            seen[line] += 1
            assert ex.audio is not None
            assert ex.audio.tobytes() == rows[line].audio
            assert (ex.audio_size, ex.text) == (rows[line].size, rows[line].text)
    in_range = {i for i, r in enumerate(rows) if 16000 <= r.size <= 480000}
    # Text filters (empty or "too fast" transcripts) may drop in-range rows: they are reported.
    text_rejected = {
        k.row_group * CHUNK + k.row
        for reason, keys in report.keys.items()
        if reason not in ("audio_too_short", "audio_too_long")
        for k in keys
    }
    assert set(seen.values()) == {1}
    assert set(seen) == in_range - text_rejected
    assert len(seen) >= len(rows) // 2
    reported = {k.row_group * CHUNK + k.row for keys in report.keys.values() for k in keys}
    assert reported | set(seen) == set(range(len(rows)))
    assert all(k.file == "train.tsv" for keys in report.keys.values() for k in keys)
    assert files.row_groups_read == len(files.row_groups())


def test_rejects_unknown_column_and_bad_chunk(manifest: tuple[Path, list[Row]]) -> None:
    root, _ = manifest
    files = ManifestFiles(root, "train")
    with pytest.raises(DatasetError, match="no column 'language'"):
        files.read(RowGroupRef(0, 0, 10), ["language"])
    with pytest.raises(DatasetError, match="chunk_rows"):
        ManifestFiles(root, "train", chunk_rows=0)


def test_loader_reads_a_manifest_folder_sharded_by_rank(
    manifest: tuple[Path, list[Row]], espeak_tokenizer: Path
) -> None:
    """The whole loader on a manifest folder: real decoding, every line once, ranks disjoint
    (the reference's manifest storage gives every rank the same examples)."""
    from dali_asr.config import config_from_dict
    from dali_asr.loader import AsrLoader

    directory, _ = manifest
    cfg = config_from_dict({"asr_task_config": MILESTONE_TASK})
    whole = AsrLoader(directory, "train", cfg, espeak_tokenizer)
    whole.files.chunk_rows = 7
    assert not whole.endless  # a manifest is one pass, as in the reference
    batches = list(whole)
    keys = [k for b in batches for k in b.keys]
    assert len(keys) == len(set(keys)) > 0
    assert all(k.file == "train.tsv" for k in keys)
    for b in batches:
        assert b.source_seq_lens.tolist() == b.audio_size
    parts = []
    for rank in range(2):
        loader = AsrLoader(directory, "train", cfg, espeak_tokenizer, rank=rank, world_size=2)
        loader.files.chunk_rows = 7
        parts.append({k for b in loader for k in b.keys})
    assert parts[0].isdisjoint(parts[1])
    assert parts[0] | parts[1] == set(keys)
