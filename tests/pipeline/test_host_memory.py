"""``dali_asr.malloc_*``, ``host_buffer_shrink_threshold`` and ``host_pool_threshold``: the
first loader of a process sets glibc's arena cap and its two thresholds, so that the threads
which allocate decoded audio (DALI's) and those that free it (the loader's) share their free
memory and a heap's top is not handed back and faulted in again every iteration; DALI's shrink
threshold, so that its host buffers are not freed and taken again as iterations' sizes vary;
and DALI's pool threshold, so that each iteration's decoded audio comes from DALI's pool, not
from glibc's heaps. Each case runs in a fresh process (glibc fixes its arena limit once per
process, DALI reads its pool threshold once) on espeak-mini, and asks glibc and DALI what
they did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dali_asr.config import config_from_dict
from dali_asr.errors import ConfigError
from dali_asr.pipeline.host_memory import DALI_POOL_ENV, DALI_SHRINK_ENV, KNOBS

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
UNTUNED = {k.setting: None for k in KNOBS} | {
    "host_buffer_shrink_threshold": None,
    "host_pool_threshold": None,
}
BLOCK = 24 << 20
"""Above glibc's first mapping threshold (128 KiB), below the loader's (32 MiB)."""

SCRIPT = """
import ctypes, json, os, sys
from pathlib import Path
sys.path.insert(0, {benchmarks!r})
from nvidia.dali import backend
from soak import libc_mallinfo2, malloc_heaps, train_config
from dali_asr.loader import AsrLoader
from dali_asr.pipeline import host_memory

data = Path({data!r})
dali_default = backend.GetHostBufferShrinkThreshold()
loader = AsrLoader(data, "train", train_config(data, False, {dali!r}), {tokenizer!r})
out = {{"set": host_memory._set, "dali_default": dali_default,
        "shrink": backend.GetHostBufferShrinkThreshold(),
        "pool": os.environ.get({pool_env!r})}}
if {batches}:
    out["batches"] = sum(1 for _, _ in zip(range({batches}), loader))
    out["arenas"] = sum(1 for key in malloc_heaps() if not key.endswith("_free"))
    after = libc_mallinfo2()()
    out["mapped_bytes"], out["heap_free"] = after.hblkhd, after.fordblks
else:  # one block on the main thread: mapped of its own, or from the heap and kept after
    libc, mallinfo = ctypes.CDLL(None), libc_mallinfo2()
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    before = mallinfo()
    block = libc.malloc({block})
    ctypes.memset(block, 1, {block})
    out["mapped"] = mallinfo().hblks - before.hblks
    libc.free(block)
    out["kept"] = mallinfo().arena - before.arena
