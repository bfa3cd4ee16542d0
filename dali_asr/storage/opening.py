"""Opening a dataset for one or more splits: a local folder, a URI or a pyarrow filesystem in
Omnilingual's hive layout, or a manifest folder (``<split>.tsv`` + ``<split>.wrd``)."""

from __future__ import annotations

import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from dali_asr.errors import ConfigError, DatasetError
from dali_asr.storage.discovery import (
    describe_location,
    discover_split,
    open_filesystem,
    resolve_dataset_root,
)
from dali_asr.storage.filters import describe, filter_files, parse_partition_filter
from dali_asr.storage.manifest import ManifestFiles, is_manifest_dir, list_manifest_splits
from dali_asr.storage.row_groups import ParquetFiles
from dali_asr.text import CharTokenizer, Tokenizer, load_tokenizer


@dataclass
class OpenedDataset:
    root: Path | str
    files: ParquetFiles | ManifestFiles
    segments: list[range]
    """Each asked split's files, as a contiguous range of ``files``."""
    filesystem: pafs.FileSystem | None
    """None for local files."""

    @property
    def is_manifest(self) -> bool:
        return isinstance(self.files, ManifestFiles)

    def tokenizer(self, tokenizer: Tokenizer | str | Path | None) -> Tokenizer:
        """The given tokenizer, a SentencePiece model loaded from a path, or (None) the
        character vocabulary of this dataset's transcripts."""
        if isinstance(tokenizer, Tokenizer):
            return tokenizer
        if tokenizer is not None:
            return load_tokenizer(Path(tokenizer), None)
        if isinstance(self.files, ManifestFiles):
            with open(self.files.wrd_path, encoding="utf-8") as lines:
                return CharTokenizer.from_texts(line.rstrip("\n") for line in lines)
        if self.filesystem is not None:
            raise ConfigError(
                f"dataset {describe_location(self.filesystem, self.root)} is on a remote "
                "filesystem: give a tokenizer (--tokenizer MODEL; the built-in character "
                "vocabulary is built from local files)"
            )
        return load_tokenizer(None, Path(self.root))


def size_pyarrow_pools(pa_cpu_count: int) -> None:
    """Size pyarrow's CPU and I/O thread pools, as the reference's ``pa_cpu_count`` does when
    it builds its pipeline. They are the whole process's pools (every pyarrow user in it
    shares them), so only a caller that owns the process asks for this (``dali-asr`` does;
    ``AsrLoader(size_pyarrow_pools=True)``)."""
    if pa_cpu_count > 0:
        pa.set_cpu_count(pa_cpu_count)
        pa.set_io_thread_count(pa_cpu_count)


def open_dataset(
    data: str | Path,
    splits: list[str],
    *,
    partition_filters: str | list[str] | None = None,
    use_threads: bool = False,
    filesystem: pafs.FileSystem | None = None,
) -> OpenedDataset:
    """The files of ``splits`` (each in path order), filtered by ``partition_filters`` on every
    split (the reference filters training streams only)."""
    fs, inside = open_filesystem(data, filesystem)
    remote = filesystem is not None or not isinstance(fs, pafs.LocalFileSystem)
    if not remote and is_manifest_dir(Path(inside)):
        return _open_manifest(Path(inside), splits)
    remote_fs = fs if remote else None
    # the path inside the filesystem, not ``data``: a URI is no path inside its own filesystem
    root = resolve_dataset_root(inside, remote_fs)
    expression = parse_partition_filter(partition_filters)
    files: list = []
    segments = []
    for name in splits:
        found = discover_split(root, name, remote_fs)
        if expression is not None:
            found = filter_files(found, expression)
            if not found:
                raise DatasetError(
                    f"partition_filters {describe(expression)} leave no files in split "
                    f"{name!r} under {describe_location(remote_fs, root)}"
                )
        segments.append(range(len(files), len(files) + len(found)))
        files.extend(found)
    return OpenedDataset(root, ParquetFiles(files, remote_fs, use_threads), segments, remote_fs)


def _open_manifest(directory: Path, splits: list[str]) -> OpenedDataset:
    """The reference's manifest storage: one split at a time."""
    if len(splits) != 1:
        raise ConfigError(
            f"split {','.join(splits)!r}: a manifest folder is read one split at a time"
        )
    (split,) = splits
    if split not in list_manifest_splits(directory):
        found = ", ".join(list_manifest_splits(directory))
        raise DatasetError(f"no {split}.tsv in manifest folder {directory} (splits found: {found})")
    return OpenedDataset(directory, ManifestFiles(directory, split), [range(1)], None)


class CacheFolder:
    """Where a training stream caches the row groups it read (``fragment_loading.cache``): the
    configured ``cache_dir``, or a temporary folder made on first use and removed by
    :meth:`remove` or when this object is collected (the reference leaves its temporary folders
    behind)."""

    def __init__(self, enabled: bool, configured: str | None) -> None:
        self.enabled, self.configured = enabled, configured
        self._temporary: weakref.finalize | None = None
        self._path = ""

    def path(self) -> str | None:
        if not self.enabled:
            return None
        if self.configured is not None:
            Path(self.configured).mkdir(parents=True, exist_ok=True)
            return self.configured
        if self._temporary is None or not self._temporary.alive:
            self._path = tempfile.mkdtemp(prefix="dali-asr-cache-")
            self._temporary = weakref.finalize(self, shutil.rmtree, self._path, ignore_errors=True)
        return self._path

    def remove(self) -> None:
        """Remove a temporary folder (a configured one stays); safe to call more than once."""
        if self._temporary is not None:
            self._temporary()
