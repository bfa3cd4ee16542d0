"""``Seq2SeqBatch``: what the training loop receives."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from dali_asr.keys import ExampleKey


@dataclass
class Seq2SeqBatch:
    """One batch of padded sources and targets, with where each example came from.

    ``source_seqs`` is [B, T] (waveform) or [B, T, 80] (fbank), zero-padded. The padding mask
    follows ``torch.nn.MultiheadAttention``'s ``key_padding_mask``: True marks padding.
    Targets carry no BOS/EOS (as the reference) and are padded with the tokenizer's pad id.
    """

    source_seqs: torch.Tensor
    source_seq_lens: torch.Tensor
    source_padding_mask: torch.Tensor
    target_seqs: torch.Tensor
    target_seq_lens: torch.Tensor
    keys: list[ExampleKey] = field(default_factory=list)
    language: list[str] = field(default_factory=list)
    corpus: list[str] = field(default_factory=list)
    split: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    audio_size: list[int] = field(default_factory=list)
    """Samples at 16 kHz per example, as stored in the dataset."""
    plan_index: int = -1
    """Index of this batch in its epoch's plan (the same on every restart)."""
    filler: bool = False
    """True: every example of this planned batch was bad, and on several ranks another good
    batch's tensors (and keys) stand in for it, so that every rank yields its planned number
    of batches. Weight it out of the loss (e.g. multiply by 0) to keep the step collective."""
    plan_state: tuple[int, dict | None] | None = field(default=None, repr=False, compare=False)
    """(index, state): the latest saved plan state at or before this batch (for resume)."""
    host_lengths: tuple[list[int], list[int]] | None = field(
        default=None, repr=False, compare=False
    )
    """(source, target) lengths as host integers: reading the GPU tensors back would sync."""
    ready: object = field(default=None, repr=False, compare=False)
    """GPU path: the CUDA event after the batch's kernels, until the training thread's stream
    has been made to wait for it (``gpu_collate.hand_over``)."""

    @property
    def batch_size(self) -> int:
        return int(self.source_seqs.shape[0])

    @property
    def num_source_elements(self) -> int:
        """Real (unpadded) source steps: samples or frames."""
        return int(self.source_seq_lens.sum())

    @property
    def num_target_elements(self) -> int:
        return int(self.target_seq_lens.sum())

    @property
    def padding_efficiency(self) -> float:
        """Real source steps / (batch size × padded width)."""
        padded = self.batch_size * int(self.source_seqs.shape[1])
        return self.num_source_elements / padded if padded else 1.0

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Seq2SeqBatch:
        """A copy with every tensor on ``device`` (the metadata lists are shared)."""

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)

        return replace(
            self,
            source_seqs=move(self.source_seqs),
            source_seq_lens=move(self.source_seq_lens),
            source_padding_mask=move(self.source_padding_mask),
            target_seqs=move(self.target_seqs),
            target_seq_lens=move(self.target_seq_lens),
        )