loader.close()
print(json.dumps(out))
"""


def run_loader(espeak: tuple[Path, Path], dali: dict, env=None, batches: int = 0) -> dict:
    """Make a loader in a fresh process (and draw ``batches`` of its training stream); what
    it set, and what glibc then did."""
    data, tokenizer = espeak
    script = SCRIPT.format(
        benchmarks=str(BENCHMARKS),
        data=str(data),
        dali=dali,
        tokenizer=str(tokenizer),
        batches=batches,
        block=BLOCK,
        pool_env=DALI_POOL_ENV,
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environ.pop("GLIBC_TUNABLES", None)
    environ.pop(DALI_SHRINK_ENV, None)
    environ.pop(DALI_POOL_ENV, None)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=environ | (env or {}),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out.get("batches", batches) == batches
    return out


@pytest.fixture(scope="module")
def espeak(espeak_root: Path, espeak_tokenizer: Path) -> tuple[Path, Path]:
    return espeak_root, espeak_tokenizer


@pytest.fixture(scope="module")
def untuned_arenas(espeak) -> int:
    out = run_loader(espeak, UNTUNED, batches=60)
    assert out["set"] == {}
    return out["arenas"]


def test_untuned_stream_spreads_over_many_arenas(untuned_arenas: int) -> None:
    """What the cap is for: left alone, glibc gives the stream's threads arenas of their own
    (the soak saw 14)."""
    assert untuned_arenas > 2


def test_default_caps_the_stream_at_two_arenas(espeak, untuned_arenas: int) -> None:
    out = run_loader(espeak, {}, batches=60)
    assert out["set"] == {
        "malloc_arena_max": 2,
        "malloc_trim_threshold": 128 << 20,
        "malloc_mmap_threshold": 32 << 20,
        "host_buffer_shrink_threshold": 0.0,
        "host_pool_threshold": 1 << 20,
    }
    assert out["arenas"] <= 2 < untuned_arenas
    assert out["shrink"] == 0.0 < out["dali_default"]
    assert out["pool"] is None  # DALI has read it; the process's children do not inherit it


def test_decoded_audio_comes_from_dalis_pool_not_glibcs_heaps(espeak) -> None:
    """What the pool threshold is for: with it, DALI's pool takes its blocks from glibc as
    mappings of their own (32 MiB and up, grown by doubling) and keeps them; without it, each
    iteration's decoded audio (under 32 MiB) is a block of glibc's heaps, which keep more free
    memory around them."""
    pooled = run_loader(espeak, {}, batches=60)
    unpooled = run_loader(espeak, {"host_pool_threshold": None}, batches=60)
    assert unpooled["pool"] is None and "host_pool_threshold" not in unpooled["set"]
    assert pooled["mapped_bytes"] >= 32 << 20 > unpooled["mapped_bytes"]
    assert pooled["heap_free"] < unpooled["heap_free"]


def test_dali_pool_threshold_from_the_environment_wins(espeak) -> None:
    out = run_loader(espeak, {"host_pool_threshold": 4096}, {DALI_POOL_ENV: "2M"})
    assert "host_pool_threshold" not in out["set"]
    assert out["pool"] == "2M"


def test_dali_shrink_threshold_null_leaves_dalis_own(espeak) -> None:
    out = run_loader(espeak, {"host_buffer_shrink_threshold": None})
    assert "host_buffer_shrink_threshold" not in out["set"]
    assert out["shrink"] == out["dali_default"] > 0.0


def test_dali_shrink_threshold_from_the_environment_wins(espeak) -> None:
    out = run_loader(espeak, {"host_buffer_shrink_threshold": 0.25}, {DALI_SHRINK_ENV: "0.75"})
    assert "host_buffer_shrink_threshold" not in out["set"]
    assert out["set"]["malloc_arena_max"] == 2
    assert out["shrink"] == 0.75


def test_the_environment_wins(espeak, untuned_arenas: int) -> None:
    """A knob given to the process (here MALLOC_ARENA_MAX) stands; the others are set."""
    chosen = min(untuned_arenas, 4)
    out = run_loader(espeak, {"malloc_arena_max": 1}, {"MALLOC_ARENA_MAX": str(chosen)}, 60)
    assert "malloc_arena_max" not in out["set"]
    assert out["set"]["malloc_mmap_threshold"] == 32 << 20
    assert 1 < out["arenas"] <= chosen


def test_a_batch_sized_block_comes_from_the_heap_and_stays(espeak) -> None:
    out = run_loader(espeak, {})
    assert out["mapped"] == 0
    assert out["kept"] >= BLOCK


def test_glibc_alone_maps_such_a_block(espeak) -> None:
    """Without the mapping threshold glibc gives the block a mapping of its own, which is
    faulted in afresh every time (17 % less throughput in a soak)."""
    assert run_loader(espeak, UNTUNED)["mapped"] == 1


def test_without_the_trim_threshold_the_heap_top_is_handed_back(espeak) -> None:
    out = run_loader(espeak, {"malloc_trim_threshold": None})
    assert out["mapped"] == 0
    assert out["kept"] < BLOCK


def test_settings_defaults_and_validation() -> None:
    d = config_from_dict({}).dali_asr
    assert (d.malloc_arena_max, d.malloc_trim_threshold, d.malloc_mmap_threshold) == (
        2,
        128 << 20,
        32 << 20,
    )
    off = config_from_dict({"dali_asr": UNTUNED}).dali_asr
    assert off.malloc_arena_max is off.malloc_trim_threshold is None
    for knob in KNOBS:
        with pytest.raises(ConfigError, match=rf"dali_asr\.{knob.setting}"):
            config_from_dict({"dali_asr": {knob.setting: 0}}).validate()
    assert d.host_buffer_shrink_threshold == 0.0
    for bad in (-0.1, 1.5, "half"):
        with pytest.raises(ConfigError, match=r"dali_asr\.host_buffer_shrink_threshold"):
            config_from_dict({"dali_asr": {"host_buffer_shrink_threshold": bad}}).validate()
    assert d.host_pool_threshold == 1 << 20
    assert config_from_dict({"dali_asr": {"host_pool_threshold": 0}}).validate() is None
    for bad in (-1, 1.5, "1M", True):
        with pytest.raises(ConfigError, match=r"dali_asr\.host_pool_threshold"):
            config_from_dict({"dali_asr": {"host_pool_threshold": bad}}).validate()
