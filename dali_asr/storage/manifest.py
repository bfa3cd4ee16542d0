"""Omnilingual's manifest storage (TSV + WRD) read through the same interface as parquet.

A manifest directory holds ``<split>.tsv``: the audio root directory on its first line, then
``relative/path.flac<TAB>num_samples`` per line, where the path may name a byte slice,
``path:offset`` (to the end of the file) or ``path:offset:size``, as fairseq2's ``FileMapper``
parses it; and ``<split>.wrd``: one transcript per line, line-aligned with the TSV rows. Lines
are right-trimmed of ASCII whitespace, as fairseq2's ``read_text(rtrim=True)`` does. A relative
root is taken from the working directory, and an absolute audio path ignores the root, as in
the reference.

``ManifestFiles`` duck-types ``ParquetFiles``: consecutive chunks of ``chunk_rows`` lines play
the part of row groups (the unit read, shuffled and sharded), so planning, the training stream
and the loader run unchanged. Example keys read ``<split>.tsv:<chunk>:<row in chunk>``.
"""

from __future__ import annotations

import threading
from array import array
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa

from dali_asr.errors import DatasetError
from dali_asr.storage.discovery import DataFile
from dali_asr.storage.row_groups import AUDIO, LENGTH, TEXT, AudioColumn, RowGroupRef

_INT32_MAX = 2**31 - 1


def list_manifest_splits(directory: Path) -> list[str]:
    """The splits of a manifest directory: the stems of its ``*.tsv`` files, sorted."""
    return sorted(p.stem for p in Path(directory).glob("*.tsv") if p.is_file())


def is_manifest_dir(directory: Path) -> bool:
    """A folder with ``*.tsv`` files and no ``corpus=``/``version=`` folders (so a parquet
    dataset root that also carries a stats or listing TSV is still read as parquet)."""
    directory = Path(directory)
    if not directory.is_dir() or not list_manifest_splits(directory):
        return False
    return not any(
        p.is_dir() and p.name.startswith(("corpus=", "version=")) for p in directory.iterdir()
    )


def parse_audio_spec(spec: str) -> tuple[str, int, int]:
    """``path[:offset[:size]]`` → (path, offset, size); offset -1: whole file, size -1: to the
    end. Raises ValueError with what was expected (fairseq2's FileMapper rules)."""
    parts = [p.strip() for p in spec.split(":")]
    if len(parts) > 3 or any(not p for p in parts):
        raise ValueError(f"expected path[:offset[:size]] with non-empty parts, got {spec!r}")
    numbers = [*parts[1:], "-1", "-1"][:2]
    for name, text in zip(("offset", "size"), parts[1:], strict=False):
        if not (text.isascii() and text.isdigit()):
            raise ValueError(f"expected a non-negative integer {name} in {spec!r}, got {text!r}")
    return parts[0], int(numbers[0]), int(numbers[1])


@dataclass
class _Index:
    """Line i is TSV bytes ``tsv_starts[i]:tsv_starts[i + 1]`` and WRD bytes likewise."""

    root: Path
    num_samples: np.ndarray
    tsv_starts: np.ndarray
    wrd_starts: np.ndarray


