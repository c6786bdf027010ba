"""Several processes through PyTorch's own engine: ``torchrun --nproc_per_node N -m tumorseg train``.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; with WORLD_SIZE > 1 each process joins a
process group (NCCL on CUDA, gloo on CPU), trains on its own shard of every epoch's sample,
and gradients are averaged by DistributedDataParallel. Only rank 0 validates and writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup(device_type: str) -> Context:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def barrier(context: Context) -> None:
    """Wait for every rank; at the end of training, so no rank leaves while a peer still sends
    (gloo aborts a process whose peer has already closed its connection)."""
    if context.active:
        dist.barrier()


def teardown(context: Context) -> None:
    if context.active and dist.is_initialized():
        dist.destroy_process_group()


def broadcast(context: Context, value: object) -> object:
    """Rank 0's ``value`` on every rank."""
    if not context.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class EpochSampler(Sampler[int]):
    """The slices of one epoch, drawn from (seed, epoch) alone and dealt out to the ranks.

    With ``weights`` the draw is with replacement (tumor oversampling), else it is a
    permutation. Every rank draws the same list and keeps every world-th item, so the
    ranks see disjoint shards and a resumed run repeats the epoch exactly. ``keyed`` yields
    (index, draw) pairs instead, the draw numbering the epoch's items (for datasets that draw
    a random patch per item).
    """

    def __init__(
        self,
        size: int,
        num_samples: int,
        seed: int,
        epoch: int,
        weights: np.ndarray | None = None,
        rank: int = 0,
        world: int = 1,
        keyed: bool = False,
    ):
        rng = np.random.default_rng([seed, epoch])
        if weights is not None:
            order = rng.choice(size, size=num_samples, replace=True, p=weights / weights.sum())
        else:
            order = np.concatenate([rng.permutation(size) for _ in range(-(-num_samples // size))])[
                :num_samples
            ]
        per_rank = num_samples // world
        self.indices = order[rank : per_rank * world : world].tolist()
        self.draws = range(rank, per_rank * world, world) if keyed else None

    def __iter__(self):
        if self.draws is None:
            return iter(self.indices)
        return zip(self.indices, self.draws, strict=True)

    def __len__(self) -> int:
        return len(self.indices)


def seed_for(*keys: int) -> int:
    """A 63-bit seed derived from (seed, epoch, ...), for generators that take one integer."""
    return int(
        np.random.SeedSequence(list(keys)).generate_state(2, np.uint32).astype(np.uint64) @ [1 << 31, 1]
    )
