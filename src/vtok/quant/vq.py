"""Vector quantization with EMA or learned codebooks.

VQ-VAE (van den Oord et al., 2017); EMA codebook updates (Razavi et al., 2019); k-means init and
dead-code restarts (Dhariwal et al., 2020, Jukebox); low-dimensional and cosine lookup
(Yu et al., 2022, ViT-VQGAN); rotation-trick gradients (Fifty et al., 2024).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtok.quant.base import (
    QUANTIZERS,
    Quantizer,
    QuantizerOutput,
    code_metrics,
    require_choice,
    require_int,
    require_range,
    straight_through,
)
from vtok.quant.dist import all_gather_rows, all_reduce_sum_, broadcast_
from vtok.quant.search import nearest_code

KMEANS_MAX_SAMPLES = 65536  # per rank
KMEANS_PP_MAX_CODES = 1024


@QUANTIZERS.register("vq")
class VectorQuantizer(Quantizer):
    """Nearest-code vector quantization with EMA or learned codebook, k-means init, restarts.

    Options:
      dim, codebook_size: input channels and number of codes.
      codebook_dim: look codes up in a lower dimension (linear projections in and out).
      distance: "l2" or "cosine" (inputs and codes are unit-normalized).
      ema: update the codebook by exponential moving averages (decay, eps); with ema=False the
        codebook is a parameter trained by the codebook loss (codebook_weight).
      commitment_weight: weight of |z - sg(q)|^2.
      kmeans_init: set the codebook by k-means (kmeans_iters) on the first training batch.
      dead_code_window: a code is dead when none of the last `dead_code_window * codebook_size`
        training vectors chose it; restart_dead_codes replaces dead codes by recent inputs.
      rotation_trick: pass gradients by rotating z onto its code instead of copying them.
      seed: seeds k-means and restart sampling (identical on every rank).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        distance: str = "l2",
        ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        commitment_weight: float = 0.25,
        codebook_weight: float = 1.0,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        dead_code_window: float = 8.0,
        restart_dead_codes: bool = True,
        rotation_trick: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.dim = require_int("dim", dim, 1)
        self.codebook_size = require_int("codebook_size", codebook_size, 2)
        self.codebook_dim = require_int("codebook_dim", codebook_dim or dim, 1)
        self.distance = require_choice("distance", distance, ("l2", "cosine"))
        self.ema = bool(ema)
        self.decay = require_range("decay", decay, 0.0, 1.0)
        self.eps = require_range("eps", eps, 0.0, 1.0)
        self.commitment_weight = require_range("commitment_weight", commitment_weight, 0.0, 1e6)
        self.codebook_weight = require_range("codebook_weight", codebook_weight, 0.0, 1e6)
        self.kmeans_init = bool(kmeans_init)
        self.kmeans_iters = require_int("kmeans_iters", kmeans_iters, 0)
        if not isinstance(dead_code_window, (int, float)) or dead_code_window <= 0:
            raise ValueError(f"dead_code_window must be a number > 0, got {dead_code_window!r}")
        self.dead_code_window = float(dead_code_window)
        self.restart_dead_codes = bool(restart_dead_codes)
        self.rotation_trick = bool(rotation_trick)
        self.seed = require_int("seed", seed, 0)

        k, cd = self.codebook_size, self.codebook_dim
        self.project_in = nn.Linear(dim, cd) if cd != dim else None
        self.project_out = nn.Linear(cd, dim) if cd != dim else None
        init = torch.randn(k, cd)
        if self.distance == "cosine":
            init = F.normalize(init, dim=1)
        if self.ema:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.ones(k))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("idle", torch.zeros(k, dtype=torch.long))  # vectors since last use
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialized", torch.tensor(not self.kmeans_init))

    # -- coding path -------------------------------------------------------------------------
    def codes(self) -> Tensor:
        """The effective code vectors `[codebook_size, codebook_dim]` used for lookup."""
        if self.distance == "cosine" and not self.ema:
            return F.normalize(self.codebook, dim=1)
        return self.codebook

    def decode(self, indices: Tensor) -> Tensor:
        q = F.embedding(indices.reshape(-1), self.codes())
        if self.project_out is not None:
            q = self.project_out(q)
        return q.reshape(*indices.shape, self.dim)

    @torch.no_grad()
    def indices_keeping(self, z: Tensor, previous: Tensor, slack: float) -> Tensor:
        """Indices of `z` `[..., dim]` where each position keeps its `previous` code (indices
        of the same leading shape) when that code's squared distance is at most (1 + slack)
        times the nearest code's, else takes the nearest: fewer changes from frame to frame
        for a little more distortion, like a video codec's skip mode. l2 codebooks only."""
        if self.distance != "l2":
            raise ValueError("keeping codes from frame to frame needs an l2 codebook")
        x = z.reshape(-1, self.dim)
        if self.project_in is not None:
            x = self.project_in(x)
        codes = self.codes()
        best = nearest_code(x, codes, "l2")
        kept = previous.reshape(-1)
        keep = (x - codes[kept]).pow(2).sum(1) <= (1 + slack) * (x - codes[best]).pow(2).sum(1)
        return torch.where(keep, kept, best).view(previous.shape)

    # -- training path -----------------------------------------------------------------------
    def quantize(self, z: Tensor) -> QuantizerOutput:
        x = z.reshape(-1, self.dim)
        if self.project_in is not None:
            x = self.project_in(x)
        if self.distance == "cosine":
            x = F.normalize(x, dim=1)
        if self.training and not bool(self.initialized):
            self._init_kmeans(x.detach())
        codes = self.codes()
        metric = "l2" if self.distance == "l2" else "dot"
        idx = nearest_code(x.detach(), codes.detach(), metric)
        q = F.embedding(idx, codes)  # carries the codebook gradient when the codebook is learned

        loss = self.commitment_weight * F.mse_loss(x, q.detach())
        if not self.ema:
            loss = loss + self.codebook_weight * F.mse_loss(q, x.detach())
        surrogate = rotate_onto(x, q.detach()) if self.rotation_trick else x
        z_q = straight_through(q, surrogate)
        if self.project_out is not None:
            z_q = self.project_out(z_q)

        metrics = code_metrics(idx, self.codebook_size)
        if self.training:
            metrics.update(self._update(x.detach(), idx))
        else:
            metrics["dead_fraction"] = self._dead().float().mean().item()
        return QuantizerOutput(z_q.reshape(z.shape), idx.reshape(z.shape[:-1]), loss, metrics)

    def _dead(self) -> Tensor:
        return self.idle >= self.dead_code_window * self.codebook_size

    @torch.no_grad()
    def _update(self, x: Tensor, idx: Tensor) -> dict[str, float]:
        k = self.codebook_size
        counts = torch.bincount(idx, minlength=k).to(x.dtype)
        if self.ema:
            sums = x.new_zeros(k, x.shape[1]).index_add_(0, idx, x)
            stats = all_reduce_sum_(torch.cat([counts[:, None], sums], 1))
            counts, sums = stats[:, 0], stats[:, 1:]
            self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
            self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            total = self.ema_count.sum()
            # Laplace smoothing keeps rarely used codes from dividing by ~0
            smoothed = (self.ema_count + self.eps) / (total + k * self.eps) * total
            new = self.ema_sum / smoothed[:, None]
            self.codebook.copy_(F.normalize(new, dim=1) if self.distance == "cosine" else new)
        else:
            all_reduce_sum_(counts)
        self.idle.add_(int(counts.sum())).masked_fill_(counts > 0, 0)
        dead = self._dead()
        metrics = {"dead_fraction": dead.float().mean().item()}
        if self.restart_dead_codes:
            metrics["restarts"] = float(self._restart(x, dead.nonzero().squeeze(1)))
        self.steps += 1
        return metrics

    @torch.no_grad()
    def _restart(self, x: Tensor, dead: Tensor) -> int:
        """Replace dead codes by input vectors drawn from all ranks (same choice everywhere)."""
        n = dead.numel()
        if n == 0:
            return 0
        local = torch.randperm(x.shape[0], device=x.device)[:n]
        if local.numel() < n:
            local = torch.randint(x.shape[0], (n,), device=x.device)
        pool = all_gather_rows(x[local])
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.steps))
        new = pool[torch.randperm(pool.shape[0], generator=gen)[:n].to(x.device)]
        self.codebook.data[dead] = new
        if self.ema:
            self.ema_sum[dead] = new
            self.ema_count[dead] = 1.0
        self.idle[dead] = 0
        return n

    @torch.no_grad()
    def _init_kmeans(self, x: Tensor) -> None:
        k = self.codebook_size
        if x.shape[0] > KMEANS_MAX_SAMPLES:
            x = x[torch.randperm(x.shape[0], device=x.device)[:KMEANS_MAX_SAMPLES]]
        data = all_gather_rows(x)
        centroids = kmeans_seeds(data, k, self.seed)
        metric = "l2" if self.distance == "l2" else "dot"
        counts = torch.ones(k, device=data.device)
        for step in range(self.kmeans_iters + 1):
            idx = nearest_code(data, centroids, metric)
            counts = torch.bincount(idx, minlength=k).to(data.dtype)
            if step == self.kmeans_iters:
                break
            sums = data.new_zeros(k, data.shape[1]).index_add_(0, idx, data)
            new = sums / counts.clamp_min(1)[:, None]
            if self.distance == "cosine":
                new = F.normalize(new, dim=1)
            centroids = torch.where(counts[:, None] > 0, new, centroids)
        # every rank computed the same thing; the broadcast rules out nondeterministic kernels
        broadcast_(centroids)
        broadcast_(counts)
        self.codebook.data.copy_(centroids)
        if self.ema:
            self.ema_count.copy_(counts.clamp_min(1))
            self.ema_sum.copy_(centroids * self.ema_count[:, None])
        self.initialized.fill_(True)

    @torch.no_grad()
    def grown_state(self, size: int, seed: int = 0, spread: float = 0.01) -> dict[str, Tensor]:
        """The state of this quantizer with `size` codes (up to twice as many), for fine-tuning
        a trained model into a larger codebook.

        Codes 0..K-1 stay where they are, so every old index still decodes to the same vector.
        Each added code splits one of the most used codes (by EMA count; without EMA, the most
        recently used): a copy moved by `spread` times the codebook's per-channel spread in a random
        direction, the pair sharing the old code's EMA statistics, so training pulls the two
        apart over the vectors that code stood for (the splitting step of LBG).
        """
        k = self.codebook_size
        if not isinstance(size, int) or isinstance(size, bool) or not k < size <= 2 * k:
            raise ValueError(f"a codebook of {k} codes grows to between {k + 1} and {2 * k} "
                             f"codes, not {size!r}")
        if not bool(self.initialized):
            raise ValueError("this codebook was never trained (k-means would replace it on the "
                             "first training step); only a trained codebook grows")
        state = {name: t.clone() for name, t in self.state_dict().items()}
        added = size - k
        use = self.ema_count if self.ema else -self.idle.float()
        split = torch.argsort(use, descending=True, stable=True)[:added]
        gen = torch.Generator().manual_seed(seed)
        codebook = state["codebook"]
        noise = torch.randn(added, codebook.shape[1], generator=gen).to(codebook)
        new = codebook[split] + spread * codebook.std(0) * noise
        if self.distance == "cosine":
            new = F.normalize(new, dim=1)
        state["codebook"] = torch.cat([codebook, new])
        if self.ema:
            count, sums = state["ema_count"], state["ema_sum"]
            count[split] /= 2
            sums[split] /= 2
            state["ema_count"] = torch.cat([count, count[split]])
            # the twin's sum: as long as its half (a sum of unit vectors is shorter for cosine)
            length = (sums[split].norm(dim=1, keepdim=True) if self.distance == "cosine"
                      else count[split, None])
            state["ema_sum"] = torch.cat([sums, new * length])
        state["idle"] = torch.cat([state["idle"], state["idle"].new_zeros(added)])
        return state

