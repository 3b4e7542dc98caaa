"""Data parallel over processes (``torchrun --nproc_per_node=N -m falip.cli ...``): who I am, my shard, gather.

Images (the items of a split) are sharded deterministically (item ``i`` goes to rank ``i mod N``); each
rank encodes its shard and rank 0 gathers every rank's per-item lines, so the table, the predictions
(lines in item order) and the sidecar are written by rank 0 alone and are the same for any N. gloo on
CPU, nccl on CUDA (each rank on ``cuda:<LOCAL_RANK>``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """This process's place in a run: ``rank`` of ``world`` processes (1 process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> "Ranks":
        """Read torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` and join the process group (once)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    def shard(self, indices: Sequence[int]) -> list[int]:
        """This rank's share of ``indices``: every ``world``-th, from position ``rank``."""
        return list(indices)[self.rank::self.world]

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's ``value``, in rank order, on rank 0 (``None`` elsewhere); one process: ``[value]``."""
        if self.world == 1:
            return [value]
        gathered = [None] * self.world if self.is_main else None
        dist.gather_object(value, gathered, dst=0)
        return gathered

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


SINGLE = Ranks()
