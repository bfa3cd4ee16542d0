"""What the feeding thread's DALI pipeline is built with, from the loader's configuration."""

from __future__ import annotations

from dataclasses import dataclass

from dali_asr.config import AsrTaskConfig, BatchingStrategy
from dali_asr.storage.examples import CORES

BATCHES_PER_ITERATION = 8
"""Full planned batches one DALI iteration may decode by default. Each iteration has a serial
part (DALI's audio decoder opens every file, parsing its headers, on one thread before its
threads decode) and an uneven end (the last, longest file on one thread), and every iteration
is a round of hand-offs between the feeding thread and DALI's; on 2 cores these left ~7% of
the CPU idle with two batches an iteration. Eight gave the single pass 9-11% more audio per
second than two at 3% less CPU per audio-second, for ~120 MB more peak memory
(benchmarks/RESULTS.md, 2026-12-05); on a 16-core GPU node, four already gave 1.8x."""


def decode_samples(task: AsrTaskConfig, setting: int | None) -> int:
    """The audio samples one DALI iteration may decode: the setting, else
    ``BATCHES_PER_ITERATION`` of the largest batch the plan can emit."""
    if setting is not None:
        return setting
    if task.batching_strategy is BatchingStrategy.STATIC:
        largest = task.batch_size * task.max_audio_len
    else:
        largest = max(task.max_num_elements, task.max_audio_len)
    return BATCHES_PER_ITERATION * largest


def decode_pipelines(setting: int | None, num_threads: int, cores: int = CORES) -> int:
    """DALI pipelines for the feeding thread: the setting, else two where a core is left beside
    DALI's workers and the loader's planning and feeding threads, else one."""
    if setting is not None:
        return setting
    return 2 if cores > num_threads + 2 else 1


@dataclass
class PipelineSettings:
    max_batch_size: int
    num_threads: int
    device: str
    device_id: int | None
    prefetch_queue_depth: int
    on_bad_audio: str
    decode_batch: int = 128
    decode_pipelines: int = 1
    decode_samples: int | None = None
    fill_empty: bool = False
    """A planned batch that loses every example to bad audio is delivered as a filler (see
    ``Feeder``) instead of being left out: on several ranks, each must yield its planned
    number of batches or the job hangs at its next collective."""
