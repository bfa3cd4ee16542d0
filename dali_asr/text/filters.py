"""Text filters of the reference ``AsrTask``: the planning stages between the example shuffle
and the batcher.

Order, as in the reference: empty text and "too fast" speech are checked on the raw string,
then the text is tokenised, then all-unknown and (optional) long-text filters run on the tokens.
``remove_unknown`` (the reference's intent; it crashes there when set) is not a filter: the
planner removes unknown tokens from an accepted example's targets.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from dali_asr.text.tokenizer import Tokenizer

EMPTY_TEXT = "empty_text"
TOO_FAST = "too_fast_speech"
ALL_UNKNOWN = "all_unknown_tokens"
TEXT_TOO_LONG = "text_too_long"
#: Drop reasons in the order the filters run.
REASONS = (EMPTY_TEXT, TOO_FAST, ALL_UNKNOWN, TEXT_TOO_LONG)


def keep_nonempty(text: str) -> bool:
    """Keep iff the raw text has at least one character."""
    return len(text) > 0


def keep_speech_rate(audio_size: int, text: str, min_samples_per_char: float) -> bool:
    """Keep iff ``audio_size / len(text) >= min_samples_per_char`` (float division, raw chars).

    An empty text returns False instead of dividing by zero; the reference never gets here
    with one because the empty-text filter runs first.
    """
    if not text:
        return False
    return audio_size / len(text) >= min_samples_per_char


def keep_not_all_unknown(tokens: np.ndarray, unk_idx: int) -> bool:
    """Keep iff at least one token differs from ``unk_idx``.

    An empty token sequence has no such token and is dropped. A non-empty text can encode to
    nothing with SentencePiece (e.g. only whitespace, which its normaliser strips).
    """
    return bool(np.any(tokens != unk_idx))


def keep_text_length(tokens: np.ndarray, threshold: int | None) -> bool:
    """Keep iff ``threshold`` is None or the token count is at most ``threshold``."""
    return threshold is None or len(tokens) <= threshold


class TextFilter:
    """Applies the reference's text filters in order and counts why examples were dropped.

    ``counts`` maps each reason in :data:`REASONS`, plus ``"kept"``, to a running count over
    every :meth:`apply` / :meth:`apply_batch` call.
    """

    def __init__(
        self,
        min_samples_per_char: float,
        filter_long_text_threshold: int | None,
        tokenizer: Tokenizer,
    ) -> None:
        self.min_samples_per_char = float(min_samples_per_char)
        self.filter_long_text_threshold = filter_long_text_threshold
        self.tokenizer = tokenizer
        self.counts: Counter[str] = Counter({r: 0 for r in (*REASONS, "kept")})

    def _reason(self, audio_size: int, text: str) -> tuple[np.ndarray | None, str | None]:
        if not keep_nonempty(text):
            return None, EMPTY_TEXT
        if not keep_speech_rate(audio_size, text, self.min_samples_per_char):
            return None, TOO_FAST
        tokens = self.tokenizer.encode(text)
        if not keep_not_all_unknown(tokens, self.tokenizer.unk_idx):
            return None, ALL_UNKNOWN
        if not keep_text_length(tokens, self.filter_long_text_threshold):
            return None, TEXT_TOO_LONG
        return tokens, None

    def apply(self, audio_size: int, text: str) -> tuple[np.ndarray | None, str | None]:
        """``(tokens, None)`` if the example is kept, else ``(None, reason)``."""
        tokens, reason = self._reason(audio_size, text)
        self.counts[reason or "kept"] += 1
        return tokens, reason

    def apply_batch(
        self, audio_sizes: np.ndarray, texts: list[str]
    ) -> tuple[list[np.ndarray | None], list[str | None]]:
        """Row-by-row equal to :meth:`apply`, with one batch tokenisation of the survivors."""
        n = len(texts)
        sizes = np.asarray(audio_sizes)
        if sizes.shape != (n,):
            raise ValueError(f"audio_sizes has shape {sizes.shape}, expected ({n},)")
        tokens: list[np.ndarray | None] = [None] * n
        reasons: list[str | None] = [None] * n
        if n == 0:
            return tokens, reasons

        chars = np.fromiter(map(len, texts), dtype=np.int64, count=n)
        empty = chars == 0
        # float64 true division of exactly representable ints rounds like Python's int / int.
        rate = np.divide(sizes.astype(np.float64), chars, out=np.zeros(n), where=~empty)
        too_fast = ~empty & ~(rate >= self.min_samples_per_char)

        survivors = np.flatnonzero(~empty & ~too_fast)
        encoded = self.tokenizer.encode_batch([texts[i] for i in survivors])
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        flat = np.concatenate(encoded) if encoded else np.empty(0, dtype=np.int64)
        # Known tokens per row from a prefix sum: avoids a Python loop over rows.
        known = np.concatenate(([0], np.cumsum(flat != self.tokenizer.unk_idx)))
        ends = np.cumsum(lengths)
        all_unk = (known[ends] - known[ends - lengths]) == 0
        limit = self.filter_long_text_threshold
        too_long = ~all_unk & (lengths > limit) if limit is not None else np.zeros_like(all_unk)

        for i in np.flatnonzero(empty):
            reasons[i] = EMPTY_TEXT
        for i in np.flatnonzero(too_fast):
            reasons[i] = TOO_FAST
        for j, i in enumerate(survivors.tolist()):
            if all_unk[j]:
                reasons[i] = ALL_UNKNOWN
            elif too_long[j]:
                reasons[i] = TEXT_TOO_LONG
            else:
                tokens[i] = encoded[j]

        self.counts[EMPTY_TEXT] += int(empty.sum())
        self.counts[TOO_FAST] += int(too_fast.sum())
        self.counts[ALL_UNKNOWN] += int(all_unk.sum())
        self.counts[TEXT_TOO_LONG] += int(too_long.sum())
        self.counts["kept"] += len(survivors) - int(all_unk.sum()) - int(too_long.sum())
        return tokens, reasons

    def reset_counts(self) -> None:
        """Zero every counter."""
        for key in self.counts:
            self.counts[key] = 0
