"""The ``dali-asr`` command line: ``plan`` and ``run`` on espeak-mini, exit codes, streams."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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
