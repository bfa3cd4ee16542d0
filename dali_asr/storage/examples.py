"""Row group → examples: each row with its key, length, text, tokens (or why its text is
rejected) and, when loading, its encoded audio bytes."""

from __future__ import annotations

import os
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from dali_asr.keys import ExampleKey
from dali_asr.storage.discovery import DataFile
from dali_asr.storage.row_groups import (
    AUDIO,
    LENGTH,
    TEXT,
    AudioColumn,
    ParquetFiles,
    RowGroupRef,
)
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


def memory_mapped_copy(table: pa.Table, cache_dir: str | Path) -> pa.Table:
    """The reference's ``fragment_loading.cache``: the table written to an Arrow IPC file and
    mapped back, so what it holds is file-backed memory the kernel may page out. The file is
    unlinked at once; the mapping keeps it readable until the last view of it is gone."""
    path = Path(cache_dir) / f"rowgroup-{uuid.uuid4().hex}.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    try:
        # The IPC file format maps without a copy (the stream format the reference uses
        # reads the buffers into memory again).
        return pa.ipc.open_file(pa.memory_map(str(path), "rb")).read_all()
    finally:
        os.unlink(path)


def example_key(files: Sequence[DataFile], ex: Example) -> ExampleKey:
    """Where ``ex`` lives: its file (relative to the dataset root), row group and row."""
    return ExampleKey(files[ex.file_index].rel, ex.row_group, ex.row)


class ExampleReader:
    """Reads row groups into examples, in file order. With audio, each example's bytes are
    copied out, so the row group's buffers are freed at once (a view would pin the whole row
    group in memory for as long as one of its examples waits in a bucket)."""

    def __init__(self, files: ParquetFiles, text_filter: TextFilter) -> None:
        self.files = files
        self.text_filter = text_filter
        self.audio_enabled = True
        """False while a restored plan is replayed to its saved point: no audio is read then
        (``fill_audio`` reads it later for the examples that are still to be delivered)."""

    def read(self, ref: RowGroupRef, with_audio: bool) -> list[Example]:
        with_audio = with_audio and self.audio_enabled
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
            blob = audio.row(r).copy() if audio is not None else None
            out.append(Example(ref.file_index, ref.row_group, r, size, text, tok, reason, blob))
        return out


class KeyLookup:
    """Examples of a saved state, by key ``[file index, row group, row]``, read again from
    their row groups (metadata only; the audio is read when their batch comes). Each row group
    is read once until :meth:`clear`."""

    def __init__(self, reader: ExampleReader, row_groups: Sequence[RowGroupRef]) -> None:
        self.reader = reader
        self._refs = {(r.file_index, r.row_group): r for r in row_groups}
        self._cache: dict[tuple[int, int], list[Example]] = {}

    def __call__(self, key: Sequence[int]) -> Example:
        file_index, group, row = key
        rows = self._cache.get((file_index, group))
        if rows is None:
            rows = self._cache[(file_index, group)] = self.reader.read(
                self._refs[(file_index, group)], False
            )
        return rows[row]

    def clear(self) -> None:
        self._cache.clear()


class AudioCache:
    """The encoded audio of planned examples, read a row group at a time and kept for the next
    batches that take examples of the same row group: the ``capacity`` row groups used last.
    Examples get views of the row group's buffer (no copy). With ``cache_dir`` (the reference's
    ``fragment_loading.cache``) each row group's audio is file-backed (``memory_mapped_copy``).
    """

    def __init__(
        self, files: ParquetFiles, capacity: int, cache_dir: str | Path | None = None
    ) -> None:
        self.files, self.capacity, self.cache_dir = files, max(1, capacity), cache_dir
        self._refs = {(r.file_index, r.row_group): r for r in files.row_groups()}
        self._columns: OrderedDict[tuple[int, int], AudioColumn] = OrderedDict()
        self.reads = 0
        """Row groups whose audio was read (a read again after eviction counts again)."""

    def __len__(self) -> int:
        """Row groups held now."""
        return len(self._columns)

    def fill(self, examples: list[Example]) -> None:
        """Give the examples that have no audio (planned from metadata, or restored) theirs.
        The row groups not cached are read at once, on as many threads (up to 4; pyarrow
        releases the GIL), since a batch's examples often come from several."""
        needed = list(
            dict.fromkeys((ex.file_index, ex.row_group) for ex in examples if ex.audio is None)
        )
        columns = {key: self._columns[key] for key in needed if key in self._columns}
        missing = [key for key in needed if key not in columns]
        if len(missing) > 1:
            with ThreadPoolExecutor(min(4, len(missing)), "dali-asr-audio") as pool:
                columns.update(zip(missing, pool.map(self._read, missing), strict=True))
        else:
            columns.update((key, self._read(key)) for key in missing)
        for key in needed:
            if key in self._columns:
                self._columns.move_to_end(key)
            else:
                self._columns[key] = columns[key]
        while len(self._columns) > self.capacity:
            self._columns.popitem(last=False)
        for ex in examples:
            if ex.audio is None:
                ex.audio = columns[(ex.file_index, ex.row_group)].row(ex.row)

    def _read(self, key: tuple[int, int]) -> AudioColumn:
        ref = self._refs[key]
        table = self.files.read(ref, [AUDIO])
        if self.cache_dir is not None:
            table = memory_mapped_copy(table, self.cache_dir)
        self.reads += 1
        return self.files.audio_column(table, ref)


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
