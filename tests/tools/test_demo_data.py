"""Tests for `dali_asr.tools.demo_data`: layout, schema, audio, texts, stats, determinism and
reuse."""

from __future__ import annotations

import io
import json
import math
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from dali_asr.storage import SAMPLE_RATE
from dali_asr.tools.demo_data import PARTITIONS, _set_ogg_serial, make_demo_dataset

SCHEMA = pa.schema(
    [("text", pa.string()), ("audio_bytes", pa.list_(pa.int8())), ("audio_size", pa.int64())]
)
SCRIPTS = {
    "eng_Latn": "LATIN",
    "fra_Latn": "LATIN",
    "rus_Cyrl": "CYRILLIC",
    "hin_Deva": "DEVANAGARI",
    "cmn_Hans": "CJK",
}


@dataclass
class Row:
    corpus: str
    split: str
    language: str
    text: str
    audio: bytes
    audio_size: int


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def rows(demo: Path) -> list[Row]:
    out = []
    for path in _parquet_files(demo):
        keys = _hive_keys(path.relative_to(demo))
        table = pq.read_table(path)
        audio = table["audio_bytes"].combine_chunks()
        offsets = audio.offsets.to_numpy() - audio.offsets[0].as_py()
        data = audio.flatten().to_numpy().tobytes()
        texts, sizes = table["text"].to_pylist(), table["audio_size"].to_pylist()
        for i, (text, size) in enumerate(zip(texts, sizes, strict=True)):
            out.append(Row(*keys, text, data[offsets[i] : offsets[i + 1]], size))
    return out


def _parquet_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def _hive_keys(relative: Path) -> tuple[str, str, str]:
    parts = dict(p.split("=", 1) for p in relative.parts[:-1])
    return parts["corpus"], parts["split"], parts["language"]


def test_hive_layout(demo: Path) -> None:
    assert demo.name == "version=0"
    files = _parquet_files(demo)
    assert all(
        f.name == "part-00000.parquet" and len(f.relative_to(demo).parts) == 4 for f in files
    )
    found = {_hive_keys(f.relative_to(demo)) for f in files}
    expected = {(c, s, lang) for c, lang in PARTITIONS for s in ("train", "dev")}
    assert found == expected
    corpora = {c for c, _ in PARTITIONS}
    languages = {lang for _, lang in PARTITIONS}
    assert len(corpora) == 2 and len(languages) == 5
    assert len(PARTITIONS) < len(corpora) * len(languages)  # not every language everywhere
    # Only the dataset, the stats, the marker and the lock: no staging or temp files left.
    assert {p.name for p in demo.parent.iterdir()} <= {
        "version=0",
        "language_distribution_0.tsv",
        "DEMO_VERSION",
        ".demo.lock",
    }


