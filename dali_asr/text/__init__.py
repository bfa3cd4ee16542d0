"""Text side of the pipeline: tokenisers (stage T4) and the reference's text filters (T3, T5)."""

from __future__ import annotations

from dali_asr.text.filters import (
    ALL_UNKNOWN,
    EMPTY_TEXT,
    REASONS,
    TEXT_TOO_LONG,
    TOO_FAST,
    TextFilter,
    keep_nonempty,
    keep_not_all_unknown,
    keep_speech_rate,
    keep_text_length,
)
from dali_asr.text.tokenizer import (
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    load_tokenizer,
)

__all__ = [
    "ALL_UNKNOWN",
    "EMPTY_TEXT",
    "REASONS",
    "TEXT_TOO_LONG",
    "TOO_FAST",
    "CharTokenizer",
    "SentencePieceTokenizer",
    "TextFilter",
    "Tokenizer",
    "keep_nonempty",
    "keep_not_all_unknown",
    "keep_speech_rate",
    "keep_text_length",
    "load_tokenizer",
]
