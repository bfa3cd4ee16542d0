"""Augmentation through the real loader (DALI CPU graph): speed perturbation resamples in
DALI (before the waveform or the fbank), SpecAugment masks the collated fbank; both reproduce
exactly on a second run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import MILESTONE_TASK

from dali_asr.config import config_from_dict
from dali_asr.errors import ConfigError
from dali_asr.loader import AsrLoader
from dali_asr.pipeline.fbank import num_fbank_frames


def _loader(root: Path, tokenizer: Path, fbank: bool, **dali: object) -> AsrLoader:
    config = config_from_dict(
        {
            "asr_task_config": {**MILESTONE_TASK, "use_fbank": fbank},
            "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
            "dali_asr": dali,
        }
    )
    return AsrLoader(root, "train", config, tokenizer)


def _first(loader: AsrLoader, count: int = 4) -> list:
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == count:
            break
    loader.close()
    return batches


@pytest.mark.parametrize("fbank", [False, True])
def test_speed_perturbation_changes_lengths_by_the_drawn_factor(
    small_dataset: Path, espeak_tokenizer: Path, fbank: bool
) -> None:
    """The graph resamples before the features: the waveform's length, or the fbank's frames
    of the resampled audio, follow the drawn factor."""
    speeds = [0.9, 1.1]
    loader = _loader(small_dataset, espeak_tokenizer, fbank, speed_perturb=speeds)
    batches = _first(loader)
    augmenter = loader.batch_maker().augmenter
    ratios = []
    for b in batches:
        factors = augmenter.speed_factors(b.keys, b.plan_index)
        for n, size, f in zip(b.source_seq_lens.tolist(), b.audio_size, factors, strict=True):
            if fbank:  # ±2 samples move the frame count by at most one
                assert abs(n - num_fbank_frames(round(size / f))) <= 1
            else:
                assert abs(n - size / f) <= 2
            ratios.append(round(float(f), 2))
    assert set(ratios) == {0.9, 1.1}
    assert loader.report.counts.get("length_mismatch", 0) == 0
    again = _first(_loader(small_dataset, espeak_tokenizer, fbank, speed_perturb=speeds))
    for a, b in zip(batches, again, strict=True):
        assert torch.equal(a.source_seqs, b.source_seqs)


def test_spec_augment_masks_fbank_reproducibly(small_dataset: Path, espeak_tokenizer: Path) -> None:
    spec = {"p": 1.0, "max_freq_width": 20, "max_time_width": 30}
    batches = _first(_loader(small_dataset, espeak_tokenizer, True, spec_augment=spec))
    plain = _first(_loader(small_dataset, espeak_tokenizer, True))
    masked_bins = 0
    for a, p in zip(batches, plain, strict=True):
        assert a.keys == p.keys
        differs = a.source_seqs != p.source_seqs
        assert torch.all(a.source_seqs[differs] == 0)
        # a frequency mask zeroes a bin over every real frame of the example
        for i, n in enumerate(a.source_seq_lens.tolist()):
            masked_bins += int((a.source_seqs[i, :n] == 0).all(dim=0).sum())
    assert masked_bins > 0
    again = _first(_loader(small_dataset, espeak_tokenizer, True, spec_augment=spec))
    for a, b in zip(batches, again, strict=True):
        assert torch.equal(a.source_seqs, b.source_seqs)


@pytest.mark.parametrize(
    ("dali", "key"),
    [
        ({"speed_perturb": [0.1]}, "dali_asr.speed_perturb"),
        ({"speed_perturb": "fast"}, "dali_asr.speed_perturb"),
        ({"spec_augment": {"p": 2}}, "dali_asr.spec_augment.p"),
        ({"spec_augment": {"num_time_masks": -1}}, "dali_asr.spec_augment.num_time_masks"),
        ({"spec_augment": {"freq_masks": 2}}, "dali_asr.spec_augment.freq_masks"),
    ],
)
def test_bad_augmentation_settings_name_the_key(dali: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict({"dali_asr": dali})
