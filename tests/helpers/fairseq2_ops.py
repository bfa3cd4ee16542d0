"""fairseq2's functional data-pipeline operations, as plain generators over dali-asr's
batchers and sampler: the tests' models of what the reference does (``sample``, ``shard``,
``bucket_by_length``, ``static bucket``), which the loader itself drives push by push."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from dali_asr.batching import LengthBucketer, StaticBatcher
from dali_asr.planning.sampling import WeightedSampler

T = TypeVar("T")


def bucket_by_length(
    items: Iterable[T],
    length_of: Callable[[T], int],
    bucket_sizes: Sequence[tuple[int, int]],
    *,
    min_data_len: int = 1,
    drop_remainder: bool = False,
) -> Iterator[list[T]]:
    """Yield length-bucketed batches of ``items``, flushing leftovers at the end.

    ``length_of`` gives an item's length (e.g. audio samples); the other knobs are those of
    :class:`LengthBucketer`.
    """
    bucketer: LengthBucketer[T] = LengthBucketer(
        bucket_sizes, min_data_len=min_data_len, drop_remainder=drop_remainder
    )
    for item in items:
        yield from bucketer.push(item, length_of(item))
    yield from bucketer.flush()


def static_batches(
    items: Iterable[T], batch_size: int, *, drop_remainder: bool = False
) -> Iterator[list[T]]:
    """Yield consecutive batches of ``batch_size`` items (see :class:`StaticBatcher`)."""
    batcher: StaticBatcher[T] = StaticBatcher(batch_size, drop_remainder=drop_remainder)
    for item in items:
        yield from batcher.push(item)
    yield from batcher.flush()


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
