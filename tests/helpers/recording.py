"""A loader whose CPU batch maker records every DALI iteration it runs: which pipeline, how
many files and samples DALI decoded, and the planned batches collated from it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from dali_asr.loader import AsrLoader
from dali_asr.pipeline.collate import LAYER_NORM, BatchMaker, Decoded


@dataclass
class Iteration:
    """One DALI iteration as DALI returned it."""

    pipe: int
    """The pipeline that ran it (its ``id``)."""
    files: int
    """Files DALI decoded (its output batch size)."""
    samples: int
    """Samples DALI decoded, all files together."""
    batches: list[int] = field(default_factory=list)
    """Files of each planned batch collated from it, in order."""


class Recorder(BatchMaker):
    """The loader's own CPU maker, which also records every DALI iteration it runs. It takes
    50 ms per iteration, a slow training step's worth, so that planned batches are waiting
    whenever DALI asks for more: grouping them is up to the feeder's rules alone."""

    def __init__(self, maker: BatchMaker) -> None:
        super().__init__(
            maker.files,
            maker.pad_idx,
            maker.dtype,
            maker.pad_to_multiple,
            use_fbank=maker.use_fbank,
            normalize_audio=maker.norm is LAYER_NORM,
            augmenter=maker.augmenter,
        )
        assert vars(self) == vars(maker)  # the loader's maker, nothing left out
        self.iterations: list[Iteration] = []

    def run(self, pipe) -> tuple:
        outputs = super().run(pipe)
        audio, lengths = outputs
        decoded = sum(int(np.asarray(lengths[i])[0]) for i in range(len(audio)))
        self.iterations.append(Iteration(id(pipe), len(audio), decoded))
        time.sleep(0.05)
        return outputs

    def decoded(self, outputs, rows: range) -> Decoded:
        self.iterations[-1].batches.append(len(rows))
        return super().decoded(outputs, rows)


class InspectedLoader(AsrLoader):
    """An AsrLoader whose batches are made by a ``Recorder`` (``batch_maker`` is the hook)."""

    recorder: Recorder

    def batch_maker(self) -> BatchMaker:
        self.recorder = Recorder(super().batch_maker())
        return self.recorder
