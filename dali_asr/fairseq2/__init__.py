"""dali-asr as a drop-in dataset for Omnilingual ASR's fairseq2 recipes.

``from dali_asr.fairseq2 import DaliAsrDataset``: the same ``from_path`` and ``create_reader``
as Omnilingual's ``MixtureParquetAsrDataset``, whose reader yields fairseq2 ``Seq2SeqBatch``
steps made by dali-asr. Needs fairseq2 and omnilingual-asr (the ``fairseq2-cuda12`` extra;
``scripts/setup_fairseq2_env.sh``); nothing else in dali-asr imports this package, and
importing it loads fairseq2 only when one of its names is used.

``setup_fairseq2_extension`` is the ``fairseq2.extension`` entry point (pyproject.toml): in an
environment with dali-asr installed, fairseq2 registers the dataset family
``dali_asr_dataset`` at start-up, so an asset card or recipe config selects it by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dali_asr.fairseq2.dataset import (
        DALI_ASR_DATASET,
        DaliAsrDataset,
        DaliAsrDatasetConfig,
        open_dali_asr_dataset,
    )
    from dali_asr.fairseq2.reader import DaliAsrReader, fairseq2_batch
    from dali_asr.fairseq2.tokenizer import Fairseq2Tokenizer

__all__ = [
    "DALI_ASR_DATASET",
    "DaliAsrDataset",
    "DaliAsrDatasetConfig",
    "DaliAsrReader",
    "Fairseq2Tokenizer",
    "fairseq2_batch",
    "open_dali_asr_dataset",
    "setup_fairseq2_extension",
]

_WHERE = {
    "DALI_ASR_DATASET": "dataset",
    "DaliAsrDataset": "dataset",
    "DaliAsrDatasetConfig": "dataset",
    "open_dali_asr_dataset": "dataset",
    "DaliAsrReader": "reader",
    "fairseq2_batch": "reader",
    "Fairseq2Tokenizer": "tokenizer",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'dali_asr.fairseq2' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"dali_asr.fairseq2.{module}"), name)


def setup_fairseq2_extension(container: Any) -> None:
    """Register the ``dali_asr_dataset`` family in fairseq2's dependency container."""
    from fairseq2.composition import register_dataset_family

    from dali_asr.fairseq2.dataset import (
        DALI_ASR_DATASET,
        DaliAsrDataset,
        DaliAsrDatasetConfig,
        open_dali_asr_dataset,
    )

    register_dataset_family(
        container,
        DALI_ASR_DATASET,
        DaliAsrDataset,
        DaliAsrDatasetConfig,
        opener=open_dali_asr_dataset,
    )
