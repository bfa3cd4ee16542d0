"""Choosing ``max_num_elements``: the ``auto`` rule of thumb, and a measured search.

The rule: about 40,000 padded samples per GB of GPU memory. Omnilingual-ASR's sources state no
such rule (``git grep -i "per gb\\|40_000\\|max_num_elements"`` finds only the default
``max_num_elements: int = 3_200_000`` in ``datasets/tasks/asr_task.py`` and recipe values of
320_000 to 7_680_000); it is the seed's rule, and it reproduces that default on an 80 GB card
(80 × 40,000 = 3,200,000), hence GB = 10⁹ bytes, as cards are labelled.

The search (``tune_max_num_elements``): every LENGTH bucket (b, len) has b × len ≤ N, so N alone
drives the memory a batch needs. For candidate N (multiples of max_audio_len, doubling, then
bisection) it builds the bucket table and runs forward and backward on its most memory-hungry
shapes, keeping the largest N where none runs out of memory, less a margin.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from dali_asr.batching import length_bucket_sizes
from dali_asr.pipeline.cuda_env import (
    auto_max_num_elements,
    cuda_device,
    round_down,
)
from dali_asr.pipeline.fbank import num_fbank_frames
from dali_asr.tools.standin_model import StandInEncoder

log = logging.getLogger(__name__)

SHORTEST_TRIAL_LEN = 16_000
"""Trials skip buckets shorter than 1 s: they hold as many samples as the others and would
starve conv front-ends of input (the stand-in needs 400 samples)."""
_OOM_MARKERS = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")


def trial_input(
    num_seqs: int, length: int, feature: str, dtype: torch.dtype, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch as the loader would give it: ``num_seqs`` examples of ``length`` samples (as a
    waveform, or as the Kaldi fbank frames of that many samples), no padding (the worst case)."""
    if feature == "fbank":
        shape: tuple[int, ...] = (num_seqs, max(1, num_fbank_frames(length)), 80)
    else:
        shape = (num_seqs, length)
    source = torch.randn(shape, device=device).to(dtype)
    return source, torch.zeros(shape[:2], dtype=torch.bool, device=device)


def forward_backward(
    model: nn.Module, source: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype
) -> float:
    """One training step's forward and backward (no optimizer step); returns the loss. Half
    precision runs under autocast, as fairseq2's dynamic mixed precision does."""
    half = dtype in (torch.bfloat16, torch.float16)
    with torch.autocast(source.device.type, dtype=dtype, enabled=half):
        out = model(source, mask)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model returned {type(out).__name__}, not a tensor (or a tuple)")
    # Any scalar drives the same backward graph; the loss head's own memory is negligible.
    loss = out.float().mean()
    loss.backward()
    return float(loss.detach())


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and any(m in str(error) for m in _OOM_MARKERS)
    )


def _free(device: torch.device) -> None:
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()


@dataclass
class Trial:
    """One candidate N: the shapes run (sequences, samples), each one's peak allocated bytes
    (the one that failed last, if any) and whether all fit."""

    max_num_elements: int
    shapes: list[tuple[int, int]]
    peaks: list[int]
    fits: bool
    error: str | None = None


def trial_shapes(buckets: list[tuple[int, int]], shortest: int) -> list[tuple[int, int]]:
    """The most memory-hungry bucket shapes: the longest bucket (its attention span is the
    longest), the fullest (largest b × len) and the widest (most sequences) of those at least
    ``shortest`` long. Longest first: it is the likeliest to fail."""
    usable = [b for b in buckets if b[1] >= shortest] or buckets[-1:]
    fullest = max(usable, key=lambda b: (b[0] * b[1], b[1]))
    return list(dict.fromkeys([usable[-1], fullest, usable[0]]))


