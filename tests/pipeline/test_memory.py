"""What one DALI iteration may decode: consecutive planned batches are grouped up to
``decode_batch`` files and ``decode_samples`` samples, which bounds the memory held by the
iterations in flight (the soak in benchmarks/RESULTS.md)."""

from __future__ import annotations

import io
import queue
import threading
from collections import deque
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from dali_asr.config import BatchingStrategy, config_from_dict
from dali_asr.errors import ConfigError
from dali_asr.pipeline.feeding import END, Feeder, decode_samples
from dali_asr.planning.epoch_plan import Planned
from dali_asr.report import KnownBad, SkipReport
from dali_asr.storage.examples import Example


def test_setting_default_and_validation() -> None:
    assert config_from_dict({}).dali_asr.decode_samples is None
    cfg = config_from_dict({"dali_asr": {"decode_samples": 2_000_000}})
    assert cfg.dali_asr.decode_samples == 2_000_000
    with pytest.raises(ConfigError, match=r"dali_asr\.decode_samples"):
        config_from_dict({"dali_asr": {"decode_samples": 0}}).validate()


def test_default_budget_is_the_largest_planned_batch() -> None:
    task = config_from_dict(
        {"asr_task_config": {"max_audio_len": 480_000, "max_num_elements": 960_000}}
    ).asr_task_config
    assert decode_samples(task, None) == 960_000
    assert decode_samples(task, 123) == 123
    task.batching_strategy = BatchingStrategy.STATIC
    task.batch_size = 4
    assert decode_samples(task, None) == 4 * 480_000


def _wav() -> np.ndarray:
    out = io.BytesIO()
    sf.write(out, np.zeros(1600, np.float32), 16_000, format="WAV", subtype="PCM_16")
    return np.frombuffer(out.getvalue(), np.uint8)


def _source_only(decode_batch: int, budget: int | None, batches: list[list[int]]) -> Feeder:
    """A Feeder with no threads: its planned queue holds ``batches`` (audio sizes) and END."""
    feeder = Feeder.__new__(Feeder)
    feeder.settings = SimpleNamespace(
        decode_batch=decode_batch, decode_samples=budget, on_bad_audio="skip"
    )
    feeder.maker = SimpleNamespace(augmenter=None)
    feeder.report = SkipReport()
    feeder._planned = queue.Queue()
    feeder._stop = threading.Event()
    feeder._in_dali = deque()
    feeder._replay = deque()
    feeder._held = feeder._ended = None
    feeder._source_end = END
    feeder._tail = []
    feeder.known_bad = KnownBad()
    blob = _wav()
    for i, sizes in enumerate(batches):
        examples = [Example(0, 0, r, n, "", None, None, blob) for r, n in enumerate(sizes)]
        feeder._planned.put(Planned(i, examples))
    feeder._planned.put(END)
    return feeder


def _groups(feeder: Feeder) -> list[list[int]]:
    out = []
    with pytest.raises(StopIteration):
        while True:
            feeder._source()
            out.append([p.index for p in feeder._in_dali.popleft()])
    return out


def test_groups_stop_at_the_sample_budget() -> None:
    # two long files per batch: by files alone all four would go in one iteration
    long = [[400_000, 400_000]] * 4
    assert _groups(_source_only(32, None, long)) == [[0, 1, 2, 3]]
    assert _groups(_source_only(32, 960_000, long)) == [[0], [1], [2], [3]]
    assert _groups(_source_only(32, 1_600_000, long)) == [[0, 1], [2, 3]]
    # small batches still share an iteration; a batch over the budget still goes whole
    mixed = [[100_000] * 3, [100_000] * 3, [2_000_000], [50_000]]
    assert _groups(_source_only(32, 960_000, mixed)) == [[0, 1], [2], [3]]
    # the file count still applies
    assert _groups(_source_only(4, 960_000, mixed)) == [[0], [1], [2], [3]]
