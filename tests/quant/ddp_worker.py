"""Run under `torchrun --nproc_per_node=2`: train quantizers on different data per rank and save
each rank's state, once with codebook sync and once with it switched off (to show it matters).

Usage: torchrun --standalone --nproc_per_node=2 tests/quant/ddp_worker.py OUT_DIR
"""

import sys
from pathlib import Path
from unittest import mock

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import vtok.quant.dist
from vtok.quant import create_quantizer


class Net(torch.nn.Module):
    def __init__(self, quantizer: torch.nn.Module) -> None:
        super().__init__()
        self.encoder, self.quantizer = torch.nn.Linear(4, 4), quantizer

    def forward(self, x: torch.Tensor):
        out = self.quantizer(self.encoder(x))
        return out.loss + (out.z_q - x).pow(2).mean(), out.metrics


def train_all(rank: int) -> dict[str, torch.Tensor]:
    state, restarts = {}, 0.0
    setups = {
        "vq_ema": dict(name="vq", dim=4, codebook_size=64, dead_code_window=1.0),
        "vq_cosine": dict(name="vq", dim=4, codebook_size=32, distance="cosine"),
        "rvq": dict(name="rvq", dim=4, num_quantizers=2,
                    quantizer_options=dict(codebook_size=32, dead_code_window=1.0)),
        "gvq": dict(name="gvq", dim=4, groups=2, quantizer_options=dict(codebook_size=16)),
        "vq_learned": dict(name="vq", dim=4, codebook_size=64, ema=False, dead_code_window=1.0),
    }
    for key, options in setups.items():
        torch.manual_seed(0)  # same initial weights on every rank
        q = create_quantizer(options.pop("name"), **options).train()
        model = DistributedDataParallel(Net(q), broadcast_buffers=False)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(1000 + rank)  # different data on every rank
        for _ in range(6):
            x = torch.randn(96 + 32 * rank, 4, generator=gen) + (3.0 if rank else -3.0)
            loss, metrics = model(x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            restarts += metrics.get("restarts", 0.0)
        for name, value in model.module.state_dict().items():
            state[f"{key}.{name}"] = value.detach().clone()
    state["restarts"] = torch.tensor(restarts)
    return state


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.save(train_all(rank), out / f"synced_rank{rank}.pt")
    with mock.patch.object(vtok.quant.dist, "world_size", lambda: 1):
        torch.save(train_all(rank), out / f"unsynced_rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