class ManifestFiles:
    """One split of a manifest directory, read in chunks of ``chunk_rows`` lines.

    Parsed lazily on first use (``check_all``, ``row_groups`` or ``read``), in one streaming
    pass over the TSV and the WRD that validates every line (about 2 s per million lines).
    Memory: three int64 per line (the sample count and the line's byte offsets in both files),
    about 24 MB per million lines; paths and transcripts stay on disk and are read back per
    chunk, one seek per file, far less than the audio the chunk loads. Audio files are opened
    only when ``audio_bytes`` is read, so a missing file surfaces when its chunk is loaded, not
    at start (checking millions of files up front would dominate start-up on network storage).

    ``corpus`` is the directory name (the reference has no corpus for manifests; the name
    keeps reports and partition labels readable); ``language`` is empty.
    """

    def __init__(self, directory: Path, split: str, chunk_rows: int = 100) -> None:
        if chunk_rows < 1:
            raise DatasetError(f"manifest chunk_rows must be at least 1, got {chunk_rows}")
        self.directory = Path(directory).expanduser()
        self.split = split
        self.chunk_rows = chunk_rows
        self.tsv_path = self.directory / f"{split}.tsv"
        self.wrd_path = self.directory / f"{split}.wrd"
        corpus = self.directory.resolve().name or "manifest"
        self.files = [DataFile(self.tsv_path, f"{split}.tsv", corpus, split, "")]
        self.row_groups_read = 0
        """Chunks read so far (like ParquetFiles: start-up cost is visible)."""
        self._index: _Index | None = None
        self._lock = threading.Lock()

    def _get_index(self) -> _Index:
        with self._lock:
            if self._index is None:
                self._index = self._parse()
            return self._index

    def _parse(self) -> _Index:
        tsv = self.tsv_path
        if not tsv.is_file():
            found = ", ".join(list_manifest_splits(self.directory)) or "none"
            raise DatasetError(f"{tsv}: manifest file not found (splits found: {found})")
        samples, tsv_starts = array("q"), array("q")
        try:
            with tsv.open("rb") as f:
                header = f.readline()
                pos = len(header)
                root = Path(_decode(header.rstrip(), tsv, 1))
                # An empty header would silently mean the working directory.
                if not header.strip() or not root.is_dir():
                    raise DatasetError(
                        f"{tsv}: line 1: expected the audio root directory (an existing "
                        f"folder), got {header.rstrip()!r}"
                    )
                for lineno, line in enumerate(f, start=2):
                    tsv_starts.append(pos)
                    pos += len(line)
                    samples.append(_parse_tsv_line(line, tsv, lineno)[1])
                tsv_starts.append(pos)
            wrd_starts = _line_starts(self.wrd_path)
        except OSError as e:
            raise DatasetError(f"{e.filename or tsv}: cannot read the manifest: {e}") from e
        rows, texts = len(samples), len(wrd_starts) - 1
        if texts != rows:
            raise DatasetError(
                f"{self.wrd_path}: line {min(rows, texts) + 1}: expected {rows} transcript lines, "
                f"one per row of {tsv.name}, found {texts}"
            )
        arrays = (np.frombuffer(a, np.int64) for a in (samples, tsv_starts, wrd_starts))
        return _Index(root, *arrays)

    def check_all(self) -> None:
        """Parse and validate the whole manifest now: errors surface at start, not mid-epoch."""
        self._get_index()

    def row_groups(self) -> list[RowGroupRef]:
        """Consecutive chunks of ``chunk_rows`` lines, in manifest order."""
        n = len(self._get_index().num_samples)
        return [
            RowGroupRef(0, g, min(self.chunk_rows, n - start))
            for g, start in enumerate(range(0, n, self.chunk_rows))
        ]

    def read(self, ref: RowGroupRef, columns: list[str]) -> pa.Table:
        """The requested columns (``audio_size``, ``text``, ``audio_bytes``) of one chunk."""
        index = self._get_index()
        with self._lock:
            self.row_groups_read += 1
        first = ref.row_group * self.chunk_rows
        stop = first + ref.num_rows
        out: dict[str, pa.Array] = {}
        for name in columns:
            if name == LENGTH:
                out[name] = pa.array(index.num_samples[first:stop], pa.int64())
            elif name == TEXT:
                lines = _read_lines(self.wrd_path, index.wrd_starts[first : stop + 1])
                # Decoding was validated at parse time.
                out[name] = pa.array([ln.rstrip().decode() for ln in lines], pa.string())
            elif name == AUDIO:
                lines = _read_lines(self.tsv_path, index.tsv_starts[first : stop + 1])
                blobs = [
                    self._read_audio(index.root, line, first + i + 2)
                    for i, line in enumerate(lines)
                ]
                big = sum(len(b) for b in blobs) > _INT32_MAX
                out[name] = pa.array(blobs, pa.large_binary() if big else pa.binary())
            else:
                raise DatasetError(
                    f"{self.tsv_path.name}: a manifest has no column {name!r} "
                    f"(it provides {LENGTH}, {TEXT}, {AUDIO})"
                )
        return pa.table(out)

    def _read_audio(self, root: Path, line: bytes, lineno: int) -> bytes:
        rel, offset, size = _parse_tsv_line(line, self.tsv_path, lineno)[0]
        path = root / rel  # an absolute path in the manifest wins, as in fairseq2
        where = f"{self.tsv_path}: line {lineno}: audio file {path}"
        try:
            with path.open("rb") as f:
                total = f.seek(0, 2)
                start = max(offset, 0)
                end = total if size < 0 else start + size
                if start > total or end > total:
                    raise DatasetError(
                        f"{where}: expected bytes {start}:{end} within its {total} bytes"
                    )
                f.seek(start)
                return f.read(end - start)
        except OSError as e:
            raise DatasetError(f"{where} cannot be read: {e.strerror or e}") from e

    def audio_column(self, table: pa.Table, ref: RowGroupRef) -> AudioColumn:
        """The audio of a chunk read with ``read``: zero-copy views of its binary buffers."""
        column = table.column(AUDIO).combine_chunks()
        offset_type = np.int64 if pa.types.is_large_binary(column.type) else np.int32
        buffers = column.buffers()
        offsets = np.frombuffer(buffers[1], offset_type)[
            column.offset : column.offset + len(column) + 1
        ]
        if len(offsets) != ref.num_rows + 1:
            raise DatasetError(
                f"{self.files[0].rel}: chunk {ref.row_group} has {len(offsets) - 1} audio rows, "
                f"expected {ref.num_rows}"
            )
        # An all-empty binary column may have no data buffer.
        data = buffers[2]
        values = np.frombuffer(data, np.uint8) if data is not None else np.empty(0, np.uint8)
        return AudioColumn(values, offsets.astype(np.int64, copy=False))