def test_schema_row_groups_and_compression(demo: Path) -> None:
    multi_partial = 0
    for path in _parquet_files(demo):
        meta = pq.ParquetFile(path).metadata
        assert pq.read_schema(path).remove_metadata().equals(SCHEMA), path
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        n = meta.num_rows
        assert sizes == [100] * (n // 100) + ([n % 100] if n % 100 else []), path
        multi_partial += len(sizes) > 1 and n % 100 != 0
        for i in range(meta.num_row_groups):
            for j in range(meta.num_columns):
                assert meta.row_group(i).column(j).compression == "SNAPPY"
    assert multi_partial >= 2  # several row groups with a partial last one


def test_schema_matches_real_corpus(demo: Path, espeak_root: Path) -> None:
    real = pq.read_schema(next((espeak_root / "version=0").rglob("*.parquet")))
    for path in _parquet_files(demo):
        assert pq.read_schema(path).equals(real), path


def test_row_counts(rows: list[Row]) -> None:
    assert len(rows) == 1100
    by_split = Counter(r.split for r in rows)
    assert by_split == {"train": 850, "dev": 250}
    per_partition = Counter((r.corpus, r.language, r.split) for r in rows)
    for (corpus, lang), (n_train, n_dev) in PARTITIONS.items():
        assert per_partition[corpus, lang, "train"] == n_train
        assert per_partition[corpus, lang, "dev"] == n_dev


def test_audio_decodes_to_audio_size(rows: list[Row]) -> None:
    formats = Counter()
    for r in rows:
        info = sf.info(io.BytesIO(r.audio))
        assert (info.samplerate, info.channels) == (SAMPLE_RATE, 1)
        formats[info.format] += 1
        wave, rate = sf.read(io.BytesIO(r.audio), dtype="float32")
        assert rate == SAMPLE_RATE and wave.ndim == 1
        assert wave.shape[0] == r.audio_size
    assert set(formats) == {"FLAC", "OGG"}
    assert 0.25 < formats["OGG"] / len(rows) < 0.42  # roughly a third


def test_lengths(rows: list[Row]) -> None:
    seconds = np.array([r.audio_size for r in rows]) / SAMPLE_RATE
    assert seconds.min() >= 0.5 and seconds.max() <= 30.0
    short = int((seconds < 1.0).sum())
    assert 3 <= short <= 0.03 * len(rows)  # a few for the default min_audio_len to drop
    assert (seconds >= 28.0).sum() >= 3 and (seconds > 20.0).sum() >= 10
    assert 2.0 < float(np.median(seconds)) < 8.0


def test_audio_is_speech_like(rows: list[Row]) -> None:
    for r in rows[::50]:
        wave, _ = sf.read(io.BytesIO(r.audio), dtype="float64")
        assert np.abs(wave).max() < 1.0
        frames = wave[: len(wave) // 160 * 160].reshape(-1, 160)  # 10 ms
        rms_db = 10 * np.log10((frames**2).mean(axis=1))
        assert rms_db.min() > -80  # a noise floor everywhere: nothing digitally silent
        assert rms_db.max() - np.percentile(rms_db, 5) > 25  # syllables and quiet gaps


def test_texts(rows: list[Row]) -> None:
    empty = [r for r in rows if not r.text]
    assert 2 <= len(empty) <= 3 and all(r.split == "dev" for r in empty)
    for r in rows:
        if r.text:
            assert r.text == unicodedata.normalize("NFKC", r.text).lower()
            assert r.text == r.text.strip() and "  " not in r.text
            letters = [c for c in r.text if c.isalpha()]
            assert all(unicodedata.name(c).startswith(SCRIPTS[r.language]) for c in letters)
    too_fast = [r for r in rows if r.text and r.audio_size / len(r.text) < 160]
    assert len(too_fast) == 1 and too_fast[0].split == "train"


def test_stats_tsv(demo: Path, rows: list[Row]) -> None:
    lines = (demo.parent / "language_distribution_0.tsv").read_text().splitlines()
    assert lines[0] == "corpus\tlanguage\thours"
    hours = {(c, lang): float(h) for c, lang, h in (line.split("\t") for line in lines[1:])}
    assert set(hours) == set(PARTITIONS)
    samples = Counter()
    for r in rows:
        samples[r.corpus, r.language] += r.audio_size
    for key, total in samples.items():
        assert math.isclose(hours[key], total / SAMPLE_RATE / 3600, rel_tol=1e-12)


def test_same_seed_gives_identical_files(demo: Path, tmp_path: Path) -> None:
    other = make_demo_dataset(tmp_path / "again")
    names = [p.relative_to(demo) for p in _parquet_files(demo)]
    assert names == [p.relative_to(other) for p in _parquet_files(other)]
    for name in names:
        assert (demo / name).read_bytes() == (other / name).read_bytes(), name
    tsv = "language_distribution_0.tsv"
    assert (demo.parent / tsv).read_bytes() == (other.parent / tsv).read_bytes()


def test_second_call_reuses(demo: Path) -> None:
    files = [
        *_parquet_files(demo),
        demo.parent / "language_distribution_0.tsv",
        demo.parent / "DEMO_VERSION",
    ]
    before = {f: f.stat().st_mtime_ns for f in files}
    assert make_demo_dataset(demo.parent) == demo
    assert {f: f.stat().st_mtime_ns for f in files} == before


def test_other_settings_regenerate(tmp_path: Path) -> None:
    first = make_demo_dataset(tmp_path, seed=1, scale=0.05)
    old = {p.relative_to(first): p.read_bytes() for p in _parquet_files(first)}
    second = make_demo_dataset(tmp_path, seed=2, scale=0.05)
    new = {p.relative_to(second): p.read_bytes() for p in _parquet_files(second)}
    assert second == first and set(new) == set(old)
    assert all(new[k] != old[k] for k in new)
    marker = json.loads((tmp_path / "DEMO_VERSION").read_text())
    assert (marker["seed"], marker["complete"]) == (2, True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".demo-staging")]


def _reference_ogg_crc(page: bytes) -> int:
    crc = 0
    for byte in page:  # CRC-32, polynomial 0x04C11DB7, unreflected, as the Ogg spec defines it
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return crc


def test_ogg_serial_patch_keeps_a_valid_stream() -> None:
    wave = np.random.default_rng(0).normal(0, 0.1, SAMPLE_RATE).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, wave, SAMPLE_RATE, format="OGG", subtype="VORBIS")
    original = buf.getvalue()
    patched = _set_ogg_serial(original, 0x01020304)
    assert patched[14:18] == bytes([4, 3, 2, 1]) and len(patched) == len(original)
    first_page_end = patched.index(b"OggS", 4)
    page = bytearray(patched[:first_page_end])
    crc = int.from_bytes(page[22:26], "little")
    page[22:26] = bytes(4)
    assert crc == _reference_ogg_crc(bytes(page))
    # libogg drops pages with a bad checksum, so equal decodes mean every page is valid.
    decoded = [sf.read(io.BytesIO(b), dtype="int16")[0] for b in (original, patched)]
    assert np.array_equal(*decoded) and decoded[0].shape == (SAMPLE_RATE,)


def test_refuses_to_overwrite_foreign_dataset(tmp_path: Path) -> None:
    (tmp_path / "version=0" / "corpus=real").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        make_demo_dataset(tmp_path, scale=0.05)
    assert (tmp_path / "version=0" / "corpus=real").is_dir()
