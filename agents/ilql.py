"""ILQL: V and twin Q heads with expectile regression; acts by shifting the LM's log-probs by beta * (Qbar - V)."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from agents.base import OfflineAgent
from textrl.config import ILQLConfig
from textrl.models import ValueModel, ilql_loss, load_backbone


class ILQLAgent(OfflineAgent):
    """Implicit Language Q-Learning (Snell et al. 2022) on a Hugging Face causal LM."""

    method_cls = ILQLConfig
    agent_name = "ilql"

    def build_model(self, vocab_size: int) -> ValueModel:
        backbone = load_backbone(self.config.model, vocab_size)
        return ValueModel.build(backbone, num_qs=2 if self.config.method.two_qs else 1,
                                q_rank=self.config.model.q_head_rank)

    def loss(self, model: ValueModel, batch: TensorDict) -> tuple[torch.Tensor, dict[str, float]]:
        m = self.config.method
        out = model(batch["input_ids"], batch["attention_mask"], batch["action_ixs"], batch["state_ixs"])
        return ilql_loss(out, batch, tau=m.tau, gamma=m.gamma, cql_scale=m.cql_scale, awac_scale=m.awac_scale,
                         beta=m.beta)

    def after_optimizer_step(self, model: ValueModel, step: int) -> None:
        if step % self.config.method.steps_for_target_q_sync == 0:
            model.heads.sync_target_q_heads(self.config.method.alpha)

    def next_token_scores(self, hidden: torch.Tensor, logits: torch.Tensor, beta: float) -> torch.Tensor:
        return self.model.heads.shifted_log_probs(hidden, logits, beta)
