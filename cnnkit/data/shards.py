"""How an epoch splits into batches and a batch into ranks: the arithmetic that the loaders,
the trainer's schedule length and the distributed runs must agree on."""

from __future__ import annotations


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """This rank's part [lo, hi) of n items split into world_size contiguous parts, the first
    n % world_size of them one longer (as torch.tensor_split)."""
    base, extra = divmod(n, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def batches_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
    """Global batches in an epoch of n examples: the full ones, and a last smaller one if it
    gives every rank at least one example (ranks must step together)."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= world_size else 0)
