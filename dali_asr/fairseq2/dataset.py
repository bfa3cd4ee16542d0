"""``DaliAsrDataset``: Omnilingual's ``MixtureParquetAsrDataset`` with dali-asr's reader.

Same constructor (``from_path`` takes the ``version=0`` folder), same ``create_reader``
signature and arguments (Omnilingual's ``MixtureParquetStorageConfig`` and ``AsrTaskConfig``,
the recipe's fairseq2 tokenizer, gangs, dtype, ``num_accumulate``), and it *is* a
``MixtureParquetAsrDataset``: Omnilingual's recipe takes its dataset with
``context.default_dataset.as_(MixtureParquetAsrDataset)``, an ``isinstance`` check, so the
subclass is what lets the recipe run unchanged. dali-asr's own settings (the ``dali_asr:``
section) are optional, at construction or in the dataset family's config.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import torch
from fairseq2.datasets import DataReader, Seq2SeqBatch, SyncMode
from fairseq2.gang import Gangs
from omnilingual_asr.datasets.impl.mixture_parquet_asr_dataset import MixtureParquetAsrDataset

from dali_asr.config import DaliAsrSettings
from dali_asr.fairseq2.configs import loader_config, settings_dict
from dali_asr.fairseq2.reader import DaliAsrReader
from dali_asr.fairseq2.tokenizer import Fairseq2Tokenizer
from dali_asr.loader import AsrLoader

log = logging.getLogger(__name__)

DALI_ASR_DATASET: Final = "dali_asr_dataset"
"""The dataset family name: ``dataset_family: dali_asr_dataset`` in an asset card, or
``dataset.family`` in a recipe config."""


@dataclass
class DaliAsrDatasetConfig:
    """The family's config (an asset card's ``dataset_config``, or a recipe's
    ``dataset.config_overrides``): Omnilingual's ``data``, and dali-asr's own settings."""

    data: Path = field(default_factory=Path)
    """The dataset folder, as Omnilingual's: the ``version=0`` folder holding ``corpus=*``."""

    dali_asr: DaliAsrSettings = field(default_factory=DaliAsrSettings)
    """dali-asr's ``dali_asr:`` section (README, "Configuration"); the defaults suit a recipe:
    the GPU path on a CUDA gang, the CPU path otherwise, the source dtype from the recipe."""


# MixtureParquetAsrDataset is marked @final for type checkers only; subclassing it is what
# passes the recipe's isinstance check.
class DaliAsrDataset(MixtureParquetAsrDataset):  # type: ignore[misc]
    """A dataset whose ``create_reader`` returns dali-asr's ``DaliAsrReader``."""

    def __init__(
        self, path: Path | str, settings: DaliAsrSettings | dict[str, Any] | None = None
    ) -> None:
        super().__init__(Path(path))
        self.settings = settings_dict(settings)

    @classmethod
    def from_path(  # type: ignore[override]
        cls, path: Path | str, settings: DaliAsrSettings | dict[str, Any] | None = None
    ) -> DaliAsrDataset:
        """As ``MixtureParquetAsrDataset.from_path``: ``path`` is the ``version=0`` folder.
        Splits and configs are resolved by ``create_reader``."""
        return cls(path, settings)

    def create_reader(
        self,
        split: str,
        tokenizer: Any,
        gangs: Gangs,
        dtype: torch.dtype,
        num_accumulate: int,
        storage_config: Any,
        task_config: Any,
    ) -> DataReader[Seq2SeqBatch]:
        """A ``DaliAsrReader`` over ``split``, with exactly the reference's arguments.

        ``storage_config``/``task_config`` are Omnilingual's config objects (dali-asr's own
        dataclasses or mappings are accepted too), read field by field and never changed;
        ``tokenizer`` is the recipe's fairseq2 tokenizer; ``gangs.dp`` gives the rank and
        world size, ``gangs.root.device`` the device; ``dtype`` the sources' dtype.
        """
        config = loader_config(storage_config, task_config, self.settings, dtype, gangs.root.device)
        storage = config.mixture_parquet_storage_config
        loader = AsrLoader(
            self.path,
            split=split,
            config=config,
            tokenizer=Fairseq2Tokenizer(tokenizer),
            rank=gangs.dp.rank,
            world_size=gangs.dp.size,
            # Omnilingual's storage reads the dataset through this pyarrow filesystem when set
            filesystem=storage.fragment_streaming.filesystem,
            # the reference sizes pyarrow's pools whenever it builds a reader; so does its
            # drop-in
            size_pyarrow_pools=True,
        )
        log.info(
            "dali-asr reader: split %s on rank %d/%d, %s path, %s sources",
            split,
            gangs.dp.rank,
            gangs.dp.size,
            loader.device,
            config.output_dtype,
        )
        return DaliAsrReader(
            loader,
            gangs,
            num_accumulate=num_accumulate,
            sync=storage.sync_batches,
            sync_mode=SyncMode[storage.sync_mode.name],
        )


def open_dali_asr_dataset(config: DaliAsrDatasetConfig) -> DaliAsrDataset:
    """The family's opener (fairseq2's ``DatasetOpener``)."""
    return DaliAsrDataset.from_path(config.data, config.dali_asr)