def search_max_num_elements(
    fits: Callable[[int], bool], max_audio_len: int, upper: int, tolerance: float = 0.02
) -> int | None:
    """Largest N = k × max_audio_len with ``fits(k)``: k = 1, 2, 4, ... until a failure or
    ``upper``, then bisection until the bracket is within ``tolerance`` (relative) or one step.
    None when k = 1 does not fit. Assumes fitting is monotonic in k."""
    k_max = max(1, upper // max_audio_len)
    if not fits(1):
        return None
    lo, hi, k = 1, None, 2
    while hi is None and lo < k_max:
        k = min(k, k_max)
        if fits(k):
            lo, k = k, 2 * k
        else:
            hi = k
    while hi is not None and hi - lo > max(1, tolerance * lo):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo * max_audio_len


@dataclass
class TuneResult:
    """The ``max_num_elements`` to use and how it was found."""

    max_num_elements: int
    measured: bool
    explanation: str
    device: str
    max_audio_len: int
    margin: float
    largest_fitting: int | None = None
    trials: list[Trial] = field(default_factory=list)
    buckets: list[tuple[int, int]] = field(default_factory=list)

    @property
    def yaml_line(self) -> str:
        return f"max_num_elements: {self.max_num_elements}"

    def render(self) -> str:
        """The result table, as ``dali-asr tune-batch`` prints it."""
        lines = [f"device            {self.device}", f"measured          {self.measured}"]
        if self.trials:
            lines.append(f"{'trial':>5} {'N':>12} {'fits':>4}  sequences x samples: peak GiB")
            for i, t in enumerate(self.trials, start=1):
                ran = zip(t.shapes[: len(t.peaks)], t.peaks, strict=True)
                runs = [f"{b}x{n}: {p / 2**30:.2f}" for (b, n), p in ran]
                fits = "yes" if t.fits else "no"
                lines.append(f"{i:>5} {t.max_num_elements:>12} {fits:>4}  {', '.join(runs)}")
            lines.append(f"largest fitting   {self.largest_fitting or 'none'}")
            lines.append(f"margin            {self.margin:.0%}")
        if self.buckets:
            size, length = self.buckets[-1]
            lines.append(f"buckets           {len(self.buckets)} (longest {size} x {length})")
        lines.append(self.explanation)
        return "\n".join(lines)


def tune_max_num_elements(
    model: nn.Module | None = None,
    *,
    max_audio_len: int,
    num_seqs_multiple_of: int = 8,
    device: torch.device | str | None = None,
    feature: str = "waveform",
    dtype: torch.dtype = torch.float32,
    margin: float = 0.1,
    min_audio_len: int = 1,
    max_bucket_size: int | None = None,
    tolerance: float = 0.02,
    optimizer_bytes_per_param: int = 8,
) -> TuneResult:
    """Measure the largest ``max_num_elements`` whose buckets train without running out of
    memory, less ``margin``, rounded down to a multiple of ``max_audio_len``.

    ``model`` takes ``(source_seqs, source_padding_mask)`` (None: :class:`StandInEncoder`); it
    is moved to the device. ``optimizer_bytes_per_param`` bytes per trainable parameter stay
    allocated during the search for the optimizer's state (8: Adam's two fp32 moments). On a
    non-CUDA device nothing is measured: the ``auto`` rule's value comes back, ``measured`` False.
    """
    if feature not in ("waveform", "fbank"):
        raise ValueError(f"feature must be 'waveform' or 'fbank', got {feature!r}")
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be in [0, 1), got {margin}")

    def table(n: int) -> list[tuple[int, int]]:
        return length_bucket_sizes(
            min_audio_len=min(min_audio_len, max_audio_len),
            max_audio_len=max_audio_len,
            max_num_elements=n,
            num_seqs_multiple_of=num_seqs_multiple_of,
            max_bucket_size=max_bucket_size,
        )

    cuda = cuda_device(device)
    if cuda is None:
        value, why = auto_max_num_elements(max_audio_len, None)
        why += "; the rule is reported, not measured, without a CUDA device"
        return TuneResult(value, False, why, "cpu", max_audio_len, margin, buckets=table(value))

    model = (model if model is not None else StandInEncoder(feature)).to(cuda).train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    reserve = torch.empty(trainable * optimizer_bytes_per_param, dtype=torch.uint8, device=cuda)
    shortest = min(max(min_audio_len, SHORTEST_TRIAL_LEN), max_audio_len)
    trials: list[Trial] = []

    def fits(k: int) -> bool:
        n = k * max_audio_len
        trial = Trial(n, trial_shapes(table(n), shortest), [], True)
        for num_seqs, length in trial.shapes:
            torch.cuda.reset_peak_memory_stats(cuda)
            try:
                source, mask = trial_input(num_seqs, length, feature, dtype, cuda)
                forward_backward(model, source, mask, dtype)
                torch.cuda.synchronize(cuda)
            except RuntimeError as e:
                # Past the memory limit kernels may also fail for size (cuDNN's workspace or
                # index limits): beyond the first trial any runtime error means "does not fit".
                if not _is_oom(e) and k == 1:
                    raise
                what = "out of memory" if _is_oom(e) else f"{type(e).__name__}: {e}"[:120]
                if not _is_oom(e):
                    log.warning("N %d, %d x %d: %s", n, num_seqs, length, what)
                trial.fits, trial.error = False, f"{what} at {num_seqs} x {length}"
            # Outside the except block, so the traceback's frames no longer hold tensors.
            source = mask = None
            trial.peaks.append(torch.cuda.max_memory_allocated(cuda))
            model.zero_grad(set_to_none=True)
            _free(cuda)
            if not trial.fits:
                break
        trials.append(trial)
        log.info("N %d: %s", n, "fits" if trial.fits else trial.error)
        return trial.fits

    total = torch.cuda.get_device_properties(cuda).total_memory
    element = torch.empty((), dtype=dtype).element_size()
    try:
        largest = search_max_num_elements(fits, max_audio_len, total // element, tolerance)
    finally:
        del reserve
        _free(cuda)
    name = f"{cuda} ({torch.cuda.get_device_name(cuda)}, {total / 2**30:.1f} GiB)"
    if largest is None:
        why = f"one example of max_audio_len {max_audio_len} does not fit: lower max_audio_len"
        return TuneResult(max_audio_len, True, why, name, max_audio_len, margin, None, trials)
    value = round_down(int(largest * (1 - margin)), max_audio_len)
    why = (
        f"max_num_elements {value}: largest fitting {largest} less {margin:.0%}, rounded down "
        f"to a multiple of max_audio_len {max_audio_len} ({len(trials)} trials)"
    )
    return TuneResult(value, True, why, name, max_audio_len, margin, largest, trials, table(value))


def model_from_path(spec: str) -> nn.Module:
    """Call the zero-argument factory named ``module:callable`` (``callable`` may be dotted)."""
    import importlib

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--model wants module:callable, got {spec!r}")
    target: object = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    model = target() if callable(target) else target
    if not isinstance(model, nn.Module):
        raise ValueError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model
