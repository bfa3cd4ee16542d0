"""The batch plan of a single pass: row groups in file order → length filter → text filters and
tokenizing → STATIC or LENGTH batches, exactly the reference's order (§1 T1-T6).

Planning never decodes audio. The same code plans from metadata alone (``dali-asr plan``,
``len()``) and with the encoded audio attached (the loader), so both give the same batches.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from dali_asr.batching import LengthBucketer, StaticBatcher, length_bucket_sizes
from dali_asr.config import AsrTaskConfig, BatchingStrategy
from dali_asr.report import ExampleKey, SkipReport
from dali_asr.storage.row_groups import AUDIO, LENGTH, TEXT, ParquetFiles, RowGroupRef
from dali_asr.text import TextFilter, Tokenizer

log = logging.getLogger(__name__)

TOO_SHORT = "audio_too_short"
TOO_LONG = "audio_too_long"


@dataclass(slots=True)
class Example:
    """One planned example. ``audio`` holds its encoded bytes only when planned for loading."""

    file_index: int
    row_group: int
    row: int
    audio_size: int
    text: str
    tokens: np.ndarray
    audio: np.ndarray | None = None


def make_batcher(task: AsrTaskConfig) -> LengthBucketer[Example] | StaticBatcher[Example]:
    """The reference's batching stage for a task config (T6)."""
    if task.batching_strategy is BatchingStrategy.STATIC:
        return StaticBatcher(task.batch_size, drop_remainder=task.drop_remainder)
    sizes = length_bucket_sizes(
        min_audio_len=task.min_audio_len,
        max_audio_len=task.max_audio_len,
        max_num_elements=task.max_num_elements,
        num_seqs_multiple_of=task.num_seqs_multiple_of,
        max_bucket_size=task.max_bucket_size,
    )
    return LengthBucketer(
        sizes, min_data_len=task.min_audio_len, drop_remainder=task.drop_remainder
    )


def max_batch_size(task: AsrTaskConfig) -> int:
    """The largest batch the plan can emit (DALI's batch_size is a maximum)."""
    batcher = make_batcher(task)
    if isinstance(batcher, StaticBatcher):
        return task.batch_size
    return max(size for size, _ in batcher.bucket_sizes)


class SinglePassPlanner:
    """Plans one pass over a split's files in path order."""

    def __init__(
        self,
        files: ParquetFiles,
        task: AsrTaskConfig,
        tokenizer: Tokenizer,
        report: SkipReport | None = None,
    ) -> None:
        self.files = files
        self.task = task
        self.tokenizer = tokenizer
        self.report = report if report is not None else SkipReport()
        self.text_filter = TextFilter(
            task.min_samples_per_char, task.filter_long_text_threshold, tokenizer
        )
        self.row_groups = files.row_groups()

    def key(self, ex: Example) -> ExampleKey:
        return ExampleKey(self.files.files[ex.file_index].rel, ex.row_group, ex.row)

    def batches(self, with_audio: bool = False) -> Iterator[list[Example]]:
        """Yield the batches of one pass, in order; ``max_num_batches`` stops it early."""
        batcher = make_batcher(self.task)
        limit = self.task.max_num_batches
        emitted = 0
        for ref in self.row_groups:
            for ex in self._examples(ref, with_audio):
                batch = batcher.push(ex, ex.audio_size)
                if batch is not None:
                    yield batch
                    emitted += 1
                    if limit is not None and emitted >= limit:
                        return
        for batch in batcher.flush():
            yield batch
            emitted += 1
            if limit is not None and emitted >= limit:
                return
        for reason, count in batcher.skipped.items():
            if count:
                self.report.add(None, reason, count)

    def _examples(self, ref: RowGroupRef, with_audio: bool) -> Iterator[Example]:
        columns = [LENGTH, TEXT, AUDIO] if with_audio else [LENGTH, TEXT]
        table = self.files.read(ref, columns)
        sizes = table.column(LENGTH).to_numpy().astype(np.int64, copy=False)
        rows = self._length_filter(ref, sizes)
        texts_all = table.column(TEXT).to_pylist()
        texts = [texts_all[r] or "" for r in rows]
        tokens, reasons = self.text_filter.apply_batch(sizes[rows], texts)
        audio = self.files.audio_column(table, ref) if with_audio else None
        unk = self.tokenizer.unk_idx
        for r, text, tok, reason in zip(rows.tolist(), texts, tokens, reasons, strict=True):
            if reason is not None:
                self.report.add(ExampleKey(self._rel(ref), ref.row_group, r), reason)
                continue
            if self.task.remove_unknown:
                tok = tok[tok != unk]
            # A copy, so that one example waiting in a bucket does not pin its whole row group.
            blob = audio.row(r).copy() if audio is not None else None
            yield Example(ref.file_index, ref.row_group, r, int(sizes[r]), text, tok, blob)

    def _length_filter(self, ref: RowGroupRef, sizes: np.ndarray) -> np.ndarray:
        lo, hi = self.task.min_audio_len, self.task.max_audio_len
        for reason, bad in ((TOO_SHORT, sizes < lo), (TOO_LONG, sizes > hi)):
            for r in np.flatnonzero(bad).tolist():
                self.report.add(ExampleKey(self._rel(ref), ref.row_group, r), reason)
        return np.flatnonzero((sizes >= lo) & (sizes <= hi))

    def _rel(self, ref: RowGroupRef) -> str:
        return self.files.files[ref.file_index].rel
