"""Open parquet files with a schema check and read them row group by row group.

Only the needed columns are read. The audio column comes back as one values buffer and its
offsets (zero-copy NumPy views), never as per-row Python objects.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dali_asr.errors import DatasetError
from dali_asr.storage.discovery import DataFile

AUDIO = "audio_bytes"
LENGTH = "audio_size"
TEXT = "text"

READ_BATCH_BYTES = 1 << 20
"""Encoded audio decoded at a time when a row group's audio is read. Read whole, a column
chunk of ``list<int8>`` has pyarrow decode two 16-bit levels per byte of audio for all its
rows together: a 5.5 MB row group took 46 MB of memory for a few milliseconds, which the
allocator hands back to the system and faults in again at the next read. In 1 MB batches
(then joined into one chunk) the training stream took 14% less CPU per audio-second, its
peak RSS 100 MB less and its first batch half the time (benchmarks/RESULTS.md, 2026-12-06;
256 KB did less well)."""


def _is_audio_type(t: pa.DataType) -> bool:
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return t.value_type in (pa.int8(), pa.uint8())
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


_EXPECTED = {
    TEXT: ("string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
    AUDIO: ("list<int8> (the bytes of an encoded audio file)", _is_audio_type),
    LENGTH: ("an integer type (samples at 16 kHz)", pa.types.is_integer),
}


def check_schema(schema: pa.Schema, file: DataFile) -> None:
    """Raise DatasetError naming the file and column when a needed column is absent or mistyped."""
    for name, (expected, ok) in _EXPECTED.items():
        index = schema.get_field_index(name)
        if index < 0:
            raise DatasetError(
                f"{file.rel}: missing column {name!r} (expected {expected}; "
                f"columns found: {', '.join(schema.names)})"
            )
        actual = schema.field(index).type
        if not ok(actual):
            raise DatasetError(
                f"{file.rel}: column {name!r} has type {actual}, expected {expected}"
            )


@dataclass(frozen=True)
class RowGroupRef:
    """One row group: the unit read, shuffled and sharded."""

    file_index: int
    row_group: int
    num_rows: int


@dataclass
class AudioColumn:
    """The encoded audio of one row group: row i is ``values[offsets[i]:offsets[i + 1]]``."""

    values: np.ndarray
    offsets: np.ndarray

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]


class ParquetFiles:
    """The files of a split: footers read once (schema-checked, cached), row groups read
    through a fresh reader per call, so several threads may read at once."""

    def __init__(
        self,
        files: list[DataFile],
        filesystem: pafs.FileSystem | None = None,
        use_threads: bool = False,
    ) -> None:
        self.files = files
        self.filesystem = filesystem
        self.use_threads = use_threads
        self._metadata: dict[int, pq.FileMetaData] = {}
        self._lock = threading.Lock()
        self.row_groups_read = 0
        """Row groups read so far (data pages, not footers): start-up cost is visible."""

    def _open(self, index: int, metadata: pq.FileMetaData | None = None) -> pq.ParquetFile:
        file = self.files[index]
        source = (
            self.filesystem.open_input_file(str(file.path))
            if self.filesystem is not None
            else file.path
        )
        return pq.ParquetFile(source, metadata=metadata)

    def metadata(self, index: int) -> pq.FileMetaData:
        """The footer of a file; the first call checks its schema."""
        meta = self._metadata.get(index)
        if meta is not None:
            return meta
        file = self.files[index]
        try:
            pf = self._open(index)
        except (OSError, pa.ArrowException) as e:
            raise DatasetError(f"{file.rel}: cannot open as parquet: {e}") from e
        check_schema(pf.schema_arrow, file)
        with self._lock:
            self._metadata[index] = pf.metadata
        return pf.metadata

    def check_all(self) -> None:
        """Read every footer once: schema errors surface at start, not mid-epoch."""
        for i in range(len(self.files)):
            self.metadata(i)

    def row_groups(self) -> list[RowGroupRef]:
        """Every row group of the split, in file order."""
        refs = []
        for i in range(len(self.files)):
            meta = self.metadata(i)
            refs.extend(
                RowGroupRef(i, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)
            )
        return refs

    def read(self, ref: RowGroupRef, columns: list[str]) -> pa.Table:
        with self._lock:
            self.row_groups_read += 1
        try:
            meta = self.metadata(ref.file_index)
            pf = self._open(ref.file_index, meta)
            if AUDIO not in columns or ref.num_rows == 0:
                return pf.read_row_group(
                    ref.row_group, columns=columns, use_threads=self.use_threads
                )
            batches = pf.iter_batches(
                batch_size=_batch_rows(meta.row_group(ref.row_group)),
                row_groups=[ref.row_group],
                columns=columns,
                use_threads=self.use_threads,
            )
            # one chunk: the audio's row views and the mapped cache copy rely on it
            return pa.Table.from_batches(list(batches)).combine_chunks()
        except (OSError, pa.ArrowException) as e:
            rel = self.files[ref.file_index].rel
            raise DatasetError(f"{rel}: cannot read row group {ref.row_group}: {e}") from e

    def audio_column(self, table: pa.Table, ref: RowGroupRef) -> AudioColumn:
        """The audio of a row group read with ``read`` (zero-copy views of its buffers)."""
        chunked = table.column(AUDIO)
        # combine_chunks copies even a single chunk
        column = chunked.chunk(0) if chunked.num_chunks == 1 else chunked.combine_chunks()
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            buffers = column.buffers()
            offset_type = np.int64 if pa.types.is_large_binary(column.type) else np.int32
            offsets = np.frombuffer(buffers[1], offset_type)[
                column.offset : column.offset + len(column) + 1
            ]
            values = np.frombuffer(buffers[2], np.uint8)
        else:
            # Offsets of a (sliced) list array index the unsliced values: no rebasing needed.
            offsets = column.offsets.to_numpy()
            values = column.values.to_numpy(zero_copy_only=False).view(np.uint8)
        if len(offsets) != ref.num_rows + 1:
            rel = self.files[ref.file_index].rel
            raise DatasetError(
                f"{rel}: row group {ref.row_group} has {len(offsets) - 1} audio rows, "
                f"metadata says {ref.num_rows}"
            )
        return AudioColumn(values, offsets.astype(np.int64, copy=False))


def _batch_rows(group: pq.RowGroupMetaData) -> int:
    """Rows per batch that decode about ``READ_BATCH_BYTES`` of audio (see there)."""
    audio = sum(
        group.column(i).total_uncompressed_size
        for i in range(group.num_columns)
        if group.column(i).path_in_schema.split(".")[0] == AUDIO
    )
    per_row = max(1, audio // max(1, group.num_rows))
    return max(1, READ_BATCH_BYTES // per_row)