@torch.no_grad()
def kmeans_seeds(data: Tensor, k: int, seed: int) -> Tensor:
    """Initial k-means centers drawn from `data` [N, d].

    Up to KMEANS_PP_MAX_CODES codes: k-means++ seeding (Arthur & Vassilvitskii, 2007), each new
    center drawn with probability proportional to its squared distance from the chosen ones.
    Its k sequential steps are too slow for larger codebooks, where a uniform draw of data
    points already follows the data density closely.
    """
    n = data.shape[0]
    gen = torch.Generator(device=data.device).manual_seed(seed)
    if n <= k:  # every point becomes a center; the repeats are dead codes, restarted later
        extra = torch.randint(n, (k - n,), generator=gen, device=data.device)
        return torch.cat([data, data[extra]])
    if k > KMEANS_PP_MAX_CODES:
        return data[torch.randperm(n, generator=gen, device=data.device)[:k]]
    sq = data.pow(2).sum(1)
    picks = [int(torch.randint(n, (1,), generator=gen, device=data.device))]
    nearest = torch.full_like(sq, float("inf"))
    for _ in range(1, k):
        c = data[picks[-1]]
        torch.minimum(nearest, torch.addmv(sq + c.dot(c), data, c, alpha=-2), out=nearest)
        cdf = nearest.clamp_min(0).cumsum(0)
        u = torch.rand(1, generator=gen, device=data.device) * cdf[-1]
        picks.append(min(int(torch.searchsorted(cdf, u)), n - 1))
    return data[picks]


def rotate_onto(x: Tensor, q: Tensor, eps: float = 1e-6) -> Tensor:
    """The rotation + rescaling that maps each row of x onto q, with both held constant.

    Its value equals q (up to rounding); its gradient w.r.t. x is that linear map, so the
    encoder learns from the angle between x and its code (Fifty et al., 2024).
    """
    x_norm = x.detach().norm(dim=1, keepdim=True).clamp_min(eps)
    q_norm = q.norm(dim=1, keepdim=True).clamp_min(eps)
    e, u = x.detach() / x_norm, q / q_norm
    r = F.normalize(e + u, dim=1, eps=eps)
    rotated = x - 2 * r * (r * x).sum(1, keepdim=True) + 2 * u * (e * x).sum(1, keepdim=True)
    return (q_norm / x_norm) * rotated
