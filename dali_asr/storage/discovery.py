"""Find the parquet files of a split in Omnilingual's hive layout.

``<root>/corpus=<c>/split=<s>/language=<l>/*.parquet``; ``<root>`` may be wrapped in a single
``version=<v>`` folder, which is descended into. Local paths, URIs (``s3://``, ``gs://``, ...)
and any ``pyarrow.fs.FileSystem`` work alike; local roots and files are ``Path`` objects,
others strings inside their filesystem.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from os import PathLike
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


def is_uri(text: str | Path) -> bool:
    """``scheme://...`` (``s3://``, ``gs://``, ``hdfs://``, ``file://``)."""
    return isinstance(text, str) and "://" in text


def as_location(text: str) -> Location:
    """A command-line path: a URI stays a string (``Path`` folds ``s3://bucket`` into
    ``s3:/bucket``), anything else is a local ``Path``."""
    return text if is_uri(text) else Path(text)


def open_filesystem(
    path: str | Path, filesystem: pafs.FileSystem | None = None
) -> tuple[pafs.FileSystem, Location]:
    """The filesystem and the path inside it: a given filesystem object, a URI's, or local.

    A URI's query sets the filesystem's options (``s3://b/k?endpoint_override=host:port&
    scheme=http``); pyarrow's ``from_uri`` also takes the endpoint from ``AWS_ENDPOINT_URL_S3``
    or ``AWS_ENDPOINT_URL`` (an ``S3FileSystem()`` built by hand does not).
    """
    if filesystem is not None:
        if is_uri(path):
            raise DatasetError(
                f"dataset path {path}: with a filesystem object, expected the path inside it "
                "(bucket/folder), not a URI (or the URI alone, without the filesystem)"
            )
        return filesystem, str(path)
    text = str(path)
    if is_uri(text) and not text.startswith("file://"):
        try:
            return pafs.FileSystem.from_uri(text)
        except (pa.ArrowException, ValueError, OSError) as e:
            raise DatasetError(
                f"dataset path {text}: cannot open its filesystem: {e} (expected a URI pyarrow "
                "understands, such as s3://bucket/folder?endpoint_override=host:port&scheme=http)"
            ) from e
    return pafs.LocalFileSystem(), Path(text.removeprefix("file://")).expanduser()


_URI_SCHEMES = {"s3": "s3", "gcs": "gs"}


def describe_location(fs: pafs.FileSystem | None, path: Location) -> str:
    """``path`` inside ``fs`` as messages name it: a URI where the filesystem has a scheme of its
    own (``s3://bucket/key``), a local path as is."""
    if fs is None or isinstance(fs, pafs.LocalFileSystem):
        return str(path)
    if isinstance(fs, pafs.SubTreeFileSystem):
        inner = str(path).lstrip("/")
        base = fs.base_path.rstrip("/")
        return describe_location(fs.base_fs, f"{base}/{inner}" if inner else base)
    scheme = _URI_SCHEMES.get(fs.type_name)
    if scheme is not None:
        return f"{scheme}://{str(path).lstrip('/')}"
    return f"{path} (on {fs.type_name})"


def _hint(fs: pafs.FileSystem, error: Exception) -> str:
    """What to check after an object store refused or could not be reached: the AWS SDK's error
    names alone do not say where the setting lives."""
    text = str(error)
    if fs.type_name != "s3":
        return ""
    if any(k in text for k in ("ACCESS_DENIED", "SIGNATURE_DOES_NOT_MATCH", "INVALID_ACCESS_KEY")):
        return (
            " (check the credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
        )
    if "NETWORK_CONNECTION" in text:
        return (
            " (check the endpoint: AWS_ENDPOINT_URL, or ?endpoint_override=host:port&scheme=http "
            "in the URI)"
        )
    return ""


def _failed(fs: pafs.FileSystem, path: Location, error: Exception) -> DatasetError:
    where = describe_location(fs, path)
    return DatasetError(f"dataset path {where}: cannot be read: {error}{_hint(fs, error)}")


def _info(fs: pafs.FileSystem, path: Location) -> pafs.FileInfo:
    try:
        return fs.get_file_info(str(path))
    except (OSError, pa.ArrowException) as e:
        raise _failed(fs, path, e) from e


