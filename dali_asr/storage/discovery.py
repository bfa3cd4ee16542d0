"""Find the parquet files of a split in Omnilingual's hive layout.

``<root>/corpus=<c>/split=<s>/language=<l>/*.parquet``; ``<root>`` may be wrapped in a single
``version=<v>`` folder, which is descended into. Local paths, URIs (``s3://``, ``gs://``, ...)
and any ``pyarrow.fs.FileSystem`` work alike; local roots and files are ``Path`` objects,
others strings inside their filesystem.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from dali_asr.errors import DatasetError

log = logging.getLogger(__name__)

PARTITION_KEYS = ("corpus", "split", "language")

Location = Path | str


@dataclass(frozen=True)
class DataFile:
    """One parquet file of a split, with the partition values from its path."""

    path: Location
    rel: str
    """Path relative to the dataset root: the ``file`` of example keys."""
    corpus: str
    split: str
    language: str


def open_filesystem(
    path: str | Path, filesystem: pafs.FileSystem | None = None
) -> tuple[pafs.FileSystem, Location]:
    """The filesystem and the path inside it: a given filesystem object, a URI's, or local."""
    if filesystem is not None:
        return filesystem, str(path)
    text = str(path)
    if "://" in text and not text.startswith("file://"):
        try:
            return pafs.FileSystem.from_uri(text)
        except (pa.ArrowException, ValueError) as e:
            raise DatasetError(f"dataset path {text}: cannot open its filesystem: {e}") from e
    return pafs.LocalFileSystem(), Path(text.removeprefix("file://")).expanduser()


def _info(fs: pafs.FileSystem, path: Location) -> pafs.FileInfo:
    try:
        return fs.get_file_info(str(path))
    except (OSError, pa.ArrowException) as e:
        raise DatasetError(f"dataset path {path}: cannot be read: {e}") from e


def _children(fs: pafs.FileSystem, path: Location, prefix: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(str(path)))
    return sorted(
        i.base_name
        for i in infos
        if i.type == pafs.FileType.Directory and i.base_name.startswith(prefix)
    )


def _join(root: Location, name: str) -> Location:
    if isinstance(root, Path):
        return root / name
    return f"{root.rstrip('/')}/{name}" if root.strip("/") else name


def resolve_dataset_root(path: str | Path, filesystem: pafs.FileSystem | None = None) -> Location:
    """The folder that holds ``corpus=*`` folders (descending into a lone ``version=*``)."""
    fs, root = open_filesystem(path, filesystem)
    info = _info(fs, root)
    if info.type == pafs.FileType.NotFound:
        raise DatasetError(f"dataset path {root} does not exist")
    if info.type != pafs.FileType.Directory:
        raise DatasetError(f"dataset path {root} is not a folder")
    if _children(fs, root, "corpus="):
        return root
    versions = _children(fs, root, "version=")
    if len(versions) == 1:
        return resolve_dataset_root(_join(root, versions[0]), filesystem)
    if len(versions) > 1:
        raise DatasetError(f"dataset path {root} holds several versions ({', '.join(versions)}); "
                           "pick one")  # fmt: skip
    raise DatasetError(
        f"dataset path {root} holds no corpus=<name> folders (expected the hive layout "
        "corpus=<c>/split=<s>/language=<l>/*.parquet)"
    )


def parse_split(name: str) -> tuple[str, str | None]:
    """``dev`` → (dev, None); ``dev_mls`` → (dev, mls): Omnilingual's ``<split>_<corpus>``."""
    split, _, corpus = name.partition("_")
    return split, (corpus or None)


def list_files(root: Location, filesystem: pafs.FileSystem | None = None) -> list[DataFile]:
    """Every parquet file under the root with its partition values, sorted by path string
    (pyarrow's dataset discovery order, which the reference uses)."""
    fs, root = open_filesystem(root, filesystem)
    selector = pafs.FileSelector(str(root), recursive=True)
    # Filesystems differ in leading slashes and "./"; compare paths without them.
    base = fs.normalize_path(str(root)).strip("/")
    rels = sorted(
        _relative(fs.normalize_path(i.path).strip("/"), base)
        for i in fs.get_file_info(selector)
        if i.type == pafs.FileType.File and i.path.endswith(".parquet")
    )
    files = []
    for rel in rels:
        dirs = rel.split("/")[:-1]
        parts = dict(p.partition("=")[::2] for p in dirs if "=" in p)
        missing = [k for k in PARTITION_KEYS if k not in parts]
        if missing:
            log.warning("ignoring %s: no %s= folder in its path", rel, "=, ".join(missing))
            continue
        files.append(
            DataFile(_join(root, rel), rel, parts["corpus"], parts["split"], parts["language"])
        )
    return files


def _relative(path: str, base: str) -> str:
    return path[len(base) :].lstrip("/") if base else path


def discover_split(
    root: Location, split: str, filesystem: pafs.FileSystem | None = None
) -> list[DataFile]:
    """The files of one split (``<split>`` or ``<split>_<corpus>``), sorted by path.

    Sorted path order equals the reference's order (files grouped per (language, corpus)
    in discovery order), because the hive layout keeps a partition's files together.
    """
    name, corpus = parse_split(split)
    everything = list_files(root, filesystem)
    files = [f for f in everything if f.split == name and corpus in (None, f.corpus)]
    if not files:
        splits = ", ".join(sorted({f.split for f in everything})) or "none"
        what = f"split {name!r}" + (f" of corpus {corpus!r}" if corpus else "")
        raise DatasetError(f"no parquet files for {what} under {root} (splits found: {splits})")
    return files
