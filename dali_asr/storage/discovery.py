"""Find the parquet files of a split in Omnilingual's hive layout.

``<root>/corpus=<c>/split=<s>/language=<l>/*.parquet``; ``<root>`` may be wrapped in a single
``version=<v>`` folder, which is descended into.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PARTITION_KEYS = ("corpus", "split", "language")


class DatasetError(ValueError):
    """A dataset that cannot be read as asked; the message names the path."""


@dataclass(frozen=True)
class DataFile:
    """One parquet file of a split, with the partition values from its path."""

    path: Path
    rel: str
    """Path relative to the dataset root: the ``file`` of example keys."""
    corpus: str
    split: str
    language: str


def resolve_dataset_root(path: str | Path) -> Path:
    """The folder that holds ``corpus=*`` folders (descending into a lone ``version=*``)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DatasetError(f"dataset path {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"dataset path {root} is not a folder")
    if any(root.glob("corpus=*")):
        return root
    versions = sorted(p for p in root.glob("version=*") if p.is_dir())
    if len(versions) == 1:
        return resolve_dataset_root(versions[0])
    if len(versions) > 1:
        names = ", ".join(v.name for v in versions)
        raise DatasetError(f"dataset path {root} holds several versions ({names}); pick one")
    raise DatasetError(
        f"dataset path {root} holds no corpus=<name> folders (expected the hive layout "
        "corpus=<c>/split=<s>/language=<l>/*.parquet)"
    )


def parse_split(name: str) -> tuple[str, str | None]:
    """``dev`` → (dev, None); ``dev_mls`` → (dev, mls): Omnilingual's ``<split>_<corpus>``."""
    split, _, corpus = name.partition("_")
    return split, (corpus or None)


def list_files(root: Path) -> list[DataFile]:
    """Every parquet file under the root with its partition values, sorted by path."""
    files = []
    for path in sorted(root.rglob("*.parquet")):
        rel = path.relative_to(root)
        parts = dict(_hive_part(p) for p in rel.parts[:-1] if "=" in p)
        missing = [k for k in PARTITION_KEYS if k not in parts]
        if missing:
            log.warning("ignoring %s: no %s= folder in its path", rel, "=, ".join(missing))
            continue
        files.append(
            DataFile(path, rel.as_posix(), parts["corpus"], parts["split"], parts["language"])
        )
    return files


def available_splits(root: Path) -> list[str]:
    return sorted({f.split for f in list_files(root)})


def discover_split(root: Path, split: str) -> list[DataFile]:
    """The files of one split (``<split>`` or ``<split>_<corpus>``), sorted by path.

    Sorted path order equals the reference's order (files grouped per (language, corpus)
    in discovery order), because the hive layout keeps a partition's files together.
    """
    name, corpus = parse_split(split)
    everything = list_files(root)
    files = [f for f in everything if f.split == name and corpus in (None, f.corpus)]
    if not files:
        splits = ", ".join(sorted({f.split for f in everything})) or "none"
        what = f"split {name!r}" + (f" of corpus {corpus!r}" if corpus else "")
        raise DatasetError(f"no parquet files for {what} under {root} (splits found: {splits})")
    return files


def _hive_part(part: str) -> tuple[str, str]:
    key, _, value = part.partition("=")
    return key, value
