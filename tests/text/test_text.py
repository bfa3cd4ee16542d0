"""Tests for dali_asr.text: tokenisers (stage T4) and the reference's text filters (T3, T5)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ESPEAK_ROOT as CORPUS

from dali_asr.text import (
    ALL_UNKNOWN,
    EMPTY_TEXT,
    REASONS,
    TEXT_TOO_LONG,
    TOO_FAST,
    CharTokenizer,
    SentencePieceTokenizer,
    TextFilter,
    keep_nonempty,
    keep_not_all_unknown,
    keep_speech_rate,
    keep_text_length,
    load_tokenizer,
)

ESPEAK = CORPUS
ESPEAK_ROOT = ESPEAK / "version=0"
SPM_PATH = ESPEAK / "tokenizer" / "char_spm.model"


def _corpus_texts(split: str | None = None) -> list[str]:
    """espeak-mini's texts (of one split); a missing corpus fails the test, never empties it."""
    paths = [
        path
        for path in sorted(ESPEAK_ROOT.rglob("*.parquet"))
        if split is None or f"split={split}" in path.parts
    ]
    if not paths:
        pytest.fail(f"the espeak-mini corpus is missing: no parquet files under {ESPEAK_ROOT}")
    texts: list[str] = []
    for path in paths:
        texts += pq.read_table(path, columns=["text"]).column("text").to_pylist()
    return texts


@pytest.fixture(scope="module")
def spm_tok() -> SentencePieceTokenizer:
    if not SPM_PATH.is_file():
        pytest.fail(f"the espeak-mini tokenizer is missing: expected {SPM_PATH}")
    return SentencePieceTokenizer(SPM_PATH)


# --- SentencePiece --------------------------------------------------------------------------


def test_spm_special_ids(spm_tok: SentencePieceTokenizer) -> None:
    assert (spm_tok.bos_idx, spm_tok.pad_idx, spm_tok.eos_idx, spm_tok.unk_idx) == (0, 1, 2, 3)
    assert spm_tok.vocab_size == 135
    assert str(SPM_PATH) in spm_tok.describe()


def test_spm_encode_real_text_raw_pieces(spm_tok: SentencePieceTokenizer) -> None:
    import sentencepiece as spm

    text = _corpus_texts("train")[0]
    ids = spm_tok.encode(text)
    assert ids.dtype == np.int64 and ids.ndim == 1
    # Raw pieces: "▁" for the dummy prefix and each space, one piece per character, no BOS/EOS.
    proc = spm.SentencePieceProcessor(model_file=str(SPM_PATH))
    assert "".join(proc.id_to_piece(ids.tolist())) == "▁" + text.replace(" ", "▁")
    assert ids[0] != spm_tok.bos_idx and ids[-1] != spm_tok.eos_idx
    assert spm_tok.bos_idx not in ids and spm_tok.eos_idx not in ids


def test_spm_encode_batch_matches_encode(spm_tok: SentencePieceTokenizer) -> None:
    texts = [*_corpus_texts(), "", " ", "☃ x"]
    batch = spm_tok.encode_batch(texts)
    assert len(batch) == len(texts)
    for text, ids in zip(texts, batch, strict=True):
        assert ids.dtype == np.int64
        np.testing.assert_array_equal(ids, spm_tok.encode(text))
    assert spm_tok.encode_batch([]) == []


def test_spm_missing_model_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "tok.model"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        SentencePieceTokenizer(missing)
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_tokenizer(missing, None)


def test_spm_unreadable_model_names_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"this is not a sentencepiece model")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        SentencePieceTokenizer(bad)


# --- CharTokenizer --------------------------------------------------------------------------


def test_char_ids_and_order() -> None:
    tok = CharTokenizer.from_texts(["ba c", "é", "a"])
    assert (tok.bos_idx, tok.pad_idx, tok.eos_idx, tok.unk_idx) == (0, 1, 2, 3)
    assert tok.chars == " abcé"  # sorted by code point: space (32) first
    assert tok.vocab_size == 4 + 5
    np.testing.assert_array_equal(tok.encode("abc é"), [5, 6, 7, 4, 8])
    out = tok.encode("a☃z")
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [5, 3, 3])
    assert tok.encode("").shape == (0,)


