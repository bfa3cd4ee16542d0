"""What a corrupt file costs per epoch: espeak-mini's train split with one row's audio
corrupted after its magic bytes (DALI's pipeline dies on it), three epochs of one loader,
against the same split intact.

Epoch 1 finds the file inside DALI (a pipeline rebuild and a replay of the batches in flight);
later epochs drop it before DALI sees it (``report.KnownBad``). Prints seconds per epoch (the
median of ``--repeats`` runs) and pipeline rebuilds: corrupt; corrupt with the ledger emptied
before every epoch (what every epoch cost before the ledger); intact.

    python benchmarks/bad_file_cost.py [--data PATH] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from bench_common import LENGTH_SETTINGS, SINGLE_SHUFFLE

from dali_asr.config import config_from_dict
from dali_asr.loader import AsrLoader
from dali_asr.report import KnownBad

ESPEAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "espeak-mini"


def corrupt_copy(data: Path, dest: Path) -> Path:
    """The train split of ``data`` under ``dest``, the first file's row 3 corrupted."""
    files = sorted((data / "version=0").rglob("split=train/**/*.parquet"))
    for i, path in enumerate(files):
        out = dest / path.relative_to(data)
        out.parent.mkdir(parents=True, exist_ok=True)
        table = pq.read_table(path)
        if i == 0:
            audio = table.column("audio_bytes").to_pylist()
            audio[3] = audio[3][:4] + [7] * 6000  # the magic kept, the stream garbage
            column = pa.array(audio, type=table.schema.field("audio_bytes").type)
            table = table.set_column(
                table.schema.get_field_index("audio_bytes"), "audio_bytes", column
            )
        pq.write_table(table, out)
    return dest / "version=0"


class _Rebuilds(logging.Handler):
    """Counts the feeder's "rebuilt the pipeline" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "rebuilt the pipeline" in record.getMessage()


REBUILDS = _Rebuilds()


def epoch_seconds(
    root: Path, tokenizer: Path, epochs: int, forget: bool = False
) -> list[tuple[float, int]]:
    """(seconds, pipeline rebuilds) per epoch of one loader; ``forget`` empties its ledger of
    bad examples before each epoch, as dali-asr did before it kept one."""
    task = {**LENGTH_SETTINGS, **SINGLE_SHUFFLE}
    config = config_from_dict(
        {"asr_task_config": task, "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"}}
    )
    out = []
    with AsrLoader(root, "train", config, tokenizer) as loader:
        for _ in range(epochs):
            if forget:
                loader.known_bad = KnownBad()
            start, rebuilds = time.perf_counter(), REBUILDS.count
            for _batch in loader:
                pass
            out.append((time.perf_counter() - start, REBUILDS.count - rebuilds))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ESPEAK)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    feeding = logging.getLogger("dali_asr.pipeline.feeding")
    feeding.addHandler(REBUILDS)
    feeding.propagate = False
    feeding.setLevel(logging.WARNING)
    tokenizer = args.data / "tokenizer" / "char_spm.model"
    with tempfile.TemporaryDirectory() as tmp:
        corrupt = corrupt_copy(args.data, Path(tmp) / "corrupt")
        runs: dict[str, list[list[tuple[float, int]]]] = {
            "corrupt": [],
            "forgetting": [],
            "intact": [],
        }
        for _ in range(args.repeats):
            runs["corrupt"].append(epoch_seconds(corrupt, tokenizer, args.epochs))
            runs["forgetting"].append(epoch_seconds(corrupt, tokenizer, args.epochs, True))
            runs["intact"].append(epoch_seconds(args.data / "version=0", tokenizer, args.epochs))
    print("| epoch | corrupt s (rebuilds) | ledger emptied each epoch s (rebuilds) | intact s |")
    print("| --- | --- | --- | --- |")
    for e in range(args.epochs):
        cells = [
            f"{statistics.median(r[e][0] for r in v):.3f} ({max(r[e][1] for r in v)})"
            for v in runs.values()
        ]
        print(f"| {e + 1} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
