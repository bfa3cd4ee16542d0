"""Shared fixtures: the real espeak-mini corpus and a small dataset built from its rows.

``espeak_root`` is ../shared/data/espeak-mini, or the folder ``$DALI_ASR_ESPEAK`` names (CI
always has it: a missing copy is a failure, not a skip). ``small_dataset`` is a few real rows of
it rewritten in the same hive layout with row groups of 40 rows, so that files hold several row
groups, the last one partial.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dali_asr.tools.cli import DEMO_TASK

SHARED = Path(__file__).resolve().parents[2] / "shared"
"""../shared beside the repository: the corpus and the reference's golden vectors."""
ESPEAK_ROOT = Path(os.environ.get("DALI_ASR_ESPEAK") or SHARED / "data" / "espeak-mini")
"""espeak-mini: ``$DALI_ASR_ESPEAK``, else ../shared/data/espeak-mini beside the repository."""

COLUMNS = ["text", "audio_bytes", "audio_size"]
"""The columns stored in Omnilingual's parquet files, in espeak-mini's order."""

# The first milestone's single-pass LENGTH settings (the README's and baseline.md's), which
# the demo runs.
MILESTONE_TASK = dict(DEMO_TASK)

SMALL_ROW_GROUP_SIZE = 40

SMALL_PARTITIONS: list[tuple[str, str]] = [
    ("espeak_fast", "eng_Latn"),
    ("espeak_fast", "rus_Cyrl"),
    ("espeak_read", "eng_Latn"),
    ("espeak_read", "fra_Latn"),
]
"""(corpus, language) pairs copied into ``small_dataset``, for the splits train and dev.

Train rows: espeak_fast 24 + 24 (one partial row group each), espeak_read 48 + 48 (row groups
of 40 and 8): 144 in all. Dev rows: 3 + 3 + 6 + 6 = 18.
"""


def write_parquet(path: Path, table: pa.Table, row_group_size: int) -> Path:
    """Write ``table`` to ``path`` (parents created) in row groups of ``row_group_size`` rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size, compression="snappy")
    return path


def partition_dir(root: Path, corpus: str, split: str, language: str) -> Path:
    """``<root>/corpus=<c>/split=<s>/language=<l>``: one hive partition."""
    return root / f"corpus={corpus}" / f"split={split}" / f"language={language}"


def read_espeak_rows(corpus: str, split: str, language: str) -> pa.Table:
    """The rows of one espeak-mini partition (text, audio_bytes, audio_size), in file order."""
    folder = partition_dir(ESPEAK_ROOT / "version=0", corpus, split, language)
    files = sorted(folder.glob("*.parquet"))
    if not files:
        pytest.fail(f"espeak-mini has no parquet file under {folder}")
    return pa.concat_tables(pq.read_table(f, columns=COLUMNS) for f in files)


def write_stats_tsv(path: Path, hours: dict[tuple[str, str], float]) -> Path:
    """Omnilingual's ``language_distribution_<v>.tsv``: ``corpus language hours``, sorted."""
    lines = ["corpus\tlanguage\thours"]
    lines += [f"{c}\t{lang}\t{h!r}" for (c, lang), h in sorted(hours.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def espeak_root() -> Path:
    """../shared/data/espeak-mini (the folder holding ``version=0``)."""
    if not (ESPEAK_ROOT / "version=0").is_dir():
        pytest.fail(
            f"the espeak-mini corpus is missing: expected {ESPEAK_ROOT}/version=0 "
            "(../shared/data/espeak-mini next to the repository; CI always provides it)"
        )
    return ESPEAK_ROOT


@pytest.fixture(scope="session")
def espeak_tokenizer(espeak_root: Path) -> Path:
    """espeak-mini's SentencePiece character model."""
    model = espeak_root / "tokenizer" / "char_spm.model"
    if not model.is_file():
        pytest.fail(f"the espeak-mini tokenizer is missing: expected {model}")
    return model


@pytest.fixture(scope="session")
def small_dataset(espeak_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small dataset of real espeak-mini rows; returns its root (``.../version=0``).

    2 corpora, 3 languages (eng_Latn, fra_Latn, rus_Cyrl), splits train (144 rows) and dev
    (18 rows), row groups of 40 rows, and ``language_distribution_0.tsv`` (hours over all
    splits) next to ``version=0``, as in espeak-mini. Deterministic: rows in source order.
    """
    base = tmp_path_factory.mktemp("small_dataset")
    root = base / "version=0"
    hours: dict[tuple[str, str], float] = {}
    for corpus, language in SMALL_PARTITIONS:
        for split in ("train", "dev"):
            table = read_espeak_rows(corpus, split, language)
            write_parquet(
                partition_dir(root, corpus, split, language) / "part-00000.parquet",
                table,
                SMALL_ROW_GROUP_SIZE,
            )
            samples = sum(table.column("audio_size").to_pylist())
            hours[corpus, language] = hours.get((corpus, language), 0.0) + samples / 16_000 / 3600
    write_stats_tsv(base / "language_distribution_0.tsv", hours)
    return root


TORCHRUN_WORKER = Path(__file__).parent / "helpers" / "torchrun_worker.py"


def torchrun_two_ranks(data: Path, tokenizer: Path, out: Path, doc: dict) -> list[dict]:
    """``helpers/torchrun_worker.py`` on 2 CPU ranks (gloo) under torchrun; each rank's
    result. A rank that yields fewer batches than the other hangs the job: the timeout fails
    the test."""
    import json
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a free port: a fixed one collides with a concurrent run
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE"))}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-port", str(port), str(TORCHRUN_WORKER),
        str(data), str(tokenizer), str(out), json.dumps(doc),
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


_F2_FIGURES: dict[str, object] = {}


@pytest.fixture(scope="session")
def f2_report() -> Iterator[dict[str, object]]:
    """tests/fairseq2's figures (they run only beside fairseq2: scripts/check_fairseq2.sh), each
    test's under its name; written as JSON to ``$DALI_ASR_F2_REPORT`` at the session's end."""
    import json

    yield _F2_FIGURES
    target = os.environ.get("DALI_ASR_F2_REPORT")
    if target and _F2_FIGURES:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(json.dumps(_F2_FIGURES, indent=1, sort_keys=True) + "\n")
