"""The weighted pick of fairseq2's ``DataPipeline.sample``, which mixes the training stream's
partitions example by example.

Bit-exact with fairseq2n 0.6 (``sample_data_source.cc``, ``shard_data_source.cc``): weights are
float32, their running sums are float32 and are divided by the total unless it is within a relative
1e-4 of 1 (``are_close``); each pick draws one 32-bit MT19937 output ``r`` and takes
``u = (r & 0xFFFFFF) / 2**24`` (exact in float32), then binary-searches the first cumulative weight
``>= u``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np

from dali_asr.batching.rng import Mt19937

__all__ = ["SamplerState", "WeightedSampler"]


class SamplerState(TypedDict):
    num_weights: int
    rng: dict[str, Any]
    """``Mt19937.state_dict()``."""


_REL_TOL = np.float32(0.0001)


def _are_close(lhs: np.float32, rhs: np.float32) -> bool:
    """fairseq2's ``are_close`` evaluated in float32, as in the C++."""
    if lhs == rhs:
        return True
    return bool(np.abs(rhs - lhs) < _REL_TOL * np.maximum(np.abs(lhs), np.abs(rhs)))


class WeightedSampler:
    """Picks a pipeline index with fairseq2's sampler arithmetic and RNG stream.

    Args:
        weights: one positive, finite weight per pipeline (need not sum to 1), or ``None`` for
            uniform weights (``1/n`` in float32, as fairseq2; then ``num_pipelines`` gives n).
            Validation happens after the cast to float32, so a weight that rounds to 0 or
            overflows is rejected.
        seed: sampler seed (low 32 bits used).
        num_pipelines: required with ``weights=None``; must match ``len(weights)`` otherwise.
    """

    def __init__(
        self, weights: Sequence[float] | None, seed: int, *, num_pipelines: int | None = None
    ) -> None:
        if weights is None:
            if num_pipelines is None or num_pipelines < 1:
                raise ValueError(
                    "Uniform weights (`weights=None`) need a positive `num_pipelines`, but it is "
                    f"{num_pipelines}."
                )
            weights = [float(np.float32(1) / np.float32(num_pipelines))] * num_pipelines
        elif num_pipelines is not None and num_pipelines != len(weights):
            raise ValueError(
                f"The number of pipelines and the number of `weights` must be equal, but are "
                f"{num_pipelines} and {len(weights)} instead."
            )
        with np.errstate(over="ignore"):  # an overflow becomes inf and is rejected below
            w32 = np.asarray(list(weights), dtype=np.float64).astype(np.float32)
        if w32.size == 0:
            raise ValueError("`weights` must not be empty.")
        for i, weight in enumerate(w32):
            # Same order of checks as fairseq2: a NaN passes the first and fails the second.
            if weight < 0 or _are_close(weight, np.float32(0)):
                raise ValueError(
                    f"The `weights` must be greater than 0.0, but the weight at index {i} is "
                    f"{weights[i]} instead."
                )
            if not np.isfinite(weight):
                raise ValueError(
                    f"The `weights` must be finite, but the weight at index {i} is infinite or "
                    "NaN instead."
                )
        cumsums = np.cumsum(w32, dtype=np.float32)  # accumulate is sequential, like the C++ loop
        total = cumsums[-1]
        if not _are_close(total, np.float32(1)):
            cumsums = cumsums / total
        self._cumsums: list[float] = [float(c) for c in cumsums.astype(np.float32)]
        self._rng = Mt19937(seed)

    @property
    def num_weights(self) -> int:
        """Number of pipelines the sampler picks from."""
        return len(self._cumsums)

    @property
    def cumulative_weights(self) -> list[float]:
        """The float32 cumulative distribution that picks are made from."""
        return list(self._cumsums)

    def pick(self) -> int:
        """Draw one pipeline index."""
        u = (self._rng.next_u32() & 0xFFFFFF) * 2.0**-24
        cumsums = self._cumsums
        lo, hi = 0, len(cumsums) - 1
        while hi > lo:
            mid = lo + (hi - lo) // 2
            if cumsums[mid] < u:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def state_dict(self) -> SamplerState:
        """Return a JSON-serialisable state (RNG and the number of weights)."""
        return {"num_weights": len(self._cumsums), "rng": self._rng.state_dict()}

    def load_state_dict(self, state: SamplerState) -> None:
        """Restore :meth:`state_dict` output; the weights must have the same length."""
        if int(state["num_weights"]) != len(self._cumsums):
            raise ValueError(
                f"The state was saved for {state['num_weights']} weights, but this sampler has "
                f"{len(self._cumsums)}."
            )
        self._rng.load_state_dict(state["rng"])
