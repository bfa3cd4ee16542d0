"""Bit-exact stand-in for the PyTorch CPU generator that fairseq2's data operators use.

fairseq2's ``shuffle`` and ``DataPipeline.sample`` draw from ``at::CPUGeneratorImpl``: a standard
32-bit MT19937 seeded with ``init_genrand`` on the **low 32 bits** of the (uint64) seed.
``random()`` is one 32-bit output; ``random64()`` is ``(first << 32) | second``.

The generator itself is numpy's MT19937 (same algorithm, same tempering); only the seeding is done
here, with the public state setter, so that no private numpy API is needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.random  # numpy imports it lazily: 7 ms inside the first batch otherwise

__all__ = ["Mt19937"]

_MASK32 = 0xFFFFFFFF
_N = 624
# Draws are fetched from numpy in chunks: one numpy call per scalar draw would dominate the cost.
_CHUNK = 1024


def _init_genrand(seed: int) -> np.ndarray:
    """Return the MT19937 key that the reference ``init_genrand(seed)`` produces."""
    key = [0] * _N
    key[0] = seed & _MASK32
    for i in range(1, _N):
        prev = key[i - 1]
        key[i] = (1812433253 * (prev ^ (prev >> 30)) + i) & _MASK32
    return np.asarray(key, dtype=np.uint32)


def _np_state(key: np.ndarray, pos: int) -> dict[str, Any]:
    return {"bit_generator": "MT19937", "state": {"key": key, "pos": pos}}


class Mt19937:
    """32-bit Mersenne Twister matching ``std::mt19937`` / torch's ``CPUGeneratorImpl``.

    Args:
        seed: non-negative integer; only its low 32 bits are used, as in torch (so ``2**40 + 5``
            and ``5`` give the same stream).
    """

    def __init__(self, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"`seed` must be a non-negative integer, but is {seed}.")
        self._seed = int(seed) & _MASK32
        self._bg = np.random.MT19937(0)
        # pos = N forces a twist before the first output, exactly like a freshly seeded engine.
        self._bg.state = _np_state(_init_genrand(self._seed), _N)
        self._buf: list[int] = []
        self._idx = 0
        self._chunk_state: dict[str, Any] | None = None

    @property
    def seed(self) -> int:
        """The effective (32-bit) seed."""
        return self._seed

    def _sync(self) -> None:
        """Rewind the bit generator to the logical position and drop the read-ahead chunk."""
        if self._chunk_state is not None:
            self._bg.state = self._chunk_state
            if self._idx:
                self._bg.random_raw(self._idx)
        self._buf = []
        self._idx = 0
        self._chunk_state = None

    def next_u32(self) -> int:
        """Return the next 32-bit output (torch's ``random()``)."""
        if self._idx == len(self._buf):
            self._chunk_state = self._bg.state
            self._buf = self._bg.random_raw(_CHUNK).tolist()
            self._idx = 0
        value = self._buf[self._idx]
        self._idx += 1
        return value

    def next_u32_array(self, n: int) -> np.ndarray:
        """Return the next ``n`` 32-bit outputs as a ``uint32`` array (same stream as
        ``n`` calls of :meth:`next_u32`)."""
        if n < 0:
            raise ValueError(f"`n` must be non-negative, but is {n}.")
        self._sync()
        return self._bg.random_raw(n).astype(np.uint32)

    def random64(self) -> int:
        """Return torch's ``random64()``: two draws, the first in the high 32 bits."""
        high = self.next_u32()
        return (high << 32) | self.next_u32()

    def state_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable snapshot: the seed, the 624-word key and the position."""
        self._sync()
        state = self._bg.state["state"]
        return {
            "seed": self._seed,
            "key": [int(k) for k in state["key"]],
            "pos": int(state["pos"]),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a snapshot from :meth:`state_dict`; later draws continue that stream."""
        key = np.asarray(state["key"], dtype=np.int64)
        pos = int(state["pos"])
        if key.shape != (_N,) or int(key.min()) < 0 or int(key.max()) > _MASK32:
            raise ValueError(f"MT19937 state must hold {_N} 32-bit words in 'key'.")
        if not 0 <= pos <= _N:
            raise ValueError(f"MT19937 state 'pos' must be in [0, {_N}], but is {pos}.")
        self._buf = []
        self._idx = 0
        self._chunk_state = None
        self._bg.state = _np_state(key.astype(np.uint32), pos)
        self._seed = int(state["seed"]) & _MASK32
