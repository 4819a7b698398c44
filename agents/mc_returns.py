"""Monte-Carlo returns: Q and V heads regressed on discounted returns-to-go; acts like ILQL.

The loss, and its equation, are in textrl/methods/mc_returns.py.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from agents.base import OfflineAgent
from textrl.methods import MCReturnsConfig, mc_returns_loss, shifted_log_probs
from textrl.models import ValueModel, load_backbone


class MCReturnsAgent(OfflineAgent):
    """BC logits shifted by beta * (Q - V), with Q and V fitted to the data's returns-to-go."""

    method_cls = MCReturnsConfig
    agent_name = "mc_returns"

    def build_model(self, vocab_size: int) -> ValueModel:
        m = self.config.method
        backbone = load_backbone(self.config.model, vocab_size)
        return ValueModel.build(backbone, num_qs=2 if m.two_qs else 1, with_targets=False,
                                q_rank=self.config.model.q_head_rank)

    def loss(self, model: ValueModel, batch: TensorDict) -> tuple[torch.Tensor, dict[str, float]]:
        m = self.config.method
        return mc_returns_loss(model(batch), batch, gamma=m.gamma, bc_scale=m.bc_scale)

    def next_token_scores(self, hidden: torch.Tensor, logits: torch.Tensor, beta: float) -> torch.Tensor:
        return shifted_log_probs(self.model.heads, hidden, logits, beta, use_targets=False)
