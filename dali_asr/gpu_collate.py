"""The GPU path after DALI: the CuPy kernels of ``kernels/`` turn DALI's ragged GPU outputs
into a ``Seq2SeqBatch`` of torch tensors, with no copy on the way to torch.

Streams and lifetimes, which is what makes this safe:

- DALI runs with ``pipe.run(stream)`` on this maker's side stream, so its outputs are ordered
  on that stream; every kernel, cuFFT and cuBLAS call below is launched on the same stream
  (CuPy's current stream wraps it), so no kernel reads an output before DALI has written
  it. The lengths go to the device from pinned memory on that stream too: the one host sync
  of a batch is the NaN/inf check in :meth:`GpuBatchMaker.decoded`.
- The outputs are written into tensors torch allocated on that stream; CuPy sees them through
  DLPack (the same memory: ``gpu_check.py`` checks the pointers). After the last launch of a
  batch an event is recorded; the training thread makes its own stream wait for that event
  and ``record_stream``s the tensors (:func:`hand_over`), so torch does not reuse their memory
  before the training step that reads them has run.
- DALI's output buffers (and CuPy's scratch buffers) are kept referenced, with that event,
  until the event has completed (``_KeepAlive``): DALI cannot recycle an output the kernels
  have not read yet.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from functools import cache
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dali_asr.batch import Seq2SeqBatch
from dali_asr.collate import TORCH_DTYPES, BatchMaker, Decoded, Normalization, padded_width
from dali_asr.fbank import LOG_FLOOR, NUM_MEL_BINS, frame_offsets, mel_bands, mel_matrix
from dali_asr.storage.examples import Example

KERNEL_FUNCTIONS = {
    "segment_stats": ("segment_stats",),
    "collate_audio": ("collate_audio_f32", "collate_audio_f16", "collate_audio_bf16"),
    "collate_targets": ("collate_targets",),
    "log_mel": ("log_mel",),
    "spec_augment": ("spec_augment_32", "spec_augment_16"),
}
_DTYPE_SUFFIX = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
_BLOCK = 256
_MAX_BLOCKS = 1024
_KEEP_ALIVE = 64


def kernel_files() -> Traversable:
    """The CUDA sources: package data ``dali_asr.kernels`` (the top-level ``kernels/`` folder,
    mapped into the package by pyproject.toml), or in a source checkout used without an install
    (``PYTHONPATH``) that checkout's ``kernels/``."""
    try:
        return resources.files("dali_asr.kernels")
    except ModuleNotFoundError:
        root = Path(__file__).resolve().parents[1]
        project = root / "pyproject.toml"
        if project.is_file() and 'name = "dali-asr"' in project.read_text(encoding="utf-8"):
            return root / "kernels"
        raise


def kernel_source(name: str) -> str:
    source = kernel_files().joinpath(f"{name}.cu")
    if not source.is_file():
        raise FileNotFoundError(f"kernel source {name}.cu is missing from {kernel_files()}")
    return source.read_text(encoding="utf-8")


class Kernels:
    """Every kernel of ``kernels/``, compiled once per process and device by CuPy (NVRTC)."""

    def __init__(self) -> None:
        import cupy

        self.functions: dict[str, Any] = {}
        for file, names in KERNEL_FUNCTIONS.items():
            module = cupy.RawModule(code=kernel_source(file), options=("-std=c++17",))
            for name in names:
                self.functions[name] = module.get_function(name)

    def __getitem__(self, name: str) -> Any:
        return self.functions[name]


