"""``dali-asr stats`` and ``dali-asr bucket-sizes``: numbers against the parquet files, the
loader's own plan, the reference's recorded plans and batches worked out from its semantics;
figures, the reference bucket tables, and a million rows in seconds."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import MILESTONE_TASK, SHARED, partition_dir, write_parquet
from helpers.reference_oracle import golden_plan_task, oracle_batches

from dali_asr.config import LoaderConfig, config_from_dict, load_config
from dali_asr.errors import ConfigError
from dali_asr.loader import AsrLoader
from dali_asr.storage import SAMPLE_RATE
from dali_asr.storage.discovery import resolve_dataset_root
from dali_asr.text import load_tokenizer
from dali_asr.tools import cli
from dali_asr.tools.commands import register
from dali_asr.tools.stats import load_splits, project, project_ranks
from dali_asr.tools.stats_plots import write_plots
from dali_asr.tools.stats_tables import bucket_fill, bucket_table, length_histogram

VECTORS_PATH = SHARED / "reference" / "bucket-vectors.json"
ONE_PASS = {"mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"}}

CONFIGS: dict[str, dict[str, Any]] = {
    # The reference's defaults: whole-split example shuffle, batch shuffle, 3573 buckets.
    "defaults": ONE_PASS,
    "milestone": {**ONE_PASS, "asr_task_config": MILESTONE_TASK},
    "sorted": {
        **ONE_PASS,
        "asr_task_config": {
            **MILESTONE_TASK,
            "batching_strategy": "LENGTH_SORTED",
            "example_shuffle_window": 50,
            "batch_shuffle_window": 4,
        },
    },
    "static_capped": {
        **ONE_PASS,
        "asr_task_config": {
            "batching_strategy": "STATIC",
            "batch_size": 5,
            "max_num_batches": 6,
            "min_samples_per_char": 1200,
        },
    },
}


def run_cli(argv: list[str]) -> int:
    """Parse ``argv`` with the registered subcommands, as dali_asr.tools.cli does, and run it."""
    parser = argparse.ArgumentParser(prog="dali-asr")
    handlers = register(parser.add_subparsers(dest="command", required=True), cli._common)
    args = parser.parse_args(argv)
    return handlers[args.command](args)


def direct_counts(root: Path) -> dict[tuple[str, str, str], list[int]]:
    """(split, corpus, language) → [rows, samples], straight from the parquet files."""
    counts: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for path in sorted(root.rglob("*.parquet")):
        parts = dict(p.split("=", 1) for p in path.relative_to(root).parts[:-1])
        sizes = pq.read_table(path, columns=["audio_size"]).column(0).to_numpy()
        entry = counts[parts["split"], parts["corpus"], parts["language"]]
        entry[0] += sizes.size
        entry[1] += int(sizes.sum())
    return counts


@pytest.mark.parametrize("dataset", ["espeak_root", "small_dataset"])
def test_rows_and_hours_equal_the_files(dataset: str, request: pytest.FixtureRequest) -> None:
    root = Path(resolve_dataset_root(request.getfixturevalue(dataset)))
    expected = direct_counts(root)
    splits = load_splits(root, None, load_config(None))
    assert [s.name for s in splits] == sorted({k[0] for k in expected})
    for data in splits:
        got = {(data.name, c, lang): [n, s] for c, lang, _, n, s in data.partitions()}
        assert got == {k: v for k, v in expected.items() if k[0] == data.name}
        assert data.num_rows == sum(v[0] for k, v in got.items())
        assert data.hours == pytest.approx(sum(v[1] for v in got.values()) / SAMPLE_RATE / 3600)
        assert int(data.group_rows.sum()) == data.num_rows


def test_cli_prints_hours_per_split_and_total(
    espeak_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["stats", str(espeak_root)]) == 0
    out = capsys.readouterr().out
    expected = direct_counts(Path(resolve_dataset_root(espeak_root)))
    for split in ("dev", "test", "train"):
        rows = sum(v[0] for k, v in expected.items() if k[0] == split)
        hours = sum(v[1] for k, v in expected.items() if k[0] == split) / SAMPLE_RATE / 3600
        assert re.search(rf"^{split}\s+\d+\s+{rows}\s+{hours:.3f}$", out, re.M), split
    total = sum(v[1] for v in expected.values()) / SAMPLE_RATE / 3600
    assert re.search(rf"^total\s+36\s+600\s+{total:.3f}$", out, re.M)
    assert "== split train: 12 files, 12 row groups, 480 rows" in out
    assert "espeak_read      tur_Latn" in out and "LENGTH buckets: 3573" in out


def test_length_histogram_and_bucket_fill(small_dataset: Path) -> None:
    (data,) = load_splits(small_dataset, ["train"], load_config(None))
    edges, counts = length_histogram(data.lengths)
    assert counts.sum() == data.num_rows
    assert np.array_equal(counts[:-1], np.histogram(data.lengths / SAMPLE_RATE, edges)[0][:-1])
    config = config_from_dict({**ONE_PASS, "asr_task_config": MILESTONE_TASK})
    sizes = bucket_table(config.asr_task_config)
    assert sizes is not None and len(sizes) == 59
    whole = project(data, config)
    fill = bucket_fill(sizes, whole, 16_000)
    bounds = np.array([n for _, n in sizes])
    assert np.array_equal(
        fill.examples, np.bincount(np.searchsorted(bounds, whole.kept_lengths), minlength=59)
    )
    assert fill.batches.sum() == whole.num_batches and fill.real.sum() == whole.real.sum()
    groups = fill.groups()
    assert sum(g.examples for g in groups) == whole.kept_lengths.size


def _loader_plan(root: Path, split: str, config: LoaderConfig, tokenizer, rank, world):
    loader = AsrLoader(root, split, config, tokenizer, rank=rank, world_size=world)
    try:
        return [[ex.audio_size for ex in batch] for batch in loader.plan()]
    finally:
        loader.close()


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
@pytest.mark.parametrize("world_size", [1, 3])
@pytest.mark.parametrize(
    ("dataset", "split", "with_tokenizer"),
    [("small_dataset", "train", False), ("espeak_root", "dev", True)],
)
def test_projection_equals_the_loader_plan(
    dataset: str,
    split: str,
    with_tokenizer: bool,
    world_size: int,
    config_name: str,
    request: pytest.FixtureRequest,
) -> None:
    """Batch for batch (sizes, plan order) and in padding efficiency, for every rank."""
    root = request.getfixturevalue(dataset)
    model = request.getfixturevalue("espeak_tokenizer") if with_tokenizer else None
    config = config_from_dict(CONFIGS[config_name])
    tokenizer = load_tokenizer(model) if model else None
    (data,) = load_splits(resolve_dataset_root(root), [split], config, tokenizer=tokenizer)
    for rank in range(world_size):
        plan = _loader_plan(root, split, config, model, rank, world_size)
        projected = project(data, config, rank, world_size)
        assert projected.sizes.tolist() == [len(b) for b in plan]
        real = sum(sum(b) for b in plan)
        padded = sum(len(b) * max(b) for b in plan)
        assert projected.padding_efficiency == (real / padded if padded else 1.0)


def test_stats_reports_the_plan_per_rank(
    espeak_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = tmp_path / "c.yaml"
    config_path.write_text(json.dumps({**ONE_PASS, "asr_task_config": MILESTONE_TASK}))
    argv = ["stats", "--data", str(espeak_root), "--split", "train", "--config", str(config_path)]
    assert run_cli([*argv, "--world-size", "3"]) == 0
    out = capsys.readouterr().out
    config = load_config(config_path)
    plans = [_loader_plan(espeak_root, "train", config, None, r, 3) for r in range(3)]
    whole = _loader_plan(espeak_root, "train", config, None, 0, 1)
    padding = sum(map(sum, whole)) / sum(len(b) * max(b) for b in whole)
    assert re.search(rf"batches\s+{len(whole)} ", out)  # the README's 50
    assert f"padding efficiency  {padding:.3f}" in out
    counts = " ".join(str(len(p)) for p in plans)
    assert f"world size 3: batches per rank {counts} (min" in out


def test_plots_are_png_files(small_dataset: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    config = config_from_dict({**ONE_PASS, "asr_task_config": MILESTONE_TASK})
    (data,) = load_splits(small_dataset, ["train"], config)
    written = write_plots(data, config, project(data, config), tmp_path / "plots")
    names = sorted(p.name for p in written)
    assert names == ["train_bucket_fill.png", "train_bucket_padding.png", "train_lengths.png"]
    for path in written:
        head = path.read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000, path


def test_plot_without_matplotlib_is_a_usage_error(
    espeak_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    with pytest.raises(ConfigError, match="pip install matplotlib"):
        run_cli(["stats", str(espeak_root), "--plot", str(tmp_path)])


def test_dataset_path_rules(espeak_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs the dataset path"):
        run_cli(["stats"])
    with pytest.raises(ConfigError, match="two dataset paths"):
        run_cli(["stats", str(espeak_root), "--data", str(tmp_path)])
    with pytest.raises(ConfigError, match="--world-size"):
        run_cli(["stats", str(espeak_root), "--world-size", "0"])


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    if not VECTORS_PATH.is_file():
        pytest.fail(f"golden vectors not found at {VECTORS_PATH} (CI has ../shared)")
    return json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


def _golden(vectors: dict[str, Any], requested: int) -> dict[str, Any]:
    (entry,) = [
        v
        for v in vectors["create_bucket_sizes"]
        if (v["min_seq_len"], v["max_seq_len"], v["num_seqs_multiple_of"]) == (32000, 960000, 8)
        and v["max_num_elements_requested"] == requested
    ]
    return entry


def _bucket_sizes(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert run_cli(["bucket-sizes", *argv]) == 0
    return capsys.readouterr().out


TABLE_FLAGS = [
    "--min-audio-len",
    "32000",
    "--max-audio-len",
    "960000",
    "--num-seqs-multiple-of",
    "8",
]


def test_bucket_sizes_table_a(vectors: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    golden = _golden(vectors, 960_000)
    flags = [*TABLE_FLAGS, "--max-num-elements", "960000"]
    report = json.loads(_bucket_sizes([*flags, "--json"], capsys))
    assert report["buckets"] == golden["buckets"] and report["count"] == 30
    assert report["max_num_elements_effective"] == golden["max_num_elements_effective"]
    text = _bucket_sizes(flags, capsys)
    assert "buckets               30 " in text and "used as is" in text
    runs = [ln for ln in text.splitlines() if re.fullmatch(r"\d+: \d+(\.\.\d+)? \(\d+\)", ln)]
    assert runs == [
        "24: 32000..40000 (7)", "16: 41739..60000 (8)", "8: 64000..120000 (8)",
        "7: 137142 (1)", "6: 160000 (1)", "5: 192000 (1)", "4: 240000 (1)",
        "3: 320000 (1)", "2: 480000 (1)", "1: 960000 (1)",
    ]  # fmt: skip
    full = _bucket_sizes([*flags, "--full"], capsys)
    rows = [ln.split() for ln in full.splitlines() if re.fullmatch(r"\s*\d+(\s+\S+){4}", ln)]
    assert [[int(r[1]), int(r[2])] for r in rows] == golden["buckets"]


def test_bucket_sizes_table_c_rounds_down(
    vectors: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    golden = _golden(vectors, 3_200_000)
    flags = [*TABLE_FLAGS, "--max-num-elements", "3200000"]
    report = json.loads(_bucket_sizes([*flags, "--json"], capsys))
    assert report["max_num_elements_requested"] == 3_200_000
    assert report["max_num_elements_effective"] == 2_880_000
    assert report["buckets"] == golden["buckets"] and report["count"] == 88
    text = _bucket_sizes(flags, capsys)
    assert "3200000 requested -> 2880000 effective (rounded down to 3 x max_audio_len" in text
    assert "sum of sizes 3809, sum of lengths 10317772" in text  # the reference's checksums
    assert "88: 32000..32727 (3)" in text and "3: 960000 (1)" in text


def test_bucket_sizes_from_a_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({"asr_task_config": {**MILESTONE_TASK, "max_bucket_size": 40}}))
    report = json.loads(_bucket_sizes(["--config", str(path), "--json"], capsys))
    assert report["min_audio_len"] == 16_000 and report["max_bucket_size"] == 40
    assert max(size for size, _ in report["buckets"]) == 40
    flagged = json.loads(
        _bucket_sizes(["--config", str(path), "--max-bucket-size", "8", "--json"], capsys)
    )
    assert max(size for size, _ in flagged["buckets"]) == 8
    with pytest.raises(ConfigError, match="must be at least `max_audio_len`"):
        run_cli(["bucket-sizes", "--max-audio-len", "960000", "--max-num-elements", "100"])


def _write_million_rows(root: Path, rows: int = 1_000_000) -> Path:
    """1M rows of audio_size / text in 4 language files of 100-row groups, 2-byte audio."""
    rng = np.random.default_rng(0)
    for language in ("eng_Latn", "fra_Latn", "deu_Latn", "swh_Latn"):
        n = rows // 4
        sizes = np.clip(rng.lognormal(np.log(80_000), 0.6, n), 8_000, 640_000).astype(np.int64)
        chars = np.maximum(0, sizes / SAMPLE_RATE * 14 + rng.normal(0, 5, n)).astype(np.int32)
        offsets = np.concatenate([[0], np.cumsum(chars)]).astype(np.int32)
        text = pa.StringArray.from_buffers(
            n, pa.py_buffer(offsets), pa.py_buffer(b"a" * int(offsets[-1]))
        )
        audio = pa.ListArray.from_arrays(
            pa.array(np.arange(n + 1, dtype=np.int32) * 2), pa.array(np.zeros(2 * n, np.int8))
        )
        table = pa.table({"text": text, "audio_bytes": audio, "audio_size": sizes})
        folder = root / "corpus=synth" / "split=train" / f"language={language}"
        write_parquet(folder / "part-00000.parquet", table, 100)
    return root


def test_a_million_rows_in_seconds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _write_million_rows(tmp_path / "million" / "version=0")
    start = time.perf_counter()
    assert run_cli(["stats", str(root), "--world-size", "8"]) == 0
    seconds = time.perf_counter() - start
    out = capsys.readouterr().out
    with capsys.disabled():
        print(f"\nstats over 1,000,000 rows (10,000 row groups, world size 8): {seconds:.2f} s")
    assert "1000000 rows" in out and "world size 8: batches per rank" in out
    assert seconds < 20


# --- the projection against oracles that share no code with it -------------------------------
#
# ``test_projection_equals_the_loader_plan`` compares the projection with the loader's plan,
# but both run the same batcher, shuffler and deal. Here the projection meets (1) the plans
# recorded from omnilingual-asr itself (tests/golden/), dealt over ranks by the README's rule
# written out below, and (2) batches worked out below from the reference's documented
# semantics, on a dataset whose lengths and texts are chosen to hit every filter and edge.

GOLDEN_PLANS = json.loads(
    (Path(__file__).parents[1] / "golden" / "reference-plans.json").read_text(encoding="utf-8")
)


def dealt(batches: list[list[int]], world: int) -> list[list[list[int]]]:
    """The README's deal of a single pass over ``world`` ranks: batch i to rank i mod N; the
    last ``count mod N`` batches split, the largest first (the earliest of equals), in halves
    (the first half the larger), until there is one part per rank."""
    if world == 1:
        return [batches]
    tail_from = len(batches) - len(batches) % world
    ranks = [[b for i, b in enumerate(batches[:tail_from]) if i % world == r] for r in range(world)]
    parts = [list(b) for b in batches[tail_from:]]
    if parts:
        while len(parts) < world:
            i = max(range(len(parts)), key=lambda j: (len(parts[j]), -j))
            half = (len(parts[i]) + 1) // 2
            parts[i : i + 1] = [parts[i][:half], parts[i][half:]]
        for rank, part in zip(ranks, parts, strict=True):
            rank.append(part)
    return ranks


def test_bucket_by_length_oracle_equals_the_golden_vector(vectors: dict[str, Any]) -> None:
    golden = vectors["bucket_by_length"]
    lengths = golden["input_lengths_by_index"]
    batches = oracle_batches(
        list(enumerate(lengths)), [tuple(b) for b in golden["bucket_sizes"]], golden["min_data_len"]
    )
    assert [[[i, lengths[i]] for i in b] for b in batches] == golden["output_drop_remainder_false"]


def _projections_of(ranks: list[list[list[int]]]) -> list[tuple[list[int], list[int], list[int]]]:
    """(sizes, widths, sums) per rank, from batches of lengths."""
    return [
        ([len(b) for b in rank], [max(b) for b in rank], [sum(b) for b in rank]) for rank in ranks
    ]


def _projected(data, config: LoaderConfig, world: int) -> list[tuple[list[int], ...]]:
    return [
        (p.sizes.tolist(), p.widths.tolist(), p.real.tolist())
        for p in project_ranks(data, config, world)
    ]


@pytest.mark.parametrize("plan", ["length/det", "length/shuf", "static/det", "static/shuf"])
def test_projection_equals_the_reference_plans(
    espeak_root: Path, espeak_tokenizer: Path, plan: str
) -> None:
    """Batch for batch (size, longest, sum of lengths) the plans omnilingual-asr 0.2.0 made on
    espeak-mini's train split, single pass, with and without shuffles, for 1, 3 and 4 ranks."""
    batching, mode = plan.split("/")
    lb = GOLDEN_PLANS["length_batching"]
    task = golden_plan_task(GOLDEN_PLANS, batching, mode == "shuf")
    config = config_from_dict({**ONE_PASS, "asr_task_config": task})
    root = Path(resolve_dataset_root(espeak_root))
    lengths: dict[str, int] = {}  # the golden file's example ids -> audio_size
    for path in sorted(root.glob("corpus=*/split=train/language=*/*.parquet")):
        language = path.parent.name.removeprefix("language=")
        table = pq.read_table(path, columns=["text", "audio_size"]).to_pydict()
        for text, size in zip(table["text"], table["audio_size"], strict=True):
            lengths[hashlib.sha1(f"{language}\t{text}".encode()).hexdigest()[:16]] = size
    assert len(lengths) == 480  # ids are unique
    reference = [[lengths[i] for i in b] for b in GOLDEN_PLANS["plans"][plan]]
    (data,) = load_splits(root, ["train"], config, tokenizer=load_tokenizer(espeak_tokenizer))
    for world in (1, 3, 4):
        assert _projected(data, config, world) == _projections_of(dealt(reference, world)), world
    whole = project(data, config)
    short = sum(n < lb["min_audio_len"] for n in lengths.values())
    assert whole.skipped == Counter({"audio_too_short": short})
    assert int(whole.sizes.sum()) == sum(map(len, reference)) == 480 - short


