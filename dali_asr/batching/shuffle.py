"""fairseq2's ``DataPipelineBuilder.shuffle(window, seed)``, as the block shuffle it really is.

fairseq2 fills a buffer of ``window`` items, Fisher-Yates-permutes it when its cursor wraps to slot
0, and refills each slot as it is emitted. The output is therefore: consecutive, non-overlapping
blocks of ``window`` inputs (the last one shorter), each emitted in a random order; no item leaves
its block. ``window == 1`` is a pass-through that never touches the RNG; ``window == 0`` makes the
whole input one block.

Randomness (bit-exact): torch's CPU generator seeded with the low 32 bits of ``seed``
(:class:`~dali_asr.batching.rng.Mt19937`); for ``s = n`` down to 2, ``idx = random64() % s`` and
slots ``s - 1`` and ``idx`` are swapped unless equal. Blocks of 0 or 1 items draw nothing. The RNG
carries on across :meth:`BlockShuffler.flush` like fairseq2's ``reset(reset_rng=False)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

import numpy as np

from dali_asr.batching.rng import Mt19937

__all__ = ["BlockShuffler", "block_shuffle"]

T = TypeVar("T")

# Above this block size the draws are taken in one numpy call; below it the per-call overhead of
# re-synchronising the generator is larger than drawing scalars.
_VECTOR_DRAWS_MIN = 64


class BlockShuffler(Generic[T]):
    """Push-style block shuffler, bit-identical to fairseq2's ``shuffle(window, seed)``.

    Args:
        window: block size; 1 = pass-through, 0 = unbounded (one block, emitted on :meth:`flush`).
        seed: generator seed (low 32 bits used).
    """

    def __init__(self, window: int, seed: int) -> None:
        if window < 0:
            raise ValueError(f"`window` must be non-negative, but is {window}.")
        self.window = window
        self._rng = Mt19937(seed)
        self._block: list[T] = []

    @property
    def num_waiting(self) -> int:
        """Items pushed but not yet emitted (the current, incomplete block)."""
        return len(self._block)

    def push(self, item: T) -> list[T]:
        """Add one item; return what is emitted now.

        That is ``[item]`` for window 1, the permuted block when this item completes it, else
        ``[]``.
        """
        if self.window == 1:
            return [item]
        self._block.append(item)
        if len(self._block) == self.window:
            return self._emit()
        return []

    def flush(self) -> list[T]:
        """End of input: permute and return the partial last block (may be empty)."""
        return self._emit()

    def _emit(self) -> list[T]:
        block, self._block = self._block, []
        self._permute(block)
        return block

    def _permute(self, block: list[T]) -> None:
        n = len(block)
        if n < 2:
            return
        if n < _VECTOR_DRAWS_MIN:
            for s in range(n, 1, -1):
                idx = self._rng.random64() % s
                if idx != s - 1:
                    block[s - 1], block[idx] = block[idx], block[s - 1]
            return
        raw = self._rng.next_u32_array(2 * (n - 1)).astype(np.uint64)
        r64 = (raw[0::2] << np.uint64(32)) | raw[1::2]
        indices = (r64 % np.arange(n, 1, -1, dtype=np.uint64)).tolist()
        for s, idx in zip(range(n, 1, -1), indices, strict=True):
            if idx != s - 1:
                block[s - 1], block[idx] = block[idx], block[s - 1]

    def state_dict(self) -> dict[str, Any]:
        """Return a small, JSON-serialisable state: window, RNG state and the waiting count.

        The waiting items themselves are **not** included: the caller records their keys (e.g.
        row indices) and, after :meth:`load_state_dict`, pushes those ``num_waiting`` items again
        in their original order; the output then continues exactly as without the interruption
        (pushes draw no randomness until a block completes). A caller that does not re-push them
        loses them, which is what fairseq2 does with ``strict=False``.
        """
        return {
            "window": self.window,
            "rng": self._rng.state_dict(),
            "num_waiting": len(self._block),
        }

    def waiting(self) -> list[T]:
        """The items of the incomplete block, in arrival order (for resume state)."""
        return list(self._block)

    def restore_waiting(self, items: list[T]) -> None:
        """Put back :meth:`waiting` items after :meth:`load_state_dict` (no RNG use)."""
        self._block = list(items)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the waiting block starts empty (see there)."""
        if int(state["window"]) != self.window:
            raise ValueError(
                f"The state was saved with window {state['window']}, but this shuffler has "
                f"window {self.window}."
            )
        self._rng.load_state_dict(state["rng"])
        self._block = []


def block_shuffle(items: Iterable[T], window: int, seed: int) -> Iterator[T]:
    """Yield ``items`` shuffled exactly like fairseq2's ``shuffle(window, seed)``."""
    shuffler: BlockShuffler[T] = BlockShuffler(window, seed)
    for item in items:
        yield from shuffler.push(item)
    yield from shuffler.flush()
