"""torchrun detection and process-group setup: gloo on CPU, nccl on GPU; rank 0 writes."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup() -> Context:
    """Join the torchrun process group if launched by torchrun, else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if world <= 1:
        return Context(0, 1, device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(dist.get_rank(), dist.get_world_size(), device)


def teardown(ctx: Context) -> None:
    if ctx.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def any_true(flag: bool, ctx: Context) -> bool:
    """True on every rank if `flag` is true on any rank (so all ranks skip a step together)."""
    if ctx.world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean_over_ranks(values: dict[str, float], ctx: Context) -> dict[str, float]:
    if ctx.world == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], device=ctx.device, dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(keys, (t / ctx.world).tolist()))


@dataclass
class RankGroup:
    """The ranks of `ctx` agreeing on a choice (`vtok.train.checkpoint.load_newest`)."""

    ctx: Context

    def from_rank0(self, names: list[str]) -> list[str]:
        """Rank 0's `names` on every rank."""
        if self.ctx.world == 1:
            return names
        box = [names]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_true(self, flag: bool) -> bool:
        """True on every rank if `flag` is true on every rank."""
        return not any_true(not flag, self.ctx)
