"""Data-parallel training under torchrun: one process per device, DistributedDataParallel.

`torchrun --nproc_per_node=N -m cnnkit train CONFIG` starts N copies of the same command with
RANK, LOCAL_RANK and WORLD_SIZE in their environment; `Cluster.from_env()` joins them into one
process group (gloo on CPU, nccl on CUDA). Every rank builds the same model from the same seed
(DDP also broadcasts rank 0's weights), takes its own contiguous part of each global batch of
the epoch's permutation, and DDP averages the gradients, so N ranks at global batch B take the
steps one process takes at batch B. Rank 0 alone writes the run directory and prints.
Without torchrun (WORLD_SIZE unset or 1) every call here is a no-op.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from cnnkit.errors import CnnkitError, ConfigError

T = TypeVar("T")
# gloo's and NCCL's words for a peer that is gone or silent
_LOST = re.compile(r"gloo|nccl|connection (reset|closed|refused)|timed out|timeout", re.I)


@dataclass(frozen=True)
class Cluster:
    rank: int = 0  # this process among all of them
    local_rank: int = 0  # this process on its machine: picks cuda:LOCAL_RANK
    world_size: int = 1
    owns_group: bool = False  # this Cluster started the process group, so it ends it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, device: torch.device, *, timeout: float = 1800.0) -> Cluster:
        """Join the process group torchrun describes, or a single-process Cluster. `timeout`
        (train.dist_timeout): seconds to wait for the others, at the start and in each
        collective, before this process stops with an error."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        owns = not dist.is_initialized()
        if owns:
            if device.type == "cuda":
                torch.cuda.set_device(local_rank)
            dist.init_process_group(backend=backend_for(device),
                                    timeout=datetime.timedelta(seconds=timeout))
        return cls(rank, local_rank, world_size, owns)

    def device_for(self, device: torch.device) -> torch.device:
        """Under torchrun, `cuda` means this process's GPU: cuda:LOCAL_RANK."""
        if device.type == "cuda" and self.active:
            return torch.device("cuda", self.local_rank)
        return device

    def explain(self, exc: BaseException) -> BaseException:
        """A collective that failed because another process of the job died or stopped
        answering (gloo raises a bare RuntimeError), as one line naming the cause; any
        other error unchanged."""
        text = str(exc)
        if not self.active or not (isinstance(exc, dist.DistError) or (
                isinstance(exc, RuntimeError) and _LOST.search(text))):
            return exc
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        cause = re.sub(r"^\[[^\]]*\]\s*", "", lines[0]) if lines else type(exc).__name__
        cause = cause.split(". This is typically")[0]  # gloo's advice, not the cause
        return CnnkitError(f"rank {self.rank} of {self.world_size}: lost the other processes "
                           f"of this torchrun job (a node died, or did not answer within "
                           f"train.dist_timeout): {cause[:300]}")

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def check_batch(batch_size: int, cluster: Cluster) -> None:
    """The global batch must give every rank at least one example."""
    if batch_size < cluster.world_size:
        raise ConfigError(f"train.batch_size: {batch_size} is the global batch and cannot "
                          f"be split over {cluster.world_size} processes")


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def loss_weight(local_n: int, global_n: int, world_size: int) -> float:
    """DDP averages gradients over ranks; weighting each rank's mean loss by its share of the
    global batch makes that average the gradient of the global batch's mean loss, also for a
    last batch that does not split evenly."""
    return local_n * world_size / global_n if world_size > 1 else 1.0


def wrap(model: nn.Module, cluster: Cluster) -> nn.Module:
    if not cluster.active:
        return model
    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_sum(totals: torch.Tensor, cluster: Cluster) -> torch.Tensor:
    """Metric totals ([loss sum, correct, count]) added up over all ranks."""
    if cluster.active:
        totals = totals.clone()
        dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    return totals


def on_main(fn: Callable[[], T], cluster: Cluster) -> T:
    """Run fn on rank 0 and give every rank its result; an error raised there (a run dir that
    holds a run, a bad checkpoint) is raised on every rank, so none waits forever."""
    if not cluster.active:
        return fn()
    box: list[Any] = [None]
    if cluster.is_main:
        try:
            box[0] = ("ok", fn())
        except CnnkitError as exc:
            box[0] = ("error", exc)
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise value
    return value
