"""Token-level CQL: Q-learning with a double-DQN target, a Polyak target head and the CQL regulariser.

The losses are written out in `textrl.config.CQLConfig`'s docstring.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from agents.base import OfflineAgent
from agents.targets import PolyakTargetSync
from textrl.methods import CQLConfig, masked_mean, taken_and_logsumexp, td_target
from textrl.models import ValueModel, load_backbone


class CQLAgent(PolyakTargetSync, OfflineAgent):
    """Learns Q(s, token) alone and acts from it (softmax with temperature; greedy at 0)."""

    method_cls = CQLConfig
    agent_name = "cql"

    def build_model(self, vocab_size: int) -> ValueModel:
        return ValueModel.build(load_backbone(self.config.model, vocab_size), num_qs=1, with_v=False,
                                q_rank=self.config.model.q_head_rank)

    def loss(self, model: ValueModel, batch: TensorDict) -> tuple[torch.Tensor, dict[str, float]]:
        m = self.config.method
        mask = batch["action_mask"].float()
        out = model(batch)
        with torch.no_grad():
            h_next = out.state_hidden[:, 1:]
            best = model.heads.qs(h_next)[0].argmax(-1)  # a* = argmax_a Q(s_{k+1}, a), online head
            next_q = model.heads.target_q_at(h_next, best)  # Qbar(s_{k+1}, a*)
        target = td_target(batch["rewards"], next_q, batch["notdone"], m.gamma)
        q_taken, q_lse = taken_and_logsumexp(out.qs[0], out.actions)
        loss_td = masked_mean((q_taken - target) ** 2, mask)
        loss_cql = masked_mean(q_lse - q_taken, mask)  # cross-entropy of Q: logsumexp Q - Q(a)
        loss = loss_td + m.cql_scale * loss_cql
        return loss, {"loss_td": loss_td.item(), "loss_cql": loss_cql.item(), "q_mean": q_taken[mask.bool()].mean().item()}

    def next_token_scores(self, hidden: torch.Tensor, logits: torch.Tensor, beta: float) -> torch.Tensor:
        return self.model.heads.qs(hidden)[0].float()