HAND_TASK = {
    # the golden table A: 30 buckets from 24 x 32000 to 1 x 960000
    "min_audio_len": 32_000,
    "max_audio_len": 960_000,
    "max_num_elements": 960_000,
    "num_seqs_multiple_of": 8,
    "min_samples_per_char": 160,
    "filter_long_text_threshold": 250,
    "example_shuffle_window": 1,
    "batch_shuffle_window": 1,
}


def _hand_rows(seed: int) -> list[tuple[int, str]]:
    """(audio_size, text) rows: mostly 2-12 s with 15 samples-per-char to spare, plus every
    edge: bounds of the length filter and of buckets, empty text, speech too fast by one
    character, a rate of exactly min_samples_per_char, a text one character too long."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[int, str]] = []
    for _ in range(70):
        n = int(rng.integers(32_000, 192_000))
        rows.append((n, "a" * int(rng.integers(1, min(150, n // 175) + 1))))
    rows[3] = (31_999, "short")  # audio_too_short
    rows[7] = (32_000, "at the minimum")
    rows[11] = (960_000, "at the maximum")
    rows[13] = (960_001, "long")  # audio_too_long
    rows[17] = (40_000, "")  # empty_text
    rows[19] = (32_000, "b" * 201)  # 159.2 samples per char: too_fast_speech
    rows[23] = (32_000, "c" * 200)  # exactly 160: kept
    rows[29] = (200_000, "d" * 251)  # text_too_long (threshold 250)
    rows[31] = (200_000, "e" * 250)  # kept
    rows[37] = (41_739, "on a bucket bound")
    rows[41] = (41_740, "just past it")
    return rows


def _write_hand_dataset(root: Path, rows: list[tuple[int, str]]) -> None:
    """Two partitions (rows split 40 / 30) in row groups of 7; the audio is a stand-in (stats
    reads only audio_size and text)."""
    for language, part in (("aaa_Latn", rows[:40]), ("bbb_Latn", rows[40:])):
        table = pa.table(
            {
                "text": [t for _, t in part],
                "audio_bytes": pa.array([[0, 1]] * len(part), pa.list_(pa.int8())),
                "audio_size": pa.array([n for n, _ in part], pa.int64()),
            }
        )
        write_parquet(partition_dir(root, "hand", "dev", language) / "part-0.parquet", table, 7)


def _hand_oracle(rows: list[tuple[int, str]], task: dict) -> tuple[list[list[int]], Counter]:
    """The single pass's batches (of lengths) and skips, worked out from the semantics: length
    filter, text filters (empty, too fast, too long: characters are tokens here), batching."""
    skipped: Counter[str] = Counter()
    kept: list[int] = []
    for n, text in rows:  # the files' order is the rows' order
        if n < task["min_audio_len"]:
            skipped["audio_too_short"] += 1
        elif n > task["max_audio_len"]:
            skipped["audio_too_long"] += 1
        elif not text:
            skipped["empty_text"] += 1
        elif n / len(text) < task["min_samples_per_char"]:
            skipped["too_fast_speech"] += 1
        elif len(text) > task["filter_long_text_threshold"]:
            skipped["text_too_long"] += 1
        else:
            kept.append(n)
    if task.get("batching_strategy") == "STATIC":
        size = task["batch_size"]
        batches = [list(range(i, min(i + size, len(kept)))) for i in range(0, len(kept), size)]
    else:
        table = [tuple(b) for b in _table_a()]
        batches = oracle_batches(list(enumerate(kept)), table, task["min_audio_len"])
    batches = batches[: task.get("max_num_batches")]
    return [[kept[i] for i in b] for b in batches], skipped


def _table_a() -> list[list[int]]:
    """The golden table A (bucket-vectors.json): min 32000, max 960000, 960000, multiple 8."""
    vectors = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    return _golden(vectors, 960_000)["buckets"]


@pytest.mark.parametrize(
    "task",
    [
        HAND_TASK,
        {**HAND_TASK, "batching_strategy": "STATIC", "batch_size": 5, "max_num_batches": 9},
    ],
    ids=["length", "static-capped"],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_projection_equals_hand_worked_batches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], task: dict, seed: int
) -> None:
    rows = _hand_rows(seed)
    root = tmp_path / "version=0"
    _write_hand_dataset(root, rows)
    batches, skipped = _hand_oracle(rows, task)
    assert set(skipped.values()) == {1} and len(skipped) == 5 and len(batches) >= 9
    config = config_from_dict({**ONE_PASS, "asr_task_config": task})
    (data,) = load_splits(root, ["dev"], config)
    assert data.lengths.tolist() == [n for n, _ in rows]
    for world in (1, 2, 3):
        assert _projected(data, config, world) == _projections_of(dealt(batches, world)), world
    whole = project(data, config)
    assert whole.skipped == skipped
    # and as ``dali-asr stats`` prints it
    config_path = tmp_path / "c.yaml"
    config_path.write_text(json.dumps({**ONE_PASS, "asr_task_config": task}), encoding="utf-8")
    argv = ["stats", str(root), "--split", "dev", "--config", str(config_path)]
    assert run_cli([*argv, "--world-size", "3"]) == 0
    out = capsys.readouterr().out
    kept = sum(map(len, batches))
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(skipped.items()))
    assert f"  examples kept       {kept} of {len(rows)} ({reasons})\n" in out
    assert re.search(rf"^  batches             {len(batches)} \(mean size ", out, re.M)
    efficiency = sum(map(sum, batches)) / sum(len(b) * max(b) for b in batches)
    assert f"  padding efficiency  {efficiency:.3f} (sum" in out
    per_rank = " ".join(str(len(r)) for r in dealt(batches, 3))
    assert f"world size 3: batches per rank {per_rank} (min" in out
