"""The recipe's fairseq2 tokenizer as a dali-asr ``Tokenizer``: its encoder tokenizes, exactly
as the reference's ``encode_text`` stage calls it (``tokenizer.create_encoder()``, no task,
language or mode), and its ``vocab_info`` gives the pad and unk ids."""

from __future__ import annotations

from typing import Any

import numpy as np

from dali_asr.errors import ConfigError
from dali_asr.text import Tokenizer


class Fairseq2Tokenizer(Tokenizer):
    """Wraps a ``fairseq2.data.tokenizers.Tokenizer`` (for Omnilingual, the ``char_tokenizer``
    family's raw SentencePiece model, which adds no BOS/EOS).

    The encoder's prefix and suffix tokens, if it has any, stay in the targets, as in the
    reference's batches.
    """

    def __init__(self, tokenizer: Any) -> None:
        info = getattr(tokenizer, "vocab_info", None)
        if info is None or not callable(getattr(tokenizer, "create_encoder", None)):
            raise ConfigError(
                f"tokenizer: expected a fairseq2 Tokenizer (with vocab_info and "
                f"create_encoder()), got {type(tokenizer).__name__}"
            )
        if info.pad_idx is None or info.unk_idx is None:
            raise ConfigError(
                f"tokenizer {type(tokenizer).__name__}: its vocabulary has pad_idx="
                f"{info.pad_idx} and unk_idx={info.unk_idx}; the targets need both (padding, "
                "and the reference's all-unknown filter)"
            )
        self._tokenizer = tokenizer
        self._info = info
        self._encoder = tokenizer.create_encoder()

    def encode(self, text: str) -> np.ndarray:
        return self._encoder(text).numpy().astype(np.int64, copy=False)

    @property
    def pad_idx(self) -> int:
        return int(self._info.pad_idx)

    @property
    def unk_idx(self) -> int:
        return int(self._info.unk_idx)

    @property
    def bos_idx(self) -> int | None:
        return self._info.bos_idx

    @property
    def eos_idx(self) -> int | None:
        return self._info.eos_idx

    @property
    def vocab_size(self) -> int:
        return int(self._info.size)

    def describe(self) -> str:
        return (
            f"Fairseq2Tokenizer({type(self._tokenizer).__name__}, vocab_size={self.vocab_size}, "
            f"pad={self.pad_idx}, unk={self.unk_idx}, bos={self.bos_idx}, eos={self.eos_idx})"
        )
