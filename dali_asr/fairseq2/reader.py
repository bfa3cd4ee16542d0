"""``DaliAsrReader``: an ``AsrLoader`` as fairseq2's ``DataReader[Seq2SeqBatch]``, stepping as
``DataPipelineReader`` does (fairseq2 0.6 ``datasets/data_reader.py``): each ``next()`` is one
training step of ``num_accumulate`` batches, the ranks agree on the step's batch count when
``sync`` is on, and an empty step is the end of data until ``reset()``.

Batches are fairseq2's ``Seq2SeqBatch`` as Omnilingual's ``AsrTask.to_seq2seq_batch`` builds
them: source and target tensors, lengths as Python lists, and the collated ``example`` dict
with the keys the reference's collater leaves there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
from fairseq2.datasets import DataReader, Seq2SeqBatch, SyncMode
from fairseq2.gang import Gangs, all_sum
from typing_extensions import Self

from dali_asr.batch import Seq2SeqBatch as DaliBatch
from dali_asr.errors import ConfigError
from dali_asr.loader import AsrLoader

log = logging.getLogger(__name__)

STATE_KIND = "dali_asr.fairseq2.DaliAsrReader"
STATE_VERSION = 1

SAMPLE_RATE = 16_000.0
"""dali-asr decodes every file to 16 kHz (the reference reports each file's own rate, which
Omnilingual's data preparation makes 16 kHz)."""


def fairseq2_batch(batch: DaliBatch) -> Seq2SeqBatch:
    """One dali-asr batch as the reference's ``Seq2SeqBatch``.

    ``example`` holds what the reference's collater leaves there, in its key order: ``audio``
    (``sample_rate``; not libsndfile's ``format`` code, which dali-asr's decoder does not
    report and no Omnilingual criterion reads), ``length`` (``audio_size``), ``text`` (the
    collated target tokens, as in the reference: its ``text`` is tokenized in place), ``lang``,
    ``split``, ``corpus`` and ``audio_feature``. dali-asr's own per-batch facts are under
    ``example["dali_asr"]``: the transcripts, example keys, padding mask, plan index and the
    ``filler`` flag (a stand-in batch on several ranks; see the README's bad-data section).
    """
    if batch.host_lengths is not None:
        source_lens, target_lens = (list(map(int, v)) for v in batch.host_lengths)
    else:
        source_lens = [int(n) for n in batch.source_seq_lens.tolist()]
        target_lens = [int(n) for n in batch.target_seq_lens.tolist()]
    size = batch.batch_size
    example: dict[str, Any] = {
        "audio": {"sample_rate": [SAMPLE_RATE] * size},
        "length": list(batch.audio_size),
        "text": _collated(batch.target_seqs, target_lens),
        "lang": list(batch.language),
        "split": list(batch.split),
        "corpus": list(batch.corpus),
        "audio_feature": _collated(batch.source_seqs, source_lens),
        "dali_asr": {
            "text": list(batch.text),
            "keys": [k.as_dict() for k in batch.keys],
            "source_padding_mask": batch.source_padding_mask,
            "plan_index": batch.plan_index,
            "filler": batch.filler,
        },
    }
    return Seq2SeqBatch(
        batch.source_seqs, source_lens, batch.target_seqs, target_lens, example=example
    )


def _collated(seqs: torch.Tensor, lens: list[int]) -> dict[str, Any]:
    """fairseq2's Collater output for one padded leaf: ragged when any row is padded."""
    width = int(seqs.shape[1])
    return {"is_ragged": any(n != width for n in lens), "seqs": seqs, "seq_lens": lens}


class DaliAsrReader(DataReader[Seq2SeqBatch]):
    """Reads one split with an ``AsrLoader``; made by ``DaliAsrDataset.create_reader``.

    ``state_dict()`` is dali-asr's exact resume state: loaded into a new reader (same dataset,
    config and world size), its next step is the step after the one the state was taken after,
    batch for batch, with nothing lost or repeated (the reference's reader, with
    ``strict_state=False``, drops its shuffle and prefetch buffers instead).
    """

    def __init__(
        self,
        loader: AsrLoader,
        gangs: Gangs,
        *,
        num_accumulate: int = 1,
        sync: bool = True,
        sync_mode: SyncMode = SyncMode.UNTIL_FIRST,
    ) -> None:
        if num_accumulate < 1:
            raise ConfigError(f"num_accumulate: expected >= 1, got {num_accumulate}")
        self.loader = loader
        self._gangs = gangs
        self._num_accumulate = num_accumulate
        self._sync = sync
        self._sync_mode = sync_mode
        self._epoch: Iterator[DaliBatch] | None = None
        self._eod = False

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> list[Seq2SeqBatch]:
        if self._eod:
            raise StopIteration()
        if self._epoch is None:
            self._epoch = iter(self.loader)
        batches = []
        for _ in range(self._num_accumulate):
            try:
                batch = next(self._epoch)
            except StopIteration:
                break
            batches.append(fairseq2_batch(batch))
        batches = batches[: self._agreed_count(len(batches))]
        if self._eod:
            raise StopIteration()
        return batches

    def _agreed_count(self, local: int) -> int:
        """How many of this rank's batches the step keeps, agreed over the data-parallel gang
        as DataPipelineReader does; sets the end of data. UNTIL_FIRST: every rank keeps the
        smallest count, and all stop once one rank has run out. UNTIL_LAST: every rank keeps
        its own, a rank that has run out returns an empty step, and all stop when every rank
        has."""
        dp = self._gangs.dp
        if not self._sync or dp.size == 1:
            self._eod = local == 0
            return local
        if self._sync_mode == SyncMode.UNTIL_LAST:
            self._eod = int(all_sum(dp, local)) == 0
            return local
        counts = torch.zeros((dp.size,), device=dp.device, dtype=torch.int64)
        dp.all_gather(counts, torch.tensor([local], device=dp.device, dtype=torch.int64))
        smallest = int(counts.min())
        self._eod = smallest == 0
        return smallest

    def reset(self) -> None:
        """Back to the first batch: the next ``next()`` starts the loader's next epoch, whose
        shuffles continue from this one's RNG states (as the reference's pipeline reset)."""
        self._eod = False
        self._epoch = None

    def state_dict(self) -> dict[str, object]:
        return {
            "kind": STATE_KIND,
            "version": STATE_VERSION,
            "num_accumulate": self._num_accumulate,
            "loader": self.loader.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, object]) -> None:
        if state_dict.get("kind") != STATE_KIND:
            found = sorted(state_dict)
            hint = (
                " (a fairseq2 DataPipeline state: the reference reader's checkpoint cannot be "
                "resumed by dali-asr's reader)"
                if "position" in state_dict
                else ""
            )
            raise ConfigError(
                f"data reader state: expected a {STATE_KIND} state (keys kind, version, "
                f"num_accumulate, loader), got keys {found}{hint}"
            )
        if state_dict.get("version") != STATE_VERSION:
            raise ConfigError(
                f"data reader state: version {state_dict.get('version')}, expected {STATE_VERSION}"
            )
        if state_dict.get("num_accumulate") != self._num_accumulate:
            log.warning(
                "data reader state was saved with num_accumulate %s, this reader has %s: "
                "steps after the resume hold %s batches",
                state_dict.get("num_accumulate"),
                self._num_accumulate,
                self._num_accumulate,
            )
        self.loader.load_state_dict(state_dict["loader"])  # type: ignore[arg-type]
        self._epoch = None
        self._eod = False

    @property
    def num_accumulate(self) -> int:
        return self._num_accumulate

    def close(self) -> None:
        """Stop the loader's threads and remove its temporary row-group cache (also done when
        the reader is garbage-collected)."""
        self._epoch = None
        self.loader.close()
