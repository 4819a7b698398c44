"""Token-level CQL: Q-learning with a max backup over the next state, a Polyak target and the CQL regulariser."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from agents.base import OfflineAgent
from agents.targets import max_backup
from textrl.config import CQLConfig
from textrl.models import ValueModel, load_backbone, masked_mean, taken_and_logsumexp


class CQLAgent(OfflineAgent):
    """Learns Q(s, token) alone and acts from it (softmax with temperature; greedy at 0)."""

    method_cls = CQLConfig
    agent_name = "cql"

    def build_model(self, vocab_size: int) -> ValueModel:
        return ValueModel.build(load_backbone(self.config.model, vocab_size), num_qs=1, with_v=False,
                                q_rank=self.config.model.q_head_rank)

    def loss(self, model: ValueModel, batch: TensorDict) -> tuple[torch.Tensor, dict[str, float]]:
        m = self.config.method
        mask = batch["action_mask"].float()
        out = model(batch["input_ids"], batch["attention_mask"], batch["action_ixs"], batch["state_ixs"])
        with torch.no_grad():
            next_q = model.heads.target_q(out.next_hidden[:, 1:]).amax(-1)  # max_a' Qbar(s_{k+1}, a')
        target = max_backup(batch["rewards"], next_q, batch["notdone"], m.gamma)
        q_taken, q_lse = taken_and_logsumexp(out.qs[0], out.actions)
        loss_td = masked_mean((q_taken - target) ** 2, mask)
        loss_cql = masked_mean(q_lse - q_taken, mask)  # cross-entropy of Q: logsumexp Q - Q(a)
        loss = loss_td + m.cql_scale * loss_cql
        return loss, {"loss_td": loss_td.item(), "loss_cql": loss_cql.item(), "q_mean": q_taken[mask.bool()].mean().item()}

    def after_optimizer_step(self, model: ValueModel, step: int) -> None:
        if step % self.config.method.steps_for_target_q_sync == 0:
            model.heads.sync_target_q_heads(self.config.method.alpha)

    def next_token_scores(self, hidden: torch.Tensor, logits: torch.Tensor, beta: float) -> torch.Tensor:
        return self.model.heads.qs(hidden)[0].float()
