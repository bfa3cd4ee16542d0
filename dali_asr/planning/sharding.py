"""Equal batches per rank, by construction, for one pass over a split.

Every rank plans the same global batch list from metadata and takes the batches whose global
index i satisfies i ≡ rank (mod world size). When the count does not divide, the last
``count mod world`` batches are split (the largest first, in halves, order kept) until there is
one part per rank, so every rank gets the same number of batches, nothing is cut, and no
collective is needed per step. A split part is a subset of a planned batch, so it keeps the
width and budget bounds.

Because the global plan is the same at every world size, a position is one global index, and a
state saved with N ranks loads with M: the remaining batches are dealt to the M ranks.

(The endless training stream shards differently: every rank streams its own share of each
partition's row groups; every rank's stream is endless, so counts are equal by construction.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import torch

from dali_asr.errors import ConfigError

T = TypeVar("T")


def batches_per_rank(total: int, world_size: int) -> int:
    """Batches each rank gets from a global plan of ``total`` batches."""
    full, rest = divmod(total, world_size)
    return full + (1 if rest else 0)


def tail_start(total: int, world_size: int) -> int:
    """Global index of the first batch that is split into per-rank parts (``total`` if none)."""
    return total - total % world_size


def split_tail(batches: Sequence[list[T]], world_size: int) -> list[list[T]]:
    """The last ``len(batches) < world_size`` batches split into exactly ``world_size`` parts:
    repeatedly halve the part with the most examples (the earliest of equals)."""
    parts = [list(b) for b in batches]
    while len(parts) < world_size:
        i = max(range(len(parts)), key=lambda j: (len(parts[j]), -j))
        if len(parts[i]) < 2:
            raise ConfigError(
                f"the split's last {len(batches)} batch(es) hold too few examples to give each "
                f"of {world_size} ranks one; use fewer ranks or drop_remainder: true"
            )
        half = (len(parts[i]) + 1) // 2
        parts[i : i + 1] = [parts[i][:half], parts[i][half:]]
    return parts


def owns(index: int, rank: int, world_size: int) -> bool:
    return index % world_size == rank


def own_batches(
    indexed: Iterable[tuple[int, list[T]]], rank: int, world_size: int, total: int
) -> Iterator[tuple[int, list[T]]]:
    """This rank's (global index, batch) pairs out of the global plan's, in order; the tail
    part of rank r gets index ``tail_start + r``."""
    if world_size == 1:
        yield from indexed
        return
    tail_from = tail_start(total, world_size)
    tail: list[list[T]] = []
    for index, batch in indexed:
        if index >= tail_from:
            tail.append(batch)
        elif owns(index, rank, world_size):
            yield index, batch
    if tail:
        yield tail_from + rank, split_tail(tail, world_size)[rank]


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Rank and world size: given values win, then torch.distributed when initialised."""
    dist = torch.distributed
    if rank is None and world_size is None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    rank = 0 if rank is None else rank
    world_size = 1 if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} and world size {world_size}: expected 0 <= rank < size")
    return rank, world_size
