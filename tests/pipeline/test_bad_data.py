"""Bad input in known rows: the epoch completes, the report names exactly those rows, every
good example arrives once; faults reach the training loop; threads never outlive the loader."""

from __future__ import annotations

import _thread
import gc
import io
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from conftest import MILESTONE_TASK, torchrun_two_ranks, write_parquet
from helpers.loader_threads import still_running, threads_before

from dali_asr.config import config_from_dict
from dali_asr.errors import BadAudioError
from dali_asr.loader import AsrLoader
from dali_asr.storage.examples import example_key
from dali_asr.text import CharTokenizer, Tokenizer

SOURCE = "version=0/corpus=espeak_read/split=train/language=eng_Latn/part-00000.parquet"
TASK = {**MILESTONE_TASK, "filter_long_text_threshold": 400}
FILE = "corpus=c/split=train/language=eng_Latn/part-0.parquet"


def encode(audio: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def bad_rows(rows: list[dict], rng: np.random.Generator) -> dict[int, str | None]:
    """Put one of each bad thing in known rows; the value is the reason expected, None for
    rows that must arrive (fixed up by decoding: other rate, stereo)."""
    flac = next(i for i, r in enumerate(rows) if r["audio_bytes"][:4] == b"fLaC")
    ogg = next(i for i, r in enumerate(rows) if r["audio_bytes"][:4] == b"OggS")
    good = rows[flac]["audio_bytes"]
    tone = (0.3 * np.sin(np.arange(48_000) / 7)).astype(np.float32)
    changes = {
        1: ("empty_audio", b"", None),
        2: ("decode_error", good[:4] + rng.bytes(6000), None),  # corrupt after the magic
        3: ("decode_error", good[: len(good) // 2], None),  # truncated FLAC
        4: ("unsupported_format", b"ID3\x04" + rng.bytes(4000), None),  # MP3
        5: (
            "length_mismatch",
            rows[ogg]["audio_bytes"][: len(rows[ogg]["audio_bytes"]) // 2],
            rows[ogg]["audio_size"],
        ),  # truncated OGG decodes short
        6: ("length_mismatch", good, rows[flac]["audio_size"] + 20_000),  # wrong audio_size
        7: (None, encode(np.resize(tone, 88_200), 44_100, "WAV"), 32_000),  # resampled
        8: (None, encode(np.stack([tone, tone], 1), 16_000, "FLAC"), 48_000),  # stereo
        9: (
            "non_finite_audio",
            encode(
                np.where(np.arange(48_000) == 9, np.nan, tone).astype(np.float32),
                16_000,
                "WAV",
                "FLOAT",
            ),
            48_000,
        ),
    }
    # text problems go to rows long enough that no audio filter catches them first
    empty, unknown, long_ = [i for i in range(13, len(rows)) if rows[i]["audio_size"] > 100_000][:3]
    changes.update(
        {
            empty: ("empty_text", None, None),
            unknown: ("all_unknown_tokens", None, None),
            long_: ("text_too_long", None, None),
        }
    )
    expected: dict[int, str | None] = {}
    for row, (reason, blob, size) in changes.items():
        if blob is not None:
            rows[row]["audio_bytes"] = blob
        if size is not None:
            rows[row]["audio_size"] = size
        expected[row] = reason
    rows[empty]["text"] = ""
    rows[unknown]["text"] = "☃☃☃"
    rows[long_]["text"] = "a" * 401
    return expected


def source_rows(espeak_root: Path) -> list[dict]:
    """The first 40 rows of SOURCE, audio as bytes."""
    rows = pq.read_table(espeak_root / SOURCE).to_pylist()[:40]
    for r in rows:
        r["audio_bytes"] = bytes(np.asarray(r["audio_bytes"], np.int8).view(np.uint8))
    return rows


def write_rows(rows: list[dict], base: Path) -> Path:
    """``rows`` as FILE under ``base/version=0``, in row groups of 10; returns the root."""
    table = pa.table(
        {
            "text": [r["text"] for r in rows],
            "audio_bytes": pa.array(
                [list(np.frombuffer(r["audio_bytes"], np.int8)) for r in rows],
                pa.list_(pa.int8()),
            ),
            "audio_size": pa.array([r["audio_size"] for r in rows], pa.int64()),
        }
    )
    root = base / "version=0"
    write_parquet(root / FILE, table, 10)
    return root


@pytest.fixture(scope="module")
def bad_dataset(espeak_root: Path, tmp_path_factory: pytest.TempPathFactory):
    rows = source_rows(espeak_root)
    expected = bad_rows(rows, np.random.default_rng(7))
    # the 44.1 kHz WAV: its audio_size is the length after resampling to 16 kHz
    rows[7]["audio_size"] = sf.info(io.BytesIO(rows[7]["audio_bytes"])).frames * 16_000 // 44_100
    root = write_rows(rows, tmp_path_factory.mktemp("bad"))
    too_short = {i for i, r in enumerate(rows) if r["audio_size"] < 16_000 and i not in expected}
    # a character vocabulary of the real texts: the snowmen are all unknown
    tokenizer = CharTokenizer.from_texts(r["text"] for r in rows if "☃" not in r["text"])
    return root, expected, too_short, len(rows), tokenizer


def loader_for(root: Path, tokenizer: Path | Tokenizer, **dali: object) -> AsrLoader:
    cfg = config_from_dict(
        {
            "asr_task_config": TASK,
            "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
            "dali_asr": dali,
        }
    )
    return AsrLoader(root, "train", cfg, tokenizer)


@pytest.mark.parametrize("pipelines", [1, 2])
def test_bad_rows_are_skipped_and_named(bad_dataset, pipelines: int) -> None:
    root, expected, too_short, n, tokenizer = bad_dataset
    loader = loader_for(root, tokenizer, decode_pipelines=pipelines)
    batches = list(loader)
    got = [k.row_group * 10 + k.row for b in batches for k in b.keys]
    skipped = {
        k.row_group * 10 + k.row: reason
        for reason, keys in loader.report.keys.items()
        for k in keys
        if k.file == FILE
    }
    bad = {row: reason for row, reason in expected.items() if reason is not None}
    assert {r: skipped[r] for r in bad} == bad
    assert set(skipped) == set(bad) | too_short
    assert sorted(got) == sorted(set(range(n)) - set(skipped))  # every good example, once
    assert 7 in got and 8 in got  # resampled and downmixed
    for b in batches:
        assert b.batch_size >= 1
        assert (b.source_seqs[b.source_padding_mask] == 0).all()


def test_on_bad_audio_error_names_the_key(bad_dataset) -> None:
    root, *_, tokenizer = bad_dataset
    loader = loader_for(root, tokenizer, on_bad_audio="error")
    with pytest.raises(BadAudioError, match=r"part-0\.parquet:0:\d+: "):
        list(loader)
    assert not _threads()


_EARLIER: set[threading.Thread] = set()


@pytest.fixture(autouse=True)
def _earlier_threads() -> None:
    _EARLIER.clear()
    _EARLIER.update(threads_before())


def _threads() -> set[threading.Thread]:
    """This test's loader threads still alive after up to 5 s."""
    return still_running(_EARLIER)


def test_planning_failure_reaches_the_loop(small_dataset: Path, espeak_tokenizer, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(small_dataset, root)
    loader = loader_for(root, espeak_tokenizer)
    victim = root / loader.files.files[-1].rel
    victim.write_bytes(b"not parquet any more")  # after the footers were read at start
    with pytest.raises(Exception, match=r"part-00000\.parquet"):
        list(loader)
    assert not _threads()


def test_keyboard_interrupt_stops_every_thread(espeak_root: Path, espeak_tokenizer) -> None:
    loader = loader_for(espeak_root / "version=0", espeak_tokenizer)
    it = iter(loader)
    next(it)
    timer = threading.Timer(0.05, _thread.interrupt_main)
    with pytest.raises(KeyboardInterrupt):
        timer.start()
        for _ in it:
            time.sleep(0.01)
    timer.cancel()
    loader.close()
    assert not _threads()


def test_garbage_collected_mid_epoch_leaves_no_threads(espeak_root: Path, espeak_tokenizer) -> None:
    loader = loader_for(espeak_root / "version=0", espeak_tokenizer)
    it = iter(loader)
    next(it)
    assert [t for t in threading.enumerate() if t.name.startswith("dali-asr")]
    del it, loader
    gc.collect()
    assert not _threads()


def test_a_loader_dropped_after_an_epoch_stops_without_the_garbage_collector(
    espeak_root: Path, espeak_tokenizer
) -> None:
    """Its threads went on planning the next epoch; dropping the last reference ends them at
    once, with no reference cycle left for the collector."""
    loader = loader_for(espeak_root / "version=0", espeak_tokenizer)
    assert len(list(loader)) == 50
    gc.disable()
    try:
        del loader
        assert not _threads()
    finally:
        gc.enable()


def test_close_twice_and_iterate_again(espeak_root: Path, espeak_tokenizer) -> None:
    loader = loader_for(espeak_root / "version=0", espeak_tokenizer)
    next(iter(loader))
    loader.close()
    loader.close()
    assert len(list(loader)) == 50
    loader.close()  # the threads went on planning the next epoch (prefetch_next_epoch)
    assert not _threads()


def test_cli_prints_one_line_per_skipped_example(bad_dataset, tmp_path: Path, capsys) -> None:
    import json

    from dali_asr.tools.cli import main

    root, expected, too_short, _, tokenizer = bad_dataset
    (tmp_path / "tok.json").write_text(tokenizer.to_json())
    config = tmp_path / "c.yaml"
    config.write_text(
        json.dumps(
            {
                "asr_task_config": TASK,
                "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
            }
        )
    )
    args = ["--data", str(root), "--config", str(config), "--tokenizer", str(tmp_path / "tok.json")]
    assert main(["run", *args]) == 0
    err = capsys.readouterr().err.splitlines()
    lines = [line for line in err if line.startswith(f"skipped {FILE}:")]
    named = {
        int(line.split()[1].rsplit(":", 2)[1]) * 10
        + int(line.split()[1].rsplit(":", 1)[1]): line.split()[2]
        for line in lines
    }
    bad = {row: reason for row, reason in expected.items() if reason is not None}
    assert {r: named[r] for r in bad} == bad
    assert len(lines) == len(bad) + len(too_short)
    assert err[-1].startswith(f"skipped {len(lines)}:")


def _skips(loader: AsrLoader) -> dict[str, str]:
    return {str(k): r for r, keys in loader.report.keys.items() for k in keys}


def test_a_bad_file_kills_dali_once_per_run_not_per_epoch(
    bad_dataset, caplog: pytest.LogCaptureFixture
) -> None:
    """Epoch 1 finds the corrupt file inside DALI (a rebuild and a replay); epoch 2, and a
    loader resumed from epoch 1's state, drop it before DALI sees it, with the same skips."""
    root, *_, tokenizer = bad_dataset
    loader = loader_for(root, tokenizer)
    with caplog.at_level(logging.WARNING, logger="dali_asr.pipeline.feeding"):
        one = [b.keys for b in loader]
        rebuilt = [r for r in caplog.records if "rebuilt the pipeline" in r.getMessage()]
        assert len(rebuilt) >= 1
        first = _skips(loader)
        assert "decode_error" in loader.known_bad.state_dict().values()
        state = json.loads(json.dumps(loader.state_dict()))
        caplog.clear()
        loader.report.keys.clear()
        two = [b.keys for b in loader]
        assert not [r for r in caplog.records if "rebuilt the pipeline" in r.getMessage()]
        assert _skips(loader) == first  # each bad example skipped again, for the same reason
        assert sorted(map(str, (k for b in two for k in b))) == sorted(
            map(str, (k for b in one for k in b))
        )
        resumed = loader_for(root, tokenizer)
        resumed.load_state_dict(state)
        assert [b.keys for b in resumed] == two
        assert not [r for r in caplog.records if "rebuilt the pipeline" in r.getMessage()]


def test_all_bad_batches_become_fillers_so_ranks_keep_step(bad_dataset, tmp_path: Path) -> None:
    """Two ranks under torchrun, one collective per batch: the planned batches whose examples
    are all bad (a DALI decode failure on one rank, bytes that are not audio and a wrong
    length on the other) arrive as fillers, marked, at their plan index, and both ranks
    yield their planned number of batches (a rank short of one would hang the other)."""
    root, expected, _, _, tokenizer = bad_dataset
    doc = {
        "asr_task_config": {**TASK, "batching_strategy": "STATIC", "batch_size": 2},
        "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
    }
    loader = AsrLoader(root, "train", config_from_dict(doc), tokenizer)
    plan = [[ex.row_group * 10 + ex.row for ex in b] for b in loader.plan()]
    bad = {row for row, reason in expected.items() if reason is not None}
    all_bad = [i for i, rows in enumerate(plan) if set(rows) <= bad]
    assert {i % 2 for i in all_bad} == {0, 1}  # each rank has one
    (tmp_path / "chars.json").write_text(tokenizer.to_json(), encoding="utf-8")
    ranks = torchrun_two_ranks(root, tmp_path / "chars.json", tmp_path, doc)
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"]) == ranks[0]["len"]
    for r, result in enumerate(ranks):
        assert result["plan_indices"] == list(range(r, len(plan), 2))
        assert result["fillers"] == [i for i in all_bad if i % 2 == r]
        assert result["filler_batches"] == len(result["fillers"])
    delivered = [b.plan_index for b in loader]  # one rank: an all-bad batch is left out
    assert delivered == [i for i in range(len(plan)) if i not in all_bad]


MIN_SAMPLES_PER_CHAR = 1_000
NON_FINITE = {30: np.inf, 31: -np.inf, 32: np.nan}
"""Rows whose audio becomes a float WAV holding one +inf, -inf or NaN sample."""
AT_THE_LIMIT, JUST_OVER = 12, 4
"""Rows whose text is made exactly MIN_SAMPLES_PER_CHAR samples per character (kept), and one
character too long for that (too fast)."""


@pytest.fixture(scope="module")
def odd_dataset(espeak_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """SOURCE's first 40 rows with non-finite samples in three and a speech rate just at and
    just past ``min_samples_per_char`` in two; the rows' own speech rates (espeak reads 850 to
    2,100 samples per character) make about a dozen more too fast."""
    rows = source_rows(espeak_root)
    tone = (0.3 * np.sin(np.arange(48_000) / 7)).astype(np.float32)
    for row, value in NON_FINITE.items():
        audio = tone.copy()
        audio[1000 + row] = value
        rows[row]["audio_bytes"] = encode(audio, 16_000, "WAV", "FLOAT")
        rows[row]["audio_size"] = 48_000
    # 59,000 is within the length check's tolerance of the real 59,436 samples
    rows[AT_THE_LIMIT]["audio_size"] = 59_000
    rows[AT_THE_LIMIT]["text"] = (rows[AT_THE_LIMIT]["text"] * 2)[:59]
    over = rows[JUST_OVER]["audio_size"] // MIN_SAMPLES_PER_CHAR + 1
    rows[JUST_OVER]["text"] = (rows[JUST_OVER]["text"] * 2)[:over]
    root = write_rows(rows, tmp_path_factory.mktemp("odd"))
    tokenizer = CharTokenizer.from_texts(r["text"] for r in rows)
    return root, rows, tokenizer


def _by_row(keys) -> set[int]:
    return {k.row_group * 10 + k.row for k in keys if k.file == FILE}


@pytest.mark.parametrize(
    "features",
    [{}, {"normalize_audio": True}, {"use_fbank": True}],
    ids=["waveform", "normalize_audio", "fbank"],
)
def test_non_finite_samples_and_too_fast_speech_are_skipped(
    odd_dataset, features: dict[str, bool]
) -> None:
    """+inf, -inf and NaN samples are ``non_finite_audio`` on every feature path (the
    layer norm's statistics and the fbank's have their own code), and nothing non-finite
    reaches a batch; speech faster than ``min_samples_per_char`` is ``too_fast_speech``, the
    limit itself is kept."""
    root, rows, tokenizer = odd_dataset
    cfg = config_from_dict(
        {
            "asr_task_config": {
                **TASK,
                **features,
                "min_samples_per_char": MIN_SAMPLES_PER_CHAR,
            },
            "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
        }
    )
    loader = AsrLoader(root, "train", cfg, tokenizer)
    batches = list(loader)
    skipped = {reason: _by_row(keys) for reason, keys in loader.report.keys.items()}
    in_range = {
        i for i, r in enumerate(rows) if TASK["min_audio_len"] <= r["audio_size"] <= 480_000
    }
    # the speech rate by hand: samples per raw character
    too_fast = {
        i for i in in_range if rows[i]["audio_size"] / len(rows[i]["text"]) < MIN_SAMPLES_PER_CHAR
    }
    assert JUST_OVER in too_fast and AT_THE_LIMIT not in too_fast and len(too_fast) > 5
    assert skipped.pop("too_fast_speech") == too_fast
    assert skipped.pop("non_finite_audio") == set(NON_FINITE)
    assert skipped.pop("audio_too_short") == set(range(len(rows))) - in_range
    assert not skipped
    got = [k.row_group * 10 + k.row for b in batches for k in b.keys]
    assert sorted(got) == sorted(in_range - too_fast - set(NON_FINITE))
    for b in batches:
        assert torch.isfinite(b.source_seqs).all()
        assert (b.source_seqs[b.source_padding_mask] == 0).all()
    loader.close()


@pytest.mark.parametrize(
    ("pipelines", "shuffle"),
    [
        (1, {}),
        (2, {}),
        # the bad files in the second pipeline's iterations (found by trying seeds)
        (2, {"seed": 3, "example_shuffle_window": 0}),
    ],
    ids=["one pipeline", "two, failing in the first", "two, failing in the second"],
)
def test_a_decode_failure_replays_the_plan_in_order(
    bad_dataset, pipelines: int, shuffle: dict
) -> None:
    """After DALI fails on a file, the batches in flight are probed and replayed: the loop
    receives the plan's batches in the plan's order, each with its examples in the plan's
    order, less the bad examples (and the batches left with none). With two pipelines, the
    failure invalidates one; the other goes on, and the replayed batches take their turn."""
    root, *_, tokenizer = bad_dataset
    doc = {
        "asr_task_config": {**TASK, "batching_strategy": "STATIC", "batch_size": 3, **shuffle},
        "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
        "dali_asr": {"decode_batch": 3, "decode_pipelines": pipelines},
    }
    planner = AsrLoader(root, "train", config_from_dict(doc), tokenizer)
    plan = [[str(example_key(planner.files.files, ex)) for ex in b] for b in planner.plan()]
    loader = AsrLoader(root, "train", config_from_dict(doc), tokenizer)
    delivered = [(b.plan_index, [str(k) for k in b.keys]) for b in loader]
    assert "decode_error" in loader.report.counts
    bad = {str(k) for keys in loader.report.keys.values() for k in keys}
    expected = [(i, [k for k in b if k not in bad]) for i, b in enumerate(plan)]
    assert delivered == [(i, keys) for i, keys in expected if keys]
