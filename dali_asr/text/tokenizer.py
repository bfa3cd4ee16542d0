"""Text tokenisers (pipeline stage T4): raw SentencePiece or a built-in character vocabulary.

Both produce what the reference's ``char_tokenizer`` family produces: an int64 1-D array of
piece ids with no BOS/EOS (no control symbols are added by the encoder).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["CharTokenizer", "SentencePieceTokenizer", "Tokenizer", "load_tokenizer"]


class Tokenizer(ABC):
    """Encoder from a transcript to int64 token ids, without BOS/EOS."""

    @abstractmethod
    def encode(self, text: str) -> np.ndarray:
        """Encode one text to an int64 1-D array of raw pieces (no BOS/EOS)."""

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Encode many texts; equal to ``[encode(t) for t in texts]``, usually faster."""
        return [self.encode(t) for t in texts]

    @property
    @abstractmethod
    def pad_idx(self) -> int:
        """Id used to pad token sequences at collation."""

    @property
    @abstractmethod
    def unk_idx(self) -> int:
        """Id emitted for characters/pieces outside the vocabulary."""

    @property
    @abstractmethod
    def bos_idx(self) -> int | None:
        """Beginning-of-sentence id (never emitted by ``encode``), or None if the model has none."""

    @property
    @abstractmethod
    def eos_idx(self) -> int | None:
        """End-of-sentence id (never emitted by ``encode``), or None if the model has none."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, i.e. every id is in ``[0, vocab_size)``."""

    @abstractmethod
    def describe(self) -> str:
        """One-line human-readable summary (kind, source, vocabulary size, special ids)."""

    def fingerprint(self) -> str:
        """What a saved position records of the tokenizer: another one counts other tokens,
        so the text filters keep other examples and the plan changes. By default the
        description; the built-in tokenizers hash their vocabulary instead, wherever it is
        loaded from."""
        return self.describe()


class SentencePieceTokenizer(Tokenizer):
    """Raw SentencePiece encoder, as fairseq2's ``char_tokenizer`` family uses it.

    Special ids come from the model itself. A model trained without a ``<pad>`` piece
    (``pad_id() == -1``) gets ``pad_idx = piece count`` and ``vocab_size`` grows by one: this is
    what fairseq2 does when such a model is loaded with the ``<pad>`` control symbol appended
    (the encoder can never emit that id, so padding stays distinguishable from real tokens).
    """

    def __init__(self, model_path: str | Path, num_threads: int = -1) -> None:
        import sentencepiece as spm

        self._path = Path(model_path)
        if not self._path.is_file():
            raise FileNotFoundError(f"SentencePiece model not found: {self._path}")
        try:
            self._sp = spm.SentencePieceProcessor(model_file=str(self._path))
        except (OSError, RuntimeError) as exc:
            raise ValueError(f"cannot load SentencePiece model {self._path}: {exc}") from exc
        self._num_threads = num_threads
        n = self._sp.get_piece_size()
        pad = self._sp.pad_id()
        self._pad = pad if pad >= 0 else n
        self._vocab_size = n if pad >= 0 else n + 1
        bos, eos = self._sp.bos_id(), self._sp.eos_id()
        self._bos = bos if bos >= 0 else None
        self._eos = eos if eos >= 0 else None
        self._numpy_out = self._supports_numpy_output()
        self._fingerprint: str | None = None

    def _supports_numpy_output(self) -> bool:
        # sentencepiece >= 0.2.1 can return int32 buffers directly, which skips building
        # a Python int per token; older releases reject the return type.
        try:
            out = self._sp.encode(["a"], return_type="numpy", num_threads=1)
        except (TypeError, ValueError):
            return False
        return isinstance(out[0], np.ndarray)

    def encode(self, text: str) -> np.ndarray:
        """Encode one text with the model's normaliser; no BOS/EOS."""
        return np.asarray(self._sp.encode(text), dtype=np.int64)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Encode many texts with SentencePiece's multi-threaded batch encoder."""
        if self._numpy_out:
            rows = self._sp.encode(list(texts), return_type="numpy", num_threads=self._num_threads)
            return [r.astype(np.int64) for r in rows]
        rows = self._sp.encode(list(texts), num_threads=self._num_threads)
        return [np.array(r, dtype=np.int64) for r in rows]

    @property
    def pad_idx(self) -> int:
        return self._pad

    @property
    def unk_idx(self) -> int:
        return self._sp.unk_id()

    @property
    def bos_idx(self) -> int | None:
        return self._bos

    @property
    def eos_idx(self) -> int | None:
        return self._eos

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def fingerprint(self) -> str:
        # hashed once: a large model takes milliseconds, and every saved state asks
        if self._fingerprint is None:
            model = hashlib.sha256(self._sp.serialized_model_proto()).hexdigest()[:16]
            self._fingerprint = f"SentencePiece model sha256 {model}"
        return self._fingerprint

    def describe(self) -> str:
        return (
            f"SentencePieceTokenizer({self._path}, vocab_size={self.vocab_size}, "
            f"pad={self.pad_idx}, unk={self.unk_idx}, bos={self.bos_idx}, eos={self.eos_idx})"
        )


_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
_FIRST_CHAR_ID = len(_SPECIALS)
_JSON_KIND = "dali_asr.char_tokenizer"
_JSON_VERSION = 1


def _code_points(text: str) -> np.ndarray:
    # UTF-32 gives one uint32 per Python character; surrogatepass keeps lone surrogates
    # (possible in Python strings) instead of raising.
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _string_array_code_points(arr: pa.Array) -> np.ndarray:
    """Unique code points of a (large_)string array, without a Python loop over rows."""
    arr = pc.drop_null(arr).cast(pa.large_string())
    if len(arr) == 0:
        return np.empty(0, dtype=np.uint32)
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    # The values of consecutive rows are contiguous: one decode covers the whole chunk.
    blob = memoryview(data_buf)[offsets[0] : offsets[-1]]
    return np.unique(_code_points(str(blob, "utf-8", "surrogatepass")))


