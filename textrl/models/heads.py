"""Value heads on a transformer's last hidden state: V, Q_1..Q_k, and target copies of the Q heads."""

from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn


class MLPHead(nn.Module):
    """trlx's head: Linear(h, 2h), ReLU, Linear(2h, out).

    With `rank`, the output layer is factorised as Linear(2h, rank, no bias) then Linear(rank, out):
    at a 50k vocabulary the full layer costs more than the transformer's own LM head, a rank-128
    factorisation about a twelfth of it.
    """

    def __init__(self, hidden: int, out: int, rank: Optional[int] = None) -> None:
        super().__init__()
        if rank is not None and rank < 1:
            raise ValueError(f"rank = {rank}: must be at least 1 (or None: the full output layer)")
        self.up = nn.Linear(hidden, 2 * hidden)
        self.low = nn.Linear(2 * hidden, rank, bias=False) if rank is not None else None
        self.down = nn.Linear(rank if rank is not None else 2 * hidden, out)

    def features(self, h: torch.Tensor) -> torch.Tensor:
        """What the output layer reads: ReLU(up(h)), projected to `rank` when factorised."""
        z = torch.relu(self.up(h))
        return self.low(z) if self.low is not None else z

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.down(self.features(h))

    def at(self, h: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The output's `index` entries only: gathers the output layer's rows instead of the whole output."""
        z = self.features(h)  # [..., 2h or rank]
        w = self.down.weight[index]  # [..., 2h or rank]
        return (z * w).sum(-1) + self.down.bias[index]


class ValueHeads(nn.Module):
    """V (optional), `num_qs` Q heads over the vocabulary, and their target copies (optional, no gradient).

    `q_rank` factorises the Q heads' output layer (see `MLPHead`); None keeps trlx's full layer.
    """

    def __init__(self, hidden: int, vocab: int, num_qs: int = 2, with_v: bool = True, with_targets: bool = True,
                 q_rank: Optional[int] = None) -> None:
        super().__init__()
        self.q_rank = q_rank
        self.v_head = MLPHead(hidden, 1) if with_v else None
        self.q_heads = nn.ModuleList(MLPHead(hidden, vocab, rank=q_rank) for _ in range(num_qs))
        self.target_q_heads = copy.deepcopy(self.q_heads) if with_targets and num_qs else None
        if self.target_q_heads is not None:
            self.target_q_heads.requires_grad_(False)

    def v(self, h: torch.Tensor) -> torch.Tensor:
        return self.v_head(h).squeeze(-1)

    def qs(self, h: torch.Tensor) -> list[torch.Tensor]:
        return [q(h) for q in self.q_heads]

    def target_q(self, h: torch.Tensor) -> torch.Tensor:
        """min_j Qbar_j(h) over the whole vocabulary (for acting)."""
        return torch.stack([q(h) for q in self.target_q_heads]).amin(0)

    def target_q_at(self, h: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """min_j Qbar_j(h)[action], computed at the taken actions only."""
        return torch.stack([q.at(h, actions) for q in self.target_q_heads]).amin(0)

    @torch.no_grad()
    def sync_target_q_heads(self, alpha: float) -> None:
        """Polyak update: Qbar <- alpha * Q + (1 - alpha) * Qbar."""
        for target, online in zip(self.target_q_heads, self.q_heads):
            for t, o in zip(target.parameters(), online.parameters()):
                t.mul_(1 - alpha).add_(o.detach(), alpha=alpha)