def _grid(cells: int, rows: int) -> tuple[int, int]:
    return (max(1, min(_MAX_BLOCKS, -(-cells // _BLOCK))), rows)


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


@cache
def _compiled(device_id: int) -> Kernels:
    return Kernels()


def pack_layout(arrays: Sequence[np.ndarray]) -> tuple[list[int], int]:
    """Where each array starts in one byte buffer (8-byte aligned), and the buffer's size."""
    starts, size = [], 0
    for a in arrays:
        starts.append(size)
        size += -(-a.nbytes // 8) * 8
    return starts, max(size, 8)


def pack_into(buffer: np.ndarray, arrays: Sequence[np.ndarray], starts: Sequence[int]) -> None:
    for a, start in zip(arrays, starts, strict=True):
        buffer[start : start + a.nbytes] = np.ascontiguousarray(a).view(np.uint8).ravel()


class ArgBlock:
    """The small host arrays a batch's launches read (pointers, lengths, offsets, tokens,
    masks), packed into one pinned buffer and sent to the device in one copy on the current
    stream: one copy per array costs more than the kernels do. Launchers find their arguments
    here by the host array's identity (:meth:`GpuKernels.device`)."""

    def __init__(self, *arrays: np.ndarray) -> None:
        self.arrays = arrays
        self.views: dict[int, Any] = {}
        self._starts: dict[int, int] = {}
        self.buffer: torch.Tensor | None = None

    def send(self, device: torch.device) -> ArgBlock:

        starts, size = pack_layout(self.arrays)
        host = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        pack_into(host.numpy(), self.arrays, starts)
        self.buffer = host.to(device, non_blocking=True)
        base = as_cupy(self.buffer)
        for a, start in zip(self.arrays, starts, strict=True):
            view = base[start : start + a.nbytes].view(a.dtype).reshape(a.shape)
            self.views[id(a)] = view
            self._starts[id(a)] = int(start)
        return self

    def tensor(self, host: np.ndarray) -> torch.Tensor:
        """The device copy of an int64 ``host`` array as a torch tensor (a view of the block)."""
        assert self.buffer is not None and host.dtype == np.int64
        start = self._starts[id(host)]
        return self.buffer[start : start + host.nbytes].view(torch.int64).view(host.shape)


class GpuKernels:
    """Launchers: each takes and returns device arrays, launched on CuPy's current stream."""

    def __init__(self) -> None:
        import cupy

        self.k = _compiled(cupy.cuda.Device().id)
        self._mel: tuple | None = None
        self.staged: ArgBlock | None = None
        """The batch's arguments already sent to the device; others are copied one by one."""

    def device(self, host: np.ndarray):
        """``host`` on the device: its view in the staged block, else a copy of its own."""
        import cupy

        view = self.staged.views.get(id(host)) if self.staged is not None else None
        return view if view is not None else cupy.asarray(host)

    def segment_stats(self, ptrs, lengths, channels: int):
        import cupy

        out = cupy.zeros((len(lengths), channels, 3), dtype=cupy.float64)
        if len(lengths) == 0:
            return out
        block = channels * max(1, _BLOCK // channels)
        cells = int(max(lengths, default=0)) * channels
        grid = (max(1, min(_MAX_BLOCKS, -(-cells // block))), len(lengths))
        args = (self.device(ptrs), self.device(lengths), np.int32(channels), out)
        self.k["segment_stats"](grid, (block,), args, shared_mem=3 * block * 8)
        return out

    def collate_audio(self, ptrs, lengths, channels, width, stats, norm, dtype, out, mask):
        self.launch(self.collate_audio_call(ptrs, lengths, channels, width, stats, norm, dtype,
                                            out, mask))  # fmt: skip

    def collate_audio_call(self, ptrs, lengths, channels, width, stats, norm, dtype, out, mask):
        """(kernel, grid, block, args) of one collation, its arguments already on the device,
        so that a benchmark can launch it again without copying them."""

        null = np.uint64(0)
        rows_per_block = _BLOCK // channels  # the kernel's blocks step over rows, not cells
        grid = (max(1, min(_MAX_BLOCKS, -(-width // rows_per_block))), len(lengths))
        args = (
            self.device(ptrs),
            self.device(lengths),
            np.int32(channels),
            np.int64(width),
            null if stats is None else stats,
            np.int32(norm.ddof if norm else 0),
            np.float32(norm.eps if norm else 0.0),
            out,
            mask,
        )
        return self.k[f"collate_audio_{_DTYPE_SUFFIX[dtype]}"], grid, (_BLOCK,), args

    @staticmethod
    def launch(call) -> None:
        kernel, grid, block, args = call
        kernel(grid, block, args)

    def collate_targets(self, flat: np.ndarray, offsets: np.ndarray, pad_idx: int, out) -> None:
        """``flat`` and ``offsets`` from :func:`flatten_tokens`."""
        width = out.shape[1]
        args = (self.device(flat), self.device(offsets), np.int64(width), np.int64(pad_idx), out)
        self.k["collate_targets"](_grid(width, len(offsets) - 1), (_BLOCK,), args)

    def log_mel(self, ptrs, offsets: np.ndarray, out=None):
        """float32 [total frames, 80] from the utterances' power spectra at ``ptrs`` (into
        ``out`` when given)."""
        import cupy

        total = int(offsets[-1])
        if out is None:
            out = cupy.empty((total, NUM_MEL_BINS), dtype=cupy.float32)
        if total == 0:  # a grid of no blocks is an invalid launch
            return out
        if self._mel is None:
            self._mel = (cupy.asarray(mel_matrix()), cupy.asarray(mel_bands()))
        weights, bands = self._mel
        args = (
            self.device(ptrs),
            self.device(offsets),
            np.int32(len(offsets) - 1),
            weights,
            bands,
            np.float32(LOG_FLOOR),
            out,
        )
        self.k["log_mel"]((total,), (128,), args)
        return out

    def spec_augment(self, data, freq: np.ndarray, time: np.ndarray) -> None:
        batch, width, channels = data.shape
        name = "spec_augment_32" if data.dtype.itemsize == 4 else "spec_augment_16"
        args = (
            data,
            np.int64(width),
            np.int32(channels),
            self.device(freq),
            np.int32(freq.shape[1]),
            self.device(time),
            np.int32(time.shape[1]),
        )
        self.k[name](_grid(width * channels, batch), (_BLOCK,), args)


def flatten_tokens(tokens: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The token lists back to back (int64) and where each starts (int64 [B + 1])."""
    offsets = np.concatenate(([0], np.cumsum([len(t) for t in tokens]))).astype(np.int64)
    flat = np.concatenate([np.asarray(t, np.int64) for t in tokens] or [np.zeros(0, np.int64)])
    return flat, offsets


class _SameStream:
    """A torch tensor's DLPack export to a consumer on the producer's own stream: ``stream=-1``
    tells torch to skip its handshake (a stream object, an event recorded, a wait), which cost
    ~0.15 ms per export on the lent H200, five exports a batch. Every kernel and copy of a
    batch runs on the maker's stream, so there is nothing to order."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def __dlpack__(self, **kwargs: Any) -> object:
        kwargs["stream"] = -1
        return self.tensor.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple:
        return self.tensor.__dlpack_device__()


def as_cupy(tensor: torch.Tensor):
    """The tensor's memory as a CuPy array, by DLPack (no copy; 16-bit floats as int16: CuPy
    has no bfloat16). For tensors the current stream writes and reads (see _SameStream)."""
    import cupy

    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.view(torch.int16)
    return cupy.from_dlpack(_SameStream(tensor))


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
            self.kernels.staged = ArgBlock(ptrs, numel).send(self.device)
            # over each output as one channel: the NaN/inf check, and the waveform's layer norm
            stats = self.kernels.segment_stats(ptrs, numel, 1)
            self.kernels.staged = None
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
            block = ArgBlock(*staged, lengths, flat, token_offsets, both_lengths, *masks)
            self.kernels.staged = block.send(self.device)
            try:
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
            finally:
                self.kernels.staged = None
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
