"""fairseq2's ``DataPipeline.sample`` (weighted mixing of pipelines) and ``shard``.

Bit-exact with fairseq2n 0.6 (``sample_data_source.cc``, ``shard_data_source.cc``): weights are
float32, their running sums are float32 and are divided by the total unless it is within a relative
1e-4 of 1 (``are_close``); each pick draws one 32-bit MT19937 output ``r`` and takes
``u = (r & 0xFFFFFF) / 2**24`` (exact in float32), then binary-searches the first cumulative weight
``>= u``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from dali_asr.batching.rng import Mt19937

__all__ = ["WeightedSampler", "sample", "shard"]

T = TypeVar("T")

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

    def state_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable state (RNG and the number of weights)."""
        return {"num_weights": len(self._cumsums), "rng": self._rng.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the weights must have the same length."""
        if int(state["num_weights"]) != len(self._cumsums):
            raise ValueError(
                f"The state was saved for {state['num_weights']} weights, but this sampler has "
                f"{len(self._cumsums)}."
            )
        self._rng.load_state_dict(state["rng"])


def sample(
    factories: Sequence[Callable[[], Iterator[T]]],
    weights: Sequence[float] | None,
    seed: int,
    *,
    sampler: WeightedSampler | None = None,
) -> Iterator[T]:
    """Mix pipelines like ``DataPipeline.sample(pipelines, weights, seed, allow_repeats=True)``.

    The first item requested pulls one look-ahead item from every pipeline (in index order);
    each item then comes from the picked pipeline's look-ahead, which is refilled before it is
    returned. An exhausted pipeline is marked epoch-done and restarted from its factory. The
    stream ends at the first request made after every pipeline has finished an epoch, so the
    item whose refill exhausted the last pipeline is still returned.

    Args:
        factories: each call returns a fresh iterator over one pipeline.
        weights: as :class:`WeightedSampler`; ``None`` = uniform.
        seed: sampler seed.
        sampler: an existing (e.g. restored) sampler to use instead of ``weights``/``seed``.

    Raises:
        ValueError: bad weights, or a pipeline that yields nothing even after a restart.
    """
    n = len(factories)
    if sampler is None and weights is not None and len(weights) != n:
        raise ValueError(
            f"The number of `factories` and the number of `weights` must be equal, but are {n} "
            f"and {len(weights)} instead."
        )
    if n == 0:
        return
    if sampler is None:
        sampler = WeightedSampler(weights, seed, num_pipelines=n)
    elif sampler.num_weights != n:
        raise ValueError(f"`sampler` has {sampler.num_weights} weights for {n} factories.")

    iterators = [iter(factory()) for factory in factories]
    epoch_done = [False] * n
    sentinel = object()

    def next_in(i: int) -> Any:
        item = next(iterators[i], sentinel)
        if item is sentinel:
            epoch_done[i] = True
            iterators[i] = iter(factories[i]())
            item = next(iterators[i], sentinel)
            if item is sentinel:
                raise ValueError(f"The pipeline at index {i} is empty and cannot be sampled.")
        return item

    lookahead = [next_in(i) for i in range(n)]
    while not all(epoch_done):
        i = sampler.pick()
        item, lookahead[i] = lookahead[i], next_in(i)
        yield item


def shard(
    items: Iterable[T], shard_idx: int, num_shards: int, allow_uneven: bool = False
) -> Iterator[T]:
    """Yield items ``shard_idx``, ``shard_idx + num_shards``, … like fairseq2's ``shard``.

    Items are consumed in groups of ``num_shards``; an incomplete last group yields nothing
    unless ``allow_uneven``, in which case this shard still gets its item if the group reaches
    it (so shards may differ in length by one).
    """
    if num_shards < 1:
        raise ValueError("`num_shards` must be greater than zero.")
    if not 0 <= shard_idx < num_shards:
        raise ValueError(
            f"`shard_idx` must be less than `num_shards` ({num_shards}), but is {shard_idx} "
            "instead."
        )
    it = iter(items)
    if num_shards == 1:
        yield from it
        return
    sentinel = object()
    while True:
        for _ in range(shard_idx):
            if next(it, sentinel) is sentinel:
                return
        item = next(it, sentinel)
        if item is sentinel:
            return
        for _ in range(num_shards - shard_idx - 1):
            if next(it, sentinel) is sentinel:
                if not allow_uneven:
                    return
                # The source is spent: stop here rather than poll an exhausted iterator again.
                yield item
                return
        yield item
