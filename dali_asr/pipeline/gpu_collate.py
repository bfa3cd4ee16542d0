"""The GPU path after DALI: the CuPy kernels of ``kernels/`` turn DALI's ragged GPU outputs
into a ``Seq2SeqBatch`` of torch tensors, with no copy on the way to torch.

Streams and lifetimes, which is what makes this safe:

- DALI runs with ``pipe.run(stream)`` on this maker's side stream, so its outputs are ordered
  on that stream; every kernel, cuFFT and cuBLAS call below is launched on the same stream
  (CuPy's current stream wraps it), so no kernel reads an output before DALI has written
  it. The lengths go to the device from pinned memory on that stream too: the one host sync
  of a batch is the NaN/inf check in :meth:`GpuBatchMaker.decoded`.
- The outputs are written into tensors torch allocated on that stream; CuPy sees them through
  DLPack (the same memory: ``benchmarks/gpu_tier1.py`` checks the pointers). After the last
  launch of a batch an event is recorded; the training thread makes its own stream wait for
  that event and ``record_stream``s the tensors (:func:`hand_over`), so torch does not reuse
  their memory before the training step that reads them has run.
- DALI's output buffers (and CuPy's scratch buffers) are kept referenced, with that event,
  until the event has completed (``_KeepAlive``): DALI cannot recycle an output the kernels
  have not read yet.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch

from dali_asr.batch import Seq2SeqBatch
from dali_asr.pipeline.collate import TORCH_DTYPES, BatchMaker, Decoded, Normalization, padded_width
from dali_asr.pipeline.fbank import NUM_MEL_BINS, frame_offsets
from dali_asr.pipeline.gpu_kernels import GpuKernels, as_cupy, flatten_tokens
from dali_asr.storage.examples import Example

_KEEP_ALIVE = 64


class _KeepAlive:
    """Objects the GPU may still read, each released once its event has completed."""

    def __init__(self) -> None:
        self._items: deque[tuple[torch.cuda.Event, object]] = deque()

    def add(self, event: torch.cuda.Event, refs: object) -> None:
        while self._items and self._items[0][0].query():
            self._items.popleft()
        if len(self._items) >= _KEEP_ALIVE:
            event_, _ = self._items.popleft()
            event_.synchronize()
        self._items.append((event, refs))


def hand_over(batch: Seq2SeqBatch) -> None:
    """In the training thread: order its current stream after the batch's kernels and tell
    torch's allocator that stream uses the batch's tensors."""
    event = batch.ready
    if event is None:
        return
    stream = torch.cuda.current_stream(batch.source_seqs.device)
    stream.wait_event(event)
    for t in (
        batch.source_seqs,
        batch.source_seq_lens,
        batch.source_padding_mask,
        batch.target_seqs,
        batch.target_seq_lens,
    ):
        t.record_stream(stream)
    batch.ready = None


def cupy_stream(stream: torch.cuda.Stream):
    """A CuPy stream over torch's (CuPy 14's ``Stream.from_external``; ``ExternalStream``,
    deprecated there, before it). Call with the stream's device current."""
    import cupy

    if hasattr(cupy.cuda.Stream, "from_external"):
        return cupy.cuda.Stream.from_external(stream)
    return cupy.cuda.ExternalStream(stream.cuda_stream, stream.device.index)