def test_char_deterministic() -> None:
    texts = ["hello world", "привет", "नमस्ते", "😀 x"]
    a = CharTokenizer.from_texts(texts)
    b = CharTokenizer.from_texts(reversed(texts * 3))
    assert a.to_json() == b.to_json()
    assert a.chars == "".join(sorted(set("".join(texts))))


def test_char_encode_batch_matches_encode() -> None:
    tok = CharTokenizer.from_texts(["abc de"])
    texts = ["abc", "", "xyz a", "😀", "  "]
    for text, ids in zip(texts, tok.encode_batch(texts), strict=True):
        np.testing.assert_array_equal(ids, tok.encode(text))
        assert len(ids) == len(text)


def test_char_json_round_trip(tmp_path: Path) -> None:
    tok = CharTokenizer.from_texts(["a b\tc", "ü", "😀"])
    back = CharTokenizer.from_json(tok.to_json())
    assert back.chars == tok.chars and back.vocab_size == tok.vocab_size
    np.testing.assert_array_equal(back.encode("a\t😀?"), tok.encode("a\t😀?"))
    path = tmp_path / "chars.json"
    path.write_text(tok.to_json(), encoding="utf-8")
    assert load_tokenizer(path, None).encode("cab").tolist() == tok.encode("cab").tolist()
    with pytest.raises(ValueError):
        CharTokenizer.from_json('{"kind": "other"}')


