"""Row group → examples: each row with its key, length, text, tokens (or why its text is
rejected) and, when loading, its encoded audio bytes."""

from __future__ import annotations

import os
import threading
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

CORES = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()) or 1
"""The cores this process may run on."""
FILL_THREADS = max(1, min(4, CORES))
"""Threads that read the row groups of one batch's audio at once (``AudioCache.fill``)."""


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


METADATA_CACHE_ROWS = 10_000
"""Rows whose metadata (length, text, tokens, text decision) an ``ExampleReader`` keeps from
its metadata-only reads, the row groups used last. A training stream comes back to the row
groups of its small partitions (a language of one row group is read again each time the
sampler draws past its end): their text is read and tokenised once. A row costs about 1 KB
(espeak-mini's sentences), so the cache stays near 10 MB."""


@dataclass(frozen=True, slots=True)
class RowGroupMetadata:
    """What planning needs of a row group's rows, decided once (see ``ExampleReader``)."""

    sizes: list[int]
    texts: list[str]
    tokens: list[np.ndarray | None]
    reasons: list[str | None]


class ExampleReader:
    """Reads row groups into examples, in file order. With audio, each example's bytes are
    copied out, so the row group's buffers are freed at once (a view would pin the whole row
    group in memory for as long as one of its examples waits in a bucket). Metadata-only reads
    are cached (``cache_rows`` rows, least recently used out first); every read gives new
    ``Example`` objects, as planning fills in their audio and tokens."""

    def __init__(
        self, files: ParquetFiles, text_filter: TextFilter, cache_rows: int = METADATA_CACHE_ROWS
    ) -> None:
        self.files = files
        self.text_filter = text_filter
        self.audio_enabled = True
        """False while a restored plan is replayed to its saved point: no audio is read then
        (``fill_audio`` reads it later for the examples that are still to be delivered)."""
        self.cache_rows = cache_rows
        self._cached: OrderedDict[tuple[int, int], RowGroupMetadata] = OrderedDict()
        self._cached_rows = 0
        self._lock = threading.Lock()  # read-ahead threads and the planning thread share it

    def read(self, ref: RowGroupRef, with_audio: bool) -> list[Example]:
        if with_audio and self.audio_enabled:
            table = self.files.read(ref, [LENGTH, TEXT, AUDIO])
            audio = self.files.audio_column(table, ref)
            return self._examples(ref, self._decide(table), audio)
        return self._examples(ref, self._metadata(ref), None)

    def _metadata(self, ref: RowGroupRef) -> RowGroupMetadata:
        key = (ref.file_index, ref.row_group)
        with self._lock:
            meta = self._cached.get(key)
            if meta is not None:
                self._cached.move_to_end(key)
                return meta
        meta = self._decide(self.files.read(ref, [LENGTH, TEXT]))
        with self._lock:
            if key not in self._cached and len(meta.sizes) <= self.cache_rows:
                self._cached[key] = meta
                self._cached_rows += len(meta.sizes)
                while self._cached_rows > self.cache_rows:
                    _, old = self._cached.popitem(last=False)
                    self._cached_rows -= len(old.sizes)
        return meta

    def _decide(self, table: pa.Table) -> RowGroupMetadata:
        sizes = table.column(LENGTH).to_numpy().astype(np.int64, copy=False)
        texts = [t or "" for t in table.column(TEXT).to_pylist()]
        tokens, reasons = self.text_filter.apply_batch(sizes, texts)
        return RowGroupMetadata(sizes.tolist(), texts, tokens, reasons)

    @staticmethod
    def _examples(
        ref: RowGroupRef, meta: RowGroupMetadata, audio: AudioColumn | None
    ) -> list[Example]:
        out = []
        for r, (size, text, tok, reason) in enumerate(
            zip(meta.sizes, meta.texts, meta.tokens, meta.reasons, strict=True)
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
        The row groups not cached are read at once, on as many threads as there are cores (up
        to 4; pyarrow releases the GIL), since a batch's examples often come from several.
        More threads than cores made the first batch of a training stream wait longer: on 2
        cores, four concurrent reads of 5 MB row groups took 60-75 ms where two took 40-55."""
        needed = list(
            dict.fromkeys((ex.file_index, ex.row_group) for ex in examples if ex.audio is None)
        )
        columns = {key: self._columns[key] for key in needed if key in self._columns}
        missing = [key for key in needed if key not in columns]
        if len(missing) > 1:
            with ThreadPoolExecutor(min(FILL_THREADS, len(missing)), "dali-asr-audio") as pool:
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
