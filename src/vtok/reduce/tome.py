"""ToMe: bipartite soft matching merges the most similar token pairs (Bolya et al., ICLR 2023)."""

from __future__ import annotations

import torch
from torch import Tensor

from vtok.reduce.base import REDUCERS, Protected, Reducer, TokenBatch, merge_dest
from vtok.reduce.rows import add_rows, take_rows
from vtok.reduce.select import top_k_mask


@REDUCERS.register("tome")
class TokenMerging(Reducer):
    """ToMe bipartite soft matching (Bolya et al., "Token Merging: Your ViT But Faster", 2023).

    The reducible tokens alternate into sets A (even rank) and B (odd rank). Each A token finds
    its most cosine-similar B token (on `keys` when given, else on x); the A tokens with the
    most similar matches are merged into their match, size-weighted. One round can remove at
    most |A| (half the tokens), as in the paper; when more must go (keep < 0.5, or a large r)
    further rounds match the merged tokens again, so the kept count is always exact.

    round_share: at most this share of the tokens still alive is merged in one round. 0.5 is the
    paper's single round for up to half, which at keep=0.5 forces every A token to merge,
    however poor its best match. 0.4 leaves the worst-matched fifth of A for a second round that
    matches the merged tokens afresh. On the bench's trained ViT (ToMe at block 1, 1,200 random
    crops, two crop seeds) this halves the mean KL divergence from the unreduced model at keep
    0.5 (0.0024 -> 0.0011-0.0013) and cuts it by a fifth at keep 0.25 (0.0085 -> 0.0065-0.0067);
    at keep 0.1 it is a little worse (0.025-0.027 -> 0.032-0.033) for about the same top-1
    agreement. Default (None): 0.4 for `keep`, 0.5 for per-block `r` (the paper's schedule, one
    round of r per block, exactly).
    """

    name = "tome"

    def __init__(self, keep: float | None = None, r: int | None = None,
                 protected: Protected = 0, round_share: float | None = None) -> None:
        super().__init__(keep=keep, r=r, protected=protected)
        if round_share is None:
            round_share = 0.4 if keep is not None else 0.5
        if (isinstance(round_share, bool) or not isinstance(round_share, (int, float))
                or not 0 < round_share <= 0.5):
            raise ValueError(f"round_share must be in (0, 0.5], got {round_share!r}")
        self.round_share = float(round_share)

    def select(self, batch: TokenBatch) -> Tensor:
        feats, sizes = batch.feats, batch.sizes
        B, N, _ = feats.shape
        index = torch.arange(N, device=feats.device).expand(B, N)
        dest = index.masked_fill(~batch.reducible, -1)
        current = feats
        rounds = self._rounds(batch)
        for i, (a_max, b_max, quota) in enumerate(rounds):
            alive = dest == index
            quota = torch.tensor(quota, device=feats.device).expand(B)
            dest = self._match_round(current, alive, quota, dest, a_max, b_max)
            if i + 1 < len(rounds):  # the next round matches the merged tokens' means
                current = _cluster_sums(feats, sizes, dest)
        return merge_dest(batch, dest)

    def _rounds(self, batch: TokenBatch) -> list[tuple[int, int, list[int]]]:
        """Largest |A| and |B| of every round and the tokens each sample merges in it, worked
        out on the host once (no syncs per round)."""
        if batch.padded:
            alive, todo = batch.n.tolist(), (batch.n - batch.counts).tolist()
        else:
            n = batch.reducible.shape[1] - batch.num_protected
            alive, todo = [n], [n - batch.max_count]
        rounds = []
        while any(t > 0 for t in todo):
            quota = [min(t, a // 2, max(1, int(a * self.round_share)))
                     for a, t in zip(alive, todo)]
            rounds.append((max((a + 1) // 2 for a in alive), max(a // 2 for a in alive), quota))
            alive = [a - m for a, m in zip(alive, quota)]
            todo = [t - m for t, m in zip(todo, quota)]
        return rounds

    @staticmethod
    def _match_round(g: Tensor, alive: Tensor, quota: Tensor, dest: Tensor,
                     a_max: int, b_max: int) -> Tensor:
        """One round on features `g`, matched by cosine similarity."""
        B, N, _ = g.shape
        rank = (alive.cumsum(1) - 1).masked_fill(~alive, -1)
        is_a = alive & (rank % 2 == 0)
        is_b = alive & (rank % 2 == 1)
        a_idx, a_valid = _set_members(is_a, rank // 2, a_max)
        b_idx, b_valid = _set_members(is_b, rank // 2, b_max)
        fa, fb = take_rows(g, a_idx), take_rows(g, b_idx)
        # cosines: scale the |A| x |B| dot products, not the [B, N, D] features
        ra, rb = (1 / f.norm(dim=-1).clamp(min=1e-12) for f in (fa, fb))
        sim = ((fa @ fb.transpose(1, 2)) * ra[:, :, None] * rb[:, None, :]).masked_fill(
            ~(a_valid[:, :, None] & b_valid[:, None, :]), float("-inf")
        )
        best, best_j = sim.max(dim=-1)
        has_b = b_valid.any(dim=1)
        removed = torch.where(has_b, quota.minimum(a_valid.sum(1)), 0)
        chosen = top_k_mask(best, a_valid, removed)
        target = b_idx.gather(1, best_j)
        # Redirect each chosen A token (and everything already merged into it) to its match.
        redirect = torch.arange(N + 1, device=g.device).repeat(B, 1)
        redirect.scatter_(1, torch.where(chosen, a_idx, N), target.masked_fill(~chosen, N))
        return redirect[:, :N].gather(1, dest.clamp(min=0)).masked_fill(dest < 0, -1)


def _set_members(member: Tensor, position: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Token indices of one set in rank order, `[B, size]`, and which entries are real."""
    B, N = member.shape
    slots = torch.where(member, position, size)
    idx = torch.zeros(B, size + 1, dtype=torch.long, device=member.device)
    idx.scatter_(1, slots, torch.arange(N, device=member.device).expand(B, N).contiguous())
    valid = torch.arange(size, device=member.device)[None] < member.sum(1, keepdim=True)
    return idx[:, :size].masked_fill(~valid, 0), valid


def _cluster_sums(feats: Tensor, sizes: Tensor, dest: Tensor) -> Tensor:
    """Size-weighted feature sums of each cluster, stored at its representative's index: the
    cluster's mean times its total size, so the same direction for cosine similarity."""
    w = sizes.to(feats.dtype).masked_fill(dest < 0, 0)
    return add_rows(feats * w[..., None], dest.clamp(min=0), feats.shape[1])