class GpuBatchMaker(BatchMaker):
    """``BatchMaker`` with the kernels: DALI's GPU outputs in, a GPU ``Seq2SeqBatch`` out."""

    def __init__(self, *args: Any, device_id: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        import cupy

        self.device = torch.device("cuda", device_id)
        self.stream = torch.cuda.Stream(self.device)
        self._cupy_device = cupy.cuda.Device(device_id)
        with self._cupy_device:
            self._cupy_stream = cupy_stream(self.stream)
            self.kernels = GpuKernels()
        self._alive = _KeepAlive()

    def run(self, pipe) -> tuple:
        """One DALI iteration, its outputs ordered on this maker's stream (no host sync)."""
        return pipe.run(self.stream)

    def decoded(self, outputs, rows: range) -> Decoded:
        features, audio_lengths = outputs
        lengths = np.array([int(np.asarray(audio_lengths[i])[0]) for i in rows], dtype=np.int64)
        shapes = [features[i].shape() for i in rows]  # host metadata: no sync
        frames = np.array([s[0] for s in shapes], dtype=np.int64)
        numel = np.array([int(np.prod(s)) for s in shapes], dtype=np.int64)
        ptrs = np.array([features[i].data_ptr() for i in rows], dtype=np.uint64)
        with self._cupy_device, self._cupy_stream, torch.cuda.stream(self.stream):
            with self.kernels.staging(self.device, ptrs, numel):
                # over each output as one channel: the NaN/inf check, the waveform's layer norm
                stats = self.kernels.segment_stats(ptrs, numel, 1)
            # the one host sync of a batch: which files hold NaN/inf decides what is kept
            nonfinite = stats[:, 0, 2].get(stream=self._cupy_stream)
        return Decoded(lengths, nonfinite.astype(np.int64), (ptrs, frames, stats, outputs))

    def make(
        self, examples: list[Example], decoded: Decoded, keep: list[int], plan_index: int = 0
    ) -> Seq2SeqBatch:
        import cupy

        ptrs, rows, audio_stats, outputs = decoded.payload
        keep_at = np.asarray(keep, dtype=np.int64)
        ptrs, lengths = ptrs[keep_at], rows[keep_at]
        flat, token_offsets = flatten_tokens([ex.tokens for ex in examples])
        # source and target lengths, one [2, B] block: the batch's two length tensors
        both_lengths = np.stack([lengths, np.diff(token_offsets)])
        masks = self._spec_masks(examples, plan_index, lengths)
        with self._cupy_device, self._cupy_stream, torch.cuda.stream(self.stream):
            if self.use_fbank:
                offsets = frame_offsets(lengths.tolist())
                mel = cupy.empty((int(offsets[-1]), NUM_MEL_BINS), dtype=cupy.float32)
                mel_ptrs = (mel.data.ptr + offsets[:-1] * NUM_MEL_BINS * 4).astype(np.uint64)
                staged: tuple[np.ndarray, ...] = (ptrs, offsets, mel_ptrs)
            else:
                staged = (ptrs, keep_at)
            arrays = (*staged, lengths, flat, token_offsets, both_lengths, *masks)
            with self.kernels.staging(self.device, *arrays) as block:
                if self.use_fbank:
                    self.kernels.log_mel(ptrs, offsets, out=mel)
                    stats = self.kernels.segment_stats(mel_ptrs, lengths, NUM_MEL_BINS)
                    source, mask = self._collate(mel_ptrs, lengths, NUM_MEL_BINS, stats)
                else:
                    stats = audio_stats[self.kernels.device(keep_at)] if self.norm else None
                    source, mask = self._collate(ptrs, lengths, 1, stats)
                if masks:
                    self.kernels.spec_augment(as_cupy(source), *masks)
                targets = self._targets(flat, token_offsets)
            device_lengths = block.tensor(both_lengths)
            batch = self.batch(
                examples, source, mask, targets, (device_lengths[0], device_lengths[1]),
                lengths.tolist(),
            )  # fmt: skip
            event = self.stream.record_event()
        self._alive.add(event, [outputs, block, mel if self.use_fbank else None])
        batch.ready = event
        return batch

    def _spec_masks(self, examples, plan_index: int, frames: np.ndarray) -> tuple:
        """SpecAugment's (freq, time) masks of the batch, or () when it is off."""
        if not (self.use_fbank and self.augmenter is not None and self.augmenter.masks_spectrum):
            return ()
        keys = [self.key(ex) for ex in examples]
        return self.augmenter.masks(keys, plan_index, frames.tolist())

    def _targets(self, flat: np.ndarray, offsets: np.ndarray) -> torch.Tensor:
        width = int(np.diff(offsets).max(initial=0))
        targets = torch.empty((len(offsets) - 1, width), dtype=torch.int64, device=self.device)
        if targets.numel():
            self.kernels.collate_targets(flat, offsets, self.pad_idx, as_cupy(targets))
        return targets

    def _collate(self, ptrs, lengths, channels: int, stats) -> tuple[torch.Tensor, torch.Tensor]:
        width = padded_width(lengths.tolist(), self.pad_to_multiple)
        shape = (len(lengths), width) + ((channels,) if channels > 1 else ())
        source = torch.empty(shape, dtype=TORCH_DTYPES[self.dtype], device=self.device)
        mask = torch.empty((len(lengths), width), dtype=torch.bool, device=self.device)
        if source.numel():
            norm: Normalization | None = self.norm
            self.kernels.collate_audio(
                ptrs, lengths, channels, width, stats, norm, self.dtype,
                as_cupy(source), as_cupy(mask),
            )  # fmt: skip
        return source, mask