def _decode(raw: bytes, path: Path, lineno: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: line {lineno}: expected UTF-8 text: {e}") from e


def _parse_tsv_line(line: bytes, path: Path, lineno: int) -> tuple[tuple[str, int, int], int]:
    """One TSV row → ((path, offset, size), num_samples), or DatasetError naming the line."""
    fields = _decode(line.rstrip(), path, lineno).split("\t")
    if len(fields) != 2:
        raise DatasetError(
            f"{path}: line {lineno}: expected 2 tab-separated fields (audio path, sample "
            f"count), found {len(fields)}: {line.rstrip()!r}"
        )
    try:
        spec = parse_audio_spec(fields[0])
    except ValueError as e:
        raise DatasetError(f"{path}: line {lineno}: {e}") from None
    try:
        # Python's int(), as the reference casts the field; negative counts make no sense.
        count = int(fields[1])
        if count < 0:
            raise ValueError
    except ValueError:
        expected = "expected a non-negative integer sample count"
        raise DatasetError(f"{path}: line {lineno}: {expected}, got {fields[1]!r}") from None
    return spec, count


def _line_starts(path: Path) -> array[int]:
    """Byte offsets of each line of a text file, plus its end; validates UTF-8."""
    starts, pos = array("q"), 0
    with path.open("rb") as f:
        for lineno, line in enumerate(f, start=1):
            _decode(line, path, lineno)
            starts.append(pos)
            pos += len(line)
    starts.append(pos)
    return starts


def _read_lines(path: Path, starts: np.ndarray) -> list[bytes]:
    """Lines ``starts[i]:starts[i + 1]`` of a file, read in one call."""
    base = int(starts[0])
    try:
        with path.open("rb") as f:
            f.seek(base)
            data = f.read(int(starts[-1]) - base)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the manifest: {e}") from e
    bounds = (starts - base).tolist()
    return [data[a:b] for a, b in pairwise(bounds)]
