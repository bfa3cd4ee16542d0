"""The process's CUDA environment: which device a rank uses, how large a batch its memory
suggests (``max_num_elements: auto``), and the CUDA libraries that DALI opens by name.

Device: ``dali_asr.device_id`` when set; else torchrun's ``LOCAL_RANK`` modulo the GPUs this
process sees (a scheduler that gives each task one GPU through ``CUDA_VISIBLE_DEVICES`` shows
every rank a device 0, whatever its local rank); else the current device, which a
``torch.cuda.set_device`` call chose.

cuFFT: DALI's GPU spectrogram ``dlopen``s ``libcufft.so.<major>`` by name. The GPU extras
install NVIDIA's cuFFT wheel, whose library lies in ``site-packages/nvidia/.../lib``, where the
dynamic loader never looks; loading it once by its path, globally, makes the by-name open find
it (the loader matches an already loaded library by its soname).
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import torch

from dali_asr.errors import ConfigError

log = logging.getLogger(__name__)


def choose_device_index(
    configured: int | None, local_rank: str | None, count: int, current: int
) -> int:
    """The CUDA device index for this process (see the module's docstring). ``count`` is the
    number of visible GPUs (0 on a CPU machine, where the index is only recorded)."""
    if configured is not None:
        if count and not 0 <= configured < count:
            raise ConfigError(
                f"config key dali_asr.device_id: {configured}, but this process sees {count} "
                "CUDA device(s) (indices 0 .. count - 1, after CUDA_VISIBLE_DEVICES)"
            )
        return configured
    if local_rank is not None and local_rank.strip():
        rank = int(local_rank)
        return rank % count if count else rank
    return current if count else 0


def resolve_device(setting: str) -> str:
    """``dali_asr.device``: ``auto`` is the GPU when CUDA is available."""
    if setting == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if setting == "gpu" and not torch.cuda.is_available():
        raise ConfigError("config key dali_asr.device: 'gpu' asked for, but CUDA is not available")
    return setting


def device_index(configured: int | None) -> int:
    """:func:`choose_device_index` for this process."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    local_rank = os.environ.get("LOCAL_RANK")
    current = torch.cuda.current_device() if count and local_rank is None else 0
    return choose_device_index(configured, local_rank, count, current)


# ``max_num_elements: auto``
SAMPLES_PER_GB = 40_000
GB = 10**9
REFERENCE_DEFAULT = 3_200_000
"""Omnilingual's ``AsrTaskConfig.max_num_elements`` default, used where there is no GPU."""


def round_down(n: int, multiple: int) -> int:
    return max(multiple, n // multiple * multiple)


def cuda_device(device: torch.device | str | None) -> torch.device | None:
    """The CUDA device meant by ``device`` (None: the current one), or None for the CPU."""
    if not torch.cuda.is_available():
        return None
    device = torch.device("cuda") if device is None else torch.device(device)
    if device.type != "cuda":
        return None
    return torch.device(
        "cuda", torch.cuda.current_device() if device.index is None else device.index
    )


def auto_max_num_elements(
    max_audio_len: int,
    device: torch.device | None = None,
    samples_per_gb: int = SAMPLES_PER_GB,
) -> tuple[int, str]:
    """``max_num_elements: auto``: the value and a one-line explanation.

    On a CUDA device: ``samples_per_gb`` × the device's total memory in GB, rounded down to a
    multiple of ``max_audio_len`` (at least ``max_audio_len``). Without CUDA: Omnilingual's
    default 3,200,000, rounded the same way. Reading the device's properties initialises CUDA
    in this process.
    """
    if max_audio_len < 1:
        raise ValueError(f"max_audio_len must be >= 1, got {max_audio_len}")
    cuda = cuda_device(device)
    if cuda is None:
        value = round_down(REFERENCE_DEFAULT, max_audio_len)
        return value, (
            f"max_num_elements auto = {value}: no CUDA device, so Omnilingual's default "
            f"{REFERENCE_DEFAULT} rounded down to a multiple of max_audio_len {max_audio_len}"
        )
    props = torch.cuda.get_device_properties(cuda)
    gb = props.total_memory / GB
    raw = int(gb * samples_per_gb)
    value = round_down(raw, max_audio_len)
    return value, (
        f"max_num_elements auto = {value}: {samples_per_gb} samples/GB × {gb:.1f} GB "
        f"({props.name}, {cuda}) = {raw}, rounded down to a multiple of max_audio_len "
        f"{max_audio_len}"
    )


def resolve_auto_budget(task, device_setting: str, device_id: int | None) -> None:
    """Turn ``max_num_elements: auto`` into a number for this process's GPU (the CPU gets the
    reference's default); each rank resolves it on its own GPU, so use one GPU type."""
    if task.max_num_elements != "auto":
        return
    device = None
    if device_setting != "cpu" and torch.cuda.is_available():
        device = torch.device("cuda", device_index(device_id))
    value, why = auto_max_num_elements(task.max_audio_len, device)
    task.max_num_elements = value
    log.info("max_num_elements: auto -> %d (%s)", value, why)


def cufft_libraries(roots: Iterable[Path]) -> list[Path]:
    """cuFFT libraries (``libcufft.so.<major>``, not cufftw) under NVIDIA wheels' folders."""
    found = {
        path
        for root in roots
        for path in Path(root).glob("**/lib/libcufft.so.*")
        if path.name.count(".") == 2  # libcufft.so.12, not libcufft.so.12.0.1
    }
    return sorted(found)


@cache
def preload_cufft() -> list[str]:
    """Load every cuFFT of the installed NVIDIA wheels that the loader cannot already find by
    name; returns the paths loaded."""
    try:
        import nvidia
    except ImportError:
        return []
    loaded = []
    for path in cufft_libraries(Path(p) for p in nvidia.__path__):
        try:
            ctypes.CDLL(path.name)  # already on the loader's path (a toolkit, torch's own)
            continue
        except OSError:
            pass
        try:
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            loaded.append(str(path))
        except OSError as e:
            log.warning("could not load %s: %s", path, e)
    if loaded:
        log.debug("cuFFT loaded for DALI from %s", ", ".join(loaded))
    return loaded
