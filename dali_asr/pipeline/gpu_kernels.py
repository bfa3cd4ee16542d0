"""The CUDA kernels of ``kernels/`` on the device: their sources (package data), compiled
once per process and device by CuPy (NVRTC), and their launchers. Each launcher takes device
arrays, or host arrays that it finds in the batch's :class:`ArgBlock` or copies itself, and
launches on CuPy's current stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dali_asr.pipeline.fbank import LOG_FLOOR, NUM_MEL_BINS, mel_bands, mel_matrix

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

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


def kernel_files() -> Traversable:
    """The CUDA sources: package data ``dali_asr.kernels`` (the top-level ``kernels/`` folder,
    mapped into the package by pyproject.toml), or in a source checkout used without an install
    (``PYTHONPATH``) that checkout's ``kernels/``."""
    try:
        return resources.files("dali_asr.kernels")
    except ModuleNotFoundError:
        root = Path(__file__).resolve().parents[2]  # the checkout: dali_asr/pipeline/ up
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

    @contextlib.contextmanager
    def staging(self, device: torch.device, *arrays: np.ndarray) -> Iterator[ArgBlock]:
        """Send ``arrays`` in one block; launchers inside the block find them there."""
        self.staged = ArgBlock(*arrays).send(device)
        try:
            yield self.staged
        finally:
            self.staged = None

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
