"""Monte-Carlo returns: Q and V heads regressed on discounted returns-to-go; acts like ILQL."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from agents.base import OfflineAgent
from textrl.methods import MCReturnsConfig, masked_mean, returns_to_go, token_cross_entropy
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
        mask = batch["action_mask"].float()
        out = model(batch)
        g = returns_to_go(batch["rewards"], mask, m.gamma)
        q_taken = [q.gather(-1, out.actions[..., None]).squeeze(-1) for q in out.qs]
        loss_q = sum(masked_mean((q - g) ** 2, mask) for q in q_taken)
        loss_v = masked_mean((out.vs[:, :-1] - g) ** 2, mask)
        loss_bc = masked_mean(token_cross_entropy(out.logits, out.actions), mask)
        loss = loss_q + loss_v + m.bc_scale * loss_bc
        return loss, {"loss_q": loss_q.item(), "loss_v": loss_v.item(), "loss_bc": loss_bc.item()}

    def next_token_scores(self, hidden: torch.Tensor, logits: torch.Tensor, beta: float) -> torch.Tensor:
        return self.model.heads.shifted_log_probs(hidden, logits, beta, use_targets=False)
