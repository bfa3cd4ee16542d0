"""Row group → examples: each row with its key, length, text, tokens (or why its text is
rejected) and, when loading, its encoded audio bytes."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass

import numpy as np

from dali_asr.storage.row_groups import AUDIO, LENGTH, TEXT, ParquetFiles, RowGroupRef
from dali_asr.text import TextFilter


@dataclass(slots=True)
class Example:
    """One row of the dataset on its way through planning.

    ``tokens`` is None and ``reject`` names the reason when a text filter drops the example;
    the decision is computed when the row group is read (one batched tokenization) but applied
    where the reference applies it, after the example shuffle, so block shuffles stay exact.
    """

    file_index: int
    row_group: int
    row: int
    audio_size: int
    text: str
    tokens: np.ndarray | None
    reject: str | None = None
    audio: np.ndarray | None = None


class ExampleReader:
    """Reads row groups into examples, in file order."""

    def __init__(self, files: ParquetFiles, text_filter: TextFilter) -> None:
        self.files = files
        self.text_filter = text_filter

    def read(self, ref: RowGroupRef, with_audio: bool) -> list[Example]:
        columns = [LENGTH, TEXT, AUDIO] if with_audio else [LENGTH, TEXT]
        table = self.files.read(ref, columns)
        sizes = table.column(LENGTH).to_numpy().astype(np.int64, copy=False)
        texts = [t or "" for t in table.column(TEXT).to_pylist()]
        tokens, reasons = self.text_filter.apply_batch(sizes, texts)
        audio = self.files.audio_column(table, ref) if with_audio else None
        out = []
        for r, (size, text, tok, reason) in enumerate(
            zip(sizes.tolist(), texts, tokens, reasons, strict=True)
        ):
            # A copy, so that one example waiting in a bucket does not pin its whole row group.
            blob = audio.row(r).copy() if audio is not None else None
            out.append(Example(ref.file_index, ref.row_group, r, size, text, tok, reason, blob))
        return out


class ReadAhead:
    """Row groups of a sequence read ``depth`` ahead on a shared thread pool (the reference's
    ``fragment_loading.nb_prefetch``); depth 0, or no pool, reads each when it is needed."""

    def __init__(
        self,
        reader: ExampleReader,
        refs: Iterator[RowGroupRef],
        with_audio: bool,
        depth: int = 0,
        pool: Executor | None = None,
    ) -> None:
        self.reader = reader
        self.refs = refs
        self.with_audio = with_audio
        self.depth = depth if pool is not None else 0
        self.pool = pool
        self._pending: deque[Future[list[Example]]] = deque()

    def __iter__(self) -> Iterator[list[Example]]:
        return self

    def __next__(self) -> list[Example]:
        if self.depth == 0:
            return self.reader.read(next(self.refs), self.with_audio)
        while len(self._pending) <= self.depth:
            ref = next(self.refs, None)
            if ref is None:
                break
            assert self.pool is not None
            self._pending.append(self.pool.submit(self.reader.read, ref, self.with_audio))
        if not self._pending:
            raise StopIteration
        return self._pending.popleft().result()
