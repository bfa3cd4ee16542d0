"""The ``dali-asr`` command line: ``plan``, ``run`` and ``demo``, exit codes (failures while
running, Ctrl-C), and standard output carrying only the data."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import partition_dir, write_parquet

from dali_asr.tools import cli
from dali_asr.tools.cli import main

CONFIG_YAML = """\
mixture_parquet_storage_config: {sync_mode: UNTIL_LAST}
asr_task_config: {min_audio_len: 16_000, max_audio_len: 480_000, max_num_elements: 960_000,
                  num_seqs_multiple_of: 8, example_shuffle_window: 1, batch_shuffle_window: 1}
"""

EXAMPLE_KEYS = {"corpus", "language", "split", "file", "row_group", "row", "audio_size", "text"}
DUMP_KEYS = {"batch", "keys", "source_shape", "source_seq_lens", "source_sum", "source_abs_sum"}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG_YAML, encoding="utf-8")
    return path


@pytest.fixture
def espeak_args(espeak_root: Path, espeak_tokenizer: Path, config: Path) -> list[str]:
    """``--data --split --tokenizer --config`` of the milestone's check on espeak-mini."""
    return [
        "--data",
        str(espeak_root),
        "--split",
        "train",
        "--tokenizer",
        str(espeak_tokenizer),
        "--config",
        str(config),
    ]


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` parsed as one JSON object (fails on anything else)."""
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    assert all(isinstance(r, dict) for r in records)
    return records


def parse_summary(text: str) -> tuple[dict[str, str], dict[str, float]]:
    """The ``run`` summary: ``{label: value}`` and ``{language: share}``."""
    values: dict[str, str] = {}
    shares: dict[str, float] = {}
    in_languages = False
    for line in text.splitlines():
        if line.startswith("languages"):
            in_languages = True
            continue
        if in_languages:
            language, share = line.split()
            shares[language] = float(share)
            continue
        label, _, value = line.rpartition(" ")
        assert label.strip() and value, f"unexpected summary line {line!r}"
        values[label.strip()] = value
    return values, shares


# --- plan ----------------------------------------------------------------------------------


def test_plan_on_espeak_mini(espeak_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", *espeak_args]) == 0
    out, err = capsys.readouterr()
    batches = json_lines(out)
    assert len(batches) == 50
    assert [b["batch"] for b in batches] == list(range(50))
    examples = []
    for b in batches:
        assert set(b) == {"batch", "examples"}
        assert b["examples"]
        for ex in b["examples"]:
            assert set(ex) == EXAMPLE_KEYS
            assert ex["split"] == "train"
            assert ex["file"] == (
                f"corpus={ex['corpus']}/split=train/language={ex['language']}/part-00000.parquet"
            )
            assert ex["row_group"] == 0
            assert 16_000 <= ex["audio_size"] <= 480_000
            assert ex["text"]
        examples.extend(b["examples"])
    assert len(examples) == 466
    assert len({(e["file"], e["row_group"], e["row"]) for e in examples}) == 466
    first = batches[0]["examples"]
    assert len(first) == 5
    assert max(e["audio_size"] for e in first) == 187_229
    # LENGTH batching: no batch holds more padded samples than max_num_elements
    for b in batches:
        sizes = [e["audio_size"] for e in b["examples"]]
        assert len(sizes) * max(sizes) <= 960_000
    assert "skipped" in err  # the skip counters go to stderr


def test_plan_max_batches(espeak_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", *espeak_args, "--max-batches", "3"]) == 0
    out, _ = capsys.readouterr()
    batches = json_lines(out)
    assert [b["batch"] for b in batches] == [0, 1, 2]
    # the same batches as the full plan's first three
    assert main(["plan", *espeak_args]) == 0
    full = json_lines(capsys.readouterr().out)
    assert batches == full[:3]


def test_plan_of_a_non_train_split_with_the_default_config(
    small_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # sync_mode UNTIL_FIRST is a training stream only for splits named like *train*
    assert main(["plan", "--data", str(small_dataset.parent), "--split", "dev"]) == 0
    batches = json_lines(capsys.readouterr().out)
    examples = [ex for b in batches for ex in b["examples"]]
    assert 0 < len(examples) <= 18
    assert {ex["split"] for ex in examples} == {"dev"}
    assert {ex["corpus"] for ex in examples} == {"espeak_fast", "espeak_read"}


# --- run -----------------------------------------------------------------------------------


def test_run_summary_and_dump(
    espeak_args: list[str], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    dumps = []
    for n in (1, 2):
        dump = tmp_path / f"dump{n}.jsonl"
        args = ["run", *espeak_args, "--max-batches", "5", "--dump-batches", str(dump)]
        assert main(args) == 0
        out, _ = capfd.readouterr()
        dumps.append(dump.read_text(encoding="utf-8"))

        values, shares = parse_summary(out)
        records = json_lines(dumps[-1])
        assert values["batches"] == "5"
        assert len(records) == 5
        lens = [n for r in records for n in r["source_seq_lens"]]
        assert int(values["examples"]) == len(lens) == sum(len(r["keys"]) for r in records)
        # waveform path: source lengths are the audio sizes at 16 kHz
        assert float(values["audio hours"]) == pytest.approx(sum(lens) / 16_000 / 3600, abs=5e-4)
        padded = sum(r["source_shape"][0] * r["source_shape"][1] for r in records)
        assert float(values["padding efficiency"]) == pytest.approx(sum(lens) / padded, abs=5e-4)
        assert float(values["audio s per s"]) > 0
        assert shares
        assert all(re.fullmatch(r"[a-z]{3}_[A-Z][a-z]{3}", lang) for lang in shares)
        assert sum(shares.values()) == pytest.approx(1.0, abs=0.01)

        for i, r in enumerate(records):
            assert set(r) == DUMP_KEYS
            assert r["batch"] == i
            assert all(set(k) == {"file", "row_group", "row"} for k in r["keys"])
            b, t = r["source_shape"]
            assert b == len(r["keys"]) == len(r["source_seq_lens"])
            assert t == max(r["source_seq_lens"])
            assert r["source_abs_sum"] >= abs(r["source_sum"])
            assert r["source_abs_sum"] > 0

    assert dumps[0] == dumps[1]


def test_run_dump_matches_the_plan(
    espeak_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", *espeak_args, "--max-batches", "2"]) == 0
    plan = json_lines(capsys.readouterr().out)
    dump = tmp_path / "dump.jsonl"
    assert main(["run", *espeak_args, "--max-batches", "2", "--dump-batches", str(dump)]) == 0
    records = json_lines(dump.read_text(encoding="utf-8"))
    for planned, ran in zip(plan, records, strict=True):
        keys = [{k: ex[k] for k in ("file", "row_group", "row")} for ex in planned["examples"]]
        assert ran["keys"] == keys
        assert ran["source_seq_lens"] == [ex["audio_size"] for ex in planned["examples"]]


# --- errors and exit codes -----------------------------------------------------------------


def test_unknown_config_key_exits_2(
    espeak_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("asr_task_config: {max_audio_lenn: 480_000}\n", encoding="utf-8")
    for command in ("plan", "run"):
        assert main([command, "--data", str(espeak_root), "--config", str(config)]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert len(err.splitlines()) == 1
        assert "asr_task_config.max_audio_lenn" in err


def test_nonexistent_data_exits_2(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    for command in ("plan", "run"):
        assert main([command, "--data", str(missing), "--config", str(config)]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert len(err.splitlines()) == 1
        assert str(missing) in err


def test_unknown_split_exits_2(
    espeak_root: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["plan", "--data", str(espeak_root), "--split", "valid", "--config", str(config)]) == 2
    )
    out, err = capsys.readouterr()
    assert out == ""
    assert "'valid'" in err


def test_endless_training_stream_run_needs_max_batches(
    espeak_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # split train with the default sync_mode (UNTIL_FIRST) is the endless mixture stream
    assert main(["run", "--data", str(espeak_root), "--split", "train"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1
    assert "--max-batches" in err and "UNTIL_LAST" in err


def test_plan_streams_the_training_mixture(
    espeak_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["plan", "--data", str(espeak_root), "--split", "train", "--max-batches", "7"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["batch"] for line in lines] == list(range(7))


def test_usage_error_exits_2() -> None:
    with pytest.raises(SystemExit) as info:
        main(["plan"])  # --data is required
    assert info.value.code == 2


def _run_cli(args: list[str]) -> subprocess.CompletedProcess:
    """``python -m dali_asr.tools.cli ARGS`` in a fresh process, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "dali_asr.tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_subprocess_exit_codes(espeak_args: list[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("asr_task_config: {max_audio_lenn: 480_000}\n", encoding="utf-8")
    data = espeak_args[:2]
    failed = _run_cli(["plan", *data, "--config", str(bad)])
    assert failed.returncode == 2
    assert failed.stdout == ""
    assert len(failed.stderr.splitlines()) == 1
    assert "asr_task_config.max_audio_lenn" in failed.stderr

    script = Path(sys.executable).parent / "dali-asr"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "dali_asr.tools.cli"]
    done = subprocess.run(
        [*command, "plan", *espeak_args, "--max-batches", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert len(json_lines(done.stdout)) == 2


def test_subprocess_dataset_error_is_one_line(tmp_path: Path, config: Path) -> None:
    # AsrLoader.__init__ raises here: its __del__ must not add "Exception ignored in" lines
    failed = _run_cli(["plan", "--data", str(tmp_path / "nowhere"), "--config", str(config)])
    assert failed.returncode == 2
    assert failed.stdout == ""
    assert len(failed.stderr.splitlines()) == 1, failed.stderr


# --- failures while running, Ctrl-C, the demo ----------------------------------------------

WINDOWS_OFF = """\
asr_task_config: {example_shuffle_window: 1, batch_shuffle_window: 1}
"""
ONE_PASS_WINDOWS_OFF = "mixture_parquet_storage_config: {sync_mode: UNTIL_LAST}\n" + WINDOWS_OFF


def _copy_dataset(small_dataset: Path, tmp_path: Path) -> Path:
    """A writable copy of ``small_dataset`` (its ``version=0`` folder)."""
    copy = tmp_path / "copy"
    shutil.copytree(small_dataset.parent, copy)
    return copy / "version=0"


def _corrupt_after_start_up(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Once the command's loader is open (footers read, schemas checked), overwrite every
    parquet file under ``root`` with zeros after its magic bytes (same size): the next row
    group read fails."""
    opened = cli._loader

    def open_then_corrupt(*args: Any, **kwargs: Any) -> Any:
        loader = opened(*args, **kwargs)
        for path in root.rglob("*.parquet"):
            size = path.stat().st_size
            path.write_bytes(b"PAR1" + bytes(size - 4))
        return loader

    monkeypatch.setattr(cli, "_loader", open_then_corrupt)


@pytest.mark.parametrize(
    ("command", "split", "settings"),
    [
        ("run", "train", WINDOWS_OFF),  # the training stream: fails inside the loop
        ("run", "dev", ONE_PASS_WINDOWS_OFF),  # one pass: fails in the metadata pass
        ("plan", "train", WINDOWS_OFF),
    ],
    ids=["run-stream", "run-one-pass", "plan-stream"],
)
def test_a_file_corrupted_after_start_up_exits_1(
    small_dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    split: str,
    settings: str,
) -> None:
    """The README: exit 1 when the run could not complete; 2 is for usage and config errors
    (a file already unreadable at start-up is one: ``test_nonexistent_data_exits_2``)."""
    root = _copy_dataset(small_dataset, tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(settings, encoding="utf-8")
    _corrupt_after_start_up(monkeypatch, root)
    args = [command, "--data", str(root), "--split", split, "--config", str(config)]
    assert main([*args, "--max-batches", "3"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = [ln for ln in err.splitlines() if ln.startswith("dali-asr:")]
    assert line.startswith("dali-asr: failed: DatasetError: ")
    assert "part-00000.parquet: cannot read row group" in line
    assert err.endswith(line + "\n") and "Traceback" not in err


def test_an_error_raised_inside_the_loop_exits_1(
    small_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``on_bad_audio: error`` raises BadAudioError from the loop on an undecodable file."""
    source = small_dataset / "corpus=espeak_read/split=dev/language=eng_Latn/part-00000.parquet"
    rows = pq.read_table(source).slice(0, 6).to_pylist()
    rows[3]["audio_bytes"] = list(np.frombuffer(b"fLaC" + bytes(range(200)), np.int8))
    root = tmp_path / "bad" / "version=0"
    table = pa.Table.from_pylist(rows, schema=pq.read_schema(source))
    write_parquet(partition_dir(root, "c", "dev", "eng_Latn") / "p.parquet", table, 100)
    config = tmp_path / "c.yaml"
    config.write_text(ONE_PASS_WINDOWS_OFF + "dali_asr: {on_bad_audio: error}\n", "utf-8")
    assert main(["run", "--data", str(root), "--split", "dev", "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    where = "corpus=c/split=dev/language=eng_Latn/p.parquet:0:3"
    assert line.startswith(f"dali-asr: failed: BadAudioError: {where}: decode_error")
    assert "on_bad_audio" in line


def test_ctrl_c_exits_1_with_one_line(espeak_root: Path, tmp_path: Path) -> None:
    """SIGINT while ``dali-asr run`` iterates (a real process, DALI's threads running): exit 1,
    one line on standard error, no traceback, nothing on standard output."""
    dump = tmp_path / "dump.jsonl"
    command = [
        sys.executable, "-m", "dali_asr.tools.cli", "run", "--data", str(espeak_root),
        "--split", "train", "--max-batches", "100000", "--dump-batches", str(dump),
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        deadline = time.monotonic() + 120
        # the dump file is block-buffered: bytes in it mean several batches have been received
        while not (dump.exists() and dump.stat().st_size > 0):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "dali-asr run printed no batch in 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    assert out == ""
    assert "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.startswith("dali-asr")] == ["dali-asr: interrupted"]
    assert err.endswith("dali-asr: interrupted\n")
    assert json_lines(dump.read_text(encoding="utf-8"))  # whole batches were written


SUMMARY_LABELS = [
    "batches",
    "examples",
    "audio hours",
    "padding efficiency",
    "audio s per s",
    "wall seconds",
    "loader stalls",
]
DEMO_LANGUAGES = {"eng_Latn", "fra_Latn", "rus_Cyrl", "hin_Deva", "cmn_Hans"}


def test_demo_builds_its_data_and_runs(tmp_path: Path) -> None:
    """``dali-asr demo`` on a fresh machine: builds the demo data under $XDG_CACHE_HOME and
    prints the summary of one epoch (about 15 s on 2 cores, most of it rendering the audio)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "dali_asr.tools.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env,
    )
    seconds = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-3000:]
    assert seconds < 120, f"dali-asr demo took {seconds:.0f} s"
    root = tmp_path / "cache" / "dali-asr" / "demo" / "version=0"
    assert sorted({p.parent.parent.name for p in root.rglob("*.parquet")}) == [
        "split=dev",
        "split=train",
    ]
    lines = done.stdout.splitlines()
    labels = [re.fullmatch(r"(.+?) +\d.*", ln) for ln in lines[:7]]
    assert [m.group(1) if m else None for m in labels] == SUMMARY_LABELS
    assert lines[7] == "languages (share of examples):"
    values, shares = parse_summary(done.stdout)
    assert int(values["batches"]) > 0 and int(values["examples"]) >= int(values["batches"])
    assert 0 < float(values["padding efficiency"]) <= 1
    assert set(shares) == DEMO_LANGUAGES
    assert sum(shares.values()) == pytest.approx(1.0, abs=0.01)
    assert list(shares.values()) == sorted(shares.values(), reverse=True)  # largest first
    assert f"demo dataset at {root}" in done.stderr
    assert "Traceback" not in done.stderr


# --- standard output carries only the data -------------------------------------------------

LOG_LINE = re.compile(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
WARNED = "asr_task_config.spec_aug_p is not implemented"
"""A known key dali-asr does not implement: a warning on standard error (README)."""


def _streams(args: list[str]) -> tuple[str, str]:
    """``dali-asr ARGS`` in a fresh process (logging set up as on the command line): its
    standard output and standard error, captured apart; exit 0 asserted."""
    done = _run_cli(args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr, "nothing logged: the test would not see logs leak to stdout"
    for line in done.stderr.splitlines():
        assert LOG_LINE.match(line), f"not a log line on stderr: {line!r}"
    for line in done.stdout.splitlines():
        assert not LOG_LINE.match(line), f"a log line on stdout: {line!r}"
    return done.stdout, done.stderr


def _warning_config(tmp_path: Path, task: str) -> Path:
    path = tmp_path / "warn.yaml"
    path.write_text(
        f"asr_task_config: {{spec_aug_p: 0.5, {task}}}\n"
        "mixture_parquet_storage_config: {sync_mode: UNTIL_LAST}\n",
        encoding="utf-8",
    )
    return path


def test_stats_stdout_is_only_the_report(small_dataset: Path, tmp_path: Path) -> None:
    config = _warning_config(tmp_path, "min_audio_len: 16000, max_audio_len: 480000")
    plots = tmp_path / "plots"
    out, err = _streams(
        ["stats", str(small_dataset), "--config", str(config), "--plot", str(plots)]
    )
    # the report: one section per split, then the hours per split
    assert out.startswith("== split dev: 4 files, 4 row groups, 18 rows, ")
    assert "\n== split train: 4 files, 6 row groups, 144 rows, " in out
    totals = out[out.index("== hours per split ==") :].splitlines()
    assert [ln.split()[:3] for ln in totals[2:]] == [
        ["dev", "4", "18"],
        ["train", "4", "144"],
        ["total", "8", "162"],
    ]
    # the logs: the config warning, the splits read, the figures written
    assert WARNED in err
    assert re.search(r"^INFO dali_asr\.tools\.stats: split dev: .* 18 rows read in", err, re.M)
    written = re.findall(r"^INFO \S+: wrote (\S+\.png)$", err, re.M)
    assert sorted(Path(p).name for p in written) == sorted(p.name for p in plots.iterdir())
    assert len(written) == 6


def test_bucket_sizes_json_is_one_object_on_stdout(tmp_path: Path) -> None:
    config = _warning_config(
        tmp_path,
        "min_audio_len: 32000, max_audio_len: 960000, max_num_elements: 960000, "
        "num_seqs_multiple_of: 8",
    )
    out, err = _streams(["bucket-sizes", "--config", str(config), "--json"])
    assert out.count("\n") == 1
    report = json.loads(out)
    assert report["count"] == 30
    assert report["buckets"][0] == [24, 32000] and report["buckets"][-1] == [1, 960000]
    assert WARNED in err


def test_tune_batch_stdout_is_the_table_then_the_yaml_line(tmp_path: Path) -> None:
    config = _warning_config(tmp_path, "max_audio_len: 480000")
    out, err = _streams(["tune-batch", "--config", str(config), "--device", "cpu"])
    lines = out.splitlines()
    assert lines[0].split() == ["device", "cpu"]
    assert lines[1].split() == ["measured", "False"]
    assert lines[-2] == ""
    assert yaml.safe_load(lines[-1]) == {"max_num_elements": 2_880_000}
    assert WARNED in err