def _list(fs: pafs.FileSystem, path: Location, recursive: bool = False) -> list[pafs.FileInfo]:
    try:
        return fs.get_file_info(pafs.FileSelector(str(path), recursive=recursive))
    except (OSError, pa.ArrowException) as e:
        raise _failed(fs, path, e) from e


def _missing(fs: pafs.FileSystem, root: Location) -> DatasetError:
    """A missing root; on an object store, a missing bucket named as such."""
    where = describe_location(fs, root)
    key = str(root).strip("/")
    bucket = key.split("/")[0]
    store = fs.type_name in _URI_SCHEMES and bool(bucket)
    if store and (bucket == key or _info(fs, bucket).type == pafs.FileType.NotFound):
        return DatasetError(
            f"dataset path {where} does not exist: there is no bucket {bucket!r} "
            "(expected an existing bucket holding the dataset folder)"
        )
    return DatasetError(f"dataset path {where} does not exist")


def _children(infos: list[pafs.FileInfo], prefix: str) -> list[str]:
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
    """The folder that holds ``corpus=*`` folders (descending into a lone ``version=*``).

    ``path`` is a local path or a URI, or with ``filesystem`` a path inside it (not a URI).
    """
    fs, root = open_filesystem(path, filesystem)
    where = describe_location(fs, root)
    info = _info(fs, root)
    if info.type == pafs.FileType.NotFound:
        raise _missing(fs, root)
    if info.type != pafs.FileType.Directory:
        raise DatasetError(f"dataset path {where} is not a folder")
    infos = _list(fs, root)
    if _children(infos, "corpus="):
        return root
    versions = _children(infos, "version=")
    if len(versions) == 1:
        # a local root stays a Path: the filesystem goes down only when it is not local
        local = filesystem is None and isinstance(fs, pafs.LocalFileSystem)
        return resolve_dataset_root(_join(root, versions[0]), None if local else fs)
    if len(versions) > 1:
        raise DatasetError(f"dataset path {where} holds several versions ({', '.join(versions)}); "
                           "pick one")  # fmt: skip
    expected = "expected the hive layout corpus=<c>/split=<s>/language=<l>/*.parquet"
    tsvs = sorted(i.base_name for i in infos if i.base_name.endswith(".tsv"))
    if tsvs and not isinstance(fs, pafs.LocalFileSystem):
        raise DatasetError(
            f"dataset path {where} holds {', '.join(tsvs)} but no corpus=<name> folders: "
            "manifest storage (<split>.tsv + <split>.wrd) is read from local folders only "
            f"(copy it to local disk), and a remote dataset is parquet ({expected})"
        )
    raise DatasetError(f"dataset path {where} holds no corpus=<name> folders ({expected})")


def read_text(location: str | PathLike[str], what: str = "file") -> str:
    """A small UTF-8 text file (a stats TSV) from a local path or a URI; ``what`` names it in
    errors. A local file's errors are Python's own (FileNotFoundError names the path)."""
    text = str(location)
    if not is_uri(text) or text.startswith("file://"):
        return Path(text.removeprefix("file://")).expanduser().read_text(encoding="utf-8")
    fs, inside = open_filesystem(text)
    try:
        with fs.open_input_stream(str(inside)) as stream:
            return stream.read().decode("utf-8")
    except (OSError, pa.ArrowException, UnicodeDecodeError) as e:
        where = describe_location(fs, inside)
        raise DatasetError(f"{what} {where}: cannot be read: {e}{_hint(fs, e)}") from e


def parse_split(name: str) -> tuple[str, str | None]:
    """``dev`` → (dev, None); ``dev_mls`` → (dev, mls): Omnilingual's ``<split>_<corpus>``."""
    split, _, corpus = name.partition("_")
    return split, (corpus or None)


def list_files(root: Location, filesystem: pafs.FileSystem | None = None) -> list[DataFile]:
    """Every parquet file under the root with its partition values, sorted by path string
    (pyarrow's dataset discovery order, which the reference uses)."""
    fs, root = open_filesystem(root, filesystem)
    # Filesystems differ in leading slashes and "./"; compare paths without them.
    base = fs.normalize_path(str(root)).strip("/")
    rels = sorted(
        _relative(fs.normalize_path(i.path).strip("/"), base)
        for i in _list(fs, root, recursive=True)
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
        where = describe_location(open_filesystem(root, filesystem)[0], root)
        raise DatasetError(f"no parquet files for {what} under {where} (splits found: {splits})")
    return files