def _write_part(path: Path, texts: list[str | None], row_group_size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = pa.array([[1, 2, 3]] * len(texts), type=pa.list_(pa.int8()))
    table = pa.table(
        {
            "text": pa.array(texts, type=pa.string()),
            "audio_bytes": audio,
            "audio_size": pa.array([16000] * len(texts), type=pa.int64()),
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)


def test_char_from_dataset_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "version=0"
    _write_part(root / "corpus=c/split=train/language=x/part-0.parquet", ["ab", "c", None], 2)
    _write_part(root / "corpus=c/split=dev/language=x/part-0.parquet", ["zé"], 1)
    _write_part(root / "corpus=c/split=test/language=y/part-0.parquet", ["", "d d"], 1)
    # pyarrow.dataset ignores "_"/"." files; so does from_dataset.
    _write_part(root / "corpus=c/split=train/language=x/_tmp.parquet", ["Q"], 1)

    columns_read: list[object] = []
    original = pq.ParquetFile.read_row_group

    def spy(self: pq.ParquetFile, i: int, columns: object = None, **kw: object) -> pa.Table:
        columns_read.append(columns)
        return original(self, i, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    tok = CharTokenizer.from_dataset(root)
    assert tok.chars == " abcdzé"
    # 2 + 1 + 2 row groups, and only ever the text column.
    assert columns_read == [["text"]] * 5
    with pytest.raises(FileNotFoundError, match=re.escape("no *.parquet")):
        CharTokenizer.from_dataset(tmp_path / "empty")


def test_char_from_dataset_espeak_covers_all_splits() -> None:
    tok = CharTokenizer.from_dataset(ESPEAK_ROOT)
    expected = set()
    for split in ("train", "dev", "test"):
        texts = _corpus_texts(split)
        assert texts
        expected |= set("".join(texts))
    assert tok.chars == "".join(sorted(expected))
    assert tok.vocab_size == 4 + len(expected)
    assert tok.to_json() == CharTokenizer.from_dataset(ESPEAK_ROOT).to_json()
    loaded = load_tokenizer(None, ESPEAK_ROOT)
    assert isinstance(loaded, CharTokenizer) and loaded.chars == tok.chars
    for text in _corpus_texts():
        assert tok.unk_idx not in tok.encode(text)


# --- filters --------------------------------------------------------------------------------


def test_pure_filters() -> None:
    assert keep_nonempty("a") and not keep_nonempty("")
    assert keep_speech_rate(320, "ab", 160.0)  # exactly at the bound is kept
    assert not keep_speech_rate(319, "ab", 160.0)
    assert not keep_speech_rate(1000, "", 160.0)
    assert keep_not_all_unknown(np.array([3, 4]), 3)
    assert not keep_not_all_unknown(np.array([3, 3]), 3)
    assert not keep_not_all_unknown(np.array([], dtype=np.int64), 3)
    assert keep_text_length(np.arange(5), None) and keep_text_length(np.arange(5), 5)
    assert not keep_text_length(np.arange(6), 5)


def test_text_filter_reasons_and_order() -> None:
    tok = CharTokenizer.from_texts(["abcdefghij "])
    f = TextFilter(min_samples_per_char=10, filter_long_text_threshold=4, tokenizer=tok)
    tokens, reason = f.apply(40, "abcd")
    assert reason is None and tokens is not None and tokens.tolist() == [5, 6, 7, 8]
    assert f.apply(0, "") == (None, EMPTY_TEXT)  # empty wins over too-fast
    assert f.apply(39, "abcd") == (None, TOO_FAST)
    assert f.apply(0, "☃") == (None, TOO_FAST)  # rate is checked before tokenising
    assert f.apply(10_000, "☃☃") == (None, ALL_UNKNOWN)
    assert f.apply(10_000, "☃☃☃☃☃☃") == (None, ALL_UNKNOWN)  # before text_too_long
    assert f.apply(10_000, "abcde") == (None, TEXT_TOO_LONG)
    assert f.apply(10_000, "a☃")[1] is None
    assert dict(f.counts) == {
        EMPTY_TEXT: 1,
        TOO_FAST: 2,
        ALL_UNKNOWN: 2,
        TEXT_TOO_LONG: 1,
        "kept": 2,
    }
    f.reset_counts()
    assert sum(f.counts.values()) == 0 and set(f.counts) == {*REASONS, "kept"}


def test_text_filter_spm_whitespace_and_unknown(spm_tok: SentencePieceTokenizer) -> None:
    f = TextFilter(min_samples_per_char=160, filter_long_text_threshold=None, tokenizer=spm_tok)
    # SentencePiece strips whitespace-only text to no tokens: dropped as all-unknown.
    assert f.apply(16_000, "  ") == (None, ALL_UNKNOWN)
    # The dummy-prefix "▁" is a known piece, so unknown characters alone are kept, as in the
    # reference (which uses the same raw SentencePiece encoder).
    tokens, reason = f.apply(16_000, "☃")
    assert reason is None and tokens is not None and tokens.tolist() == [4, 3]


@pytest.mark.parametrize("kind", ["char", "spm"])
def test_apply_batch_equals_apply(kind: str, request: pytest.FixtureRequest) -> None:
    texts = ["", "abc", "☃", "☃☃ ☃", "  ", "a" * 50, "the cat", "x", *_corpus_texts("train")]
    tok = (
        request.getfixturevalue("spm_tok")
        if kind == "spm"
        else CharTokenizer.from_texts(["abcdefghijklmnopqrstuvwxyz "])
    )
    rng = np.random.default_rng(0)
    sizes = rng.integers(0, 40 * 160, size=len(texts)) * rng.integers(1, 4, size=len(texts))
    sizes[:8] = [0, 480, 160, 100_000, 100_000, 100_000, 7 * 160, 159]

    for threshold in (None, 40):
        row = TextFilter(160, threshold, tok)
        batch = TextFilter(160, threshold, tok)
        expected = [row.apply(int(s), t) for s, t in zip(sizes, texts, strict=True)]
        got_tokens, got_reasons = batch.apply_batch(sizes, texts)
        assert got_reasons == [r for _, r in expected]
        for (exp_tok, _), got in zip(expected, got_tokens, strict=True):
            if exp_tok is None:
                assert got is None
            else:
                assert got is not None and got.dtype == np.int64
                np.testing.assert_array_equal(got, exp_tok)
        assert batch.counts == row.counts
        if threshold is not None:
            assert set(got_reasons) == {*REASONS, None}  # every outcome is exercised

    assert TextFilter(160, None, tok).apply_batch(np.zeros(0, np.int64), []) == ([], [])
    with pytest.raises(ValueError):
        TextFilter(160, None, tok).apply_batch(np.zeros(2, np.int64), ["a"])