class CharTokenizer(Tokenizer):
    """Built-in character vocabulary: ``<s>``=0 ``<pad>``=1 ``</s>``=2 ``<unk>``=3, then every
    known code point, sorted by code point, from id 4.

    Every character is a token, whitespace included: a space is an ordinary character with its
    own id. This does NOT reproduce a SentencePiece char model (which maps spaces to ``▁``, adds
    a leading ``▁`` and collapses runs of whitespace); use :class:`SentencePieceTokenizer` for
    parity with the reference. The vocabulary depends only on the set of characters, so it is
    deterministic regardless of input order.
    """

    def __init__(self, code_points: Iterable[int]) -> None:
        cps = np.unique(np.fromiter(code_points, dtype=np.int64))
        if cps.size and (cps[0] < 0 or cps[-1] > 0x10FFFF):
            raise ValueError("code points must be in [0, 0x10FFFF]")
        self._cps = cps
        # Dense lookup table indexed by code point: encode is one gather, no search.
        top = int(cps[-1]) if cps.size else 0
        self._table = np.full(top + 2, 3, dtype=np.int64)
        self._table[cps] = np.arange(_FIRST_CHAR_ID, _FIRST_CHAR_ID + cps.size, dtype=np.int64)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CharTokenizer:
        """Vocabulary of every distinct character in ``texts``."""
        it = iter(texts)
        found = [np.empty(0, dtype=np.uint32)]
        # Joining chunks keeps the per-character work in C while bounding memory.
        while chunk := list(islice(it, 8192)):
            found.append(np.unique(_code_points("".join(chunk))))
        return cls(np.concatenate(found).tolist())

    @classmethod
    def from_dataset(cls, root: str | Path, column: str = "text") -> CharTokenizer:
        """Vocabulary of every character of ``column`` in every ``*.parquet`` under ``root``.

        All splits are read. Only the text column is read, one row group at a time, so the
        audio bytes never leave the disk. Files whose name starts with ``.`` or ``_`` are
        skipped, as pyarrow.dataset does by default.
        """
        root = Path(root)
        files = sorted(
            p for p in root.rglob("*.parquet") if not p.name.startswith((".", "_")) and p.is_file()
        )
        if not files:
            raise FileNotFoundError(f"no *.parquet files under {root}")
        found: list[np.ndarray] = []
        for path in files:
            pf = pq.ParquetFile(path)
            if column not in pf.schema_arrow.names:
                raise ValueError(f"{path} has no {column!r} column")
            for rg in range(pf.num_row_groups):
                col = pf.read_row_group(rg, columns=[column]).column(0)
                found.extend(_string_array_code_points(c) for c in col.chunks)
        return cls(np.unique(np.concatenate(found)).tolist())

    @property
    def chars(self) -> str:
        """The vocabulary characters in id order (id ``4 + i`` is ``chars[i]``)."""
        return "".join(map(chr, self._cps.tolist()))

    def encode(self, text: str) -> np.ndarray:
        """One id per character; characters outside the vocabulary map to ``<unk>``."""
        cps = _code_points(text)
        return self._table[np.minimum(cps, len(self._table) - 1)]

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Encode all texts with one concatenation and one table gather."""
        if not texts:
            return []
        ids = self.encode("".join(texts))
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        return np.split(ids, np.cumsum(lengths)[:-1])

    # Fixed ids, the same as the shipped SentencePiece char model's.
    bos_idx: int = 0
    pad_idx: int = 1
    eos_idx: int = 2
    unk_idx: int = 3

    @property
    def vocab_size(self) -> int:
        return _FIRST_CHAR_ID + int(self._cps.size)

    def fingerprint(self) -> str:
        code_points = hashlib.sha256(self._cps.tobytes()).hexdigest()[:16]
        return f"CharTokenizer code points sha256 {code_points}"

    def describe(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, pad=1, unk=3, bos=0, eos=2)"

    def to_json(self) -> str:
        """Serialise; code points are stored as integers so whitespace survives any editor."""
        doc = {"kind": _JSON_KIND, "version": _JSON_VERSION, "specials": list(_SPECIALS)}
        return json.dumps({**doc, "code_points": self._cps.tolist()})

    @classmethod
    def from_json(cls, data: str) -> CharTokenizer:
        """Inverse of :meth:`to_json`."""
        obj = json.loads(data)
        if obj.get("kind") != _JSON_KIND or obj.get("version") != _JSON_VERSION:
            raise ValueError("not a CharTokenizer JSON document (kind/version mismatch)")
        return cls(obj["code_points"])


def load_tokenizer(path: str | Path | None, dataset_root: str | Path | None = None) -> Tokenizer:
    """Load the tokenizer the pipeline encodes with.

    A ``.json`` file (from :meth:`CharTokenizer.to_json`) → :class:`CharTokenizer`; any other
    path, normally a ``.model`` file → :class:`SentencePieceTokenizer`; None → a
    :class:`CharTokenizer` built from every parquet file under ``dataset_root``.
    """
    if path is None:
        if dataset_root is None:
            raise ValueError("need a tokenizer path or a dataset root to build one from")
        return CharTokenizer.from_dataset(Path(dataset_root))
    path = Path(path)
    if path.suffix != ".json":
        return SentencePieceTokenizer(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    return CharTokenizer.from_json(path.read_text(encoding="utf-8"))
