"""ILQL: V and twin Q heads with expectile regression; acts by shifting the LM's log-probs by beta * (Qbar - V).

The losses, and their equations, are in textrl/methods/ilql.py.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from agents.base import OfflineAgent
from agents.targets import PolyakTargetSync
from textrl.methods import ILQLConfig, ilql_loss, shifted_log_probs
from textrl.models import ValueModel, load_backbone


class ILQLAgent(PolyakTargetSync, OfflineAgent):
    """Implicit Language Q-Learning (Snell et al. 2022) on a Hugging Face causal LM."""

    method_cls = ILQLConfig
    agent_name = "ilql"

    def build_model(self, vocab_size: int) -> ValueModel:
        backbone = load_backbone(self.config.model, vocab_size)
        return ValueModel.build(backbone, num_qs=2 if self.config.method.two_qs else 1,
                                q_rank=self.config.model.q_head_rank)

    def loss(self, model: ValueModel, batch: TensorDict) -> tuple[torch.Tensor, dict[str, float]]:
        m = self.config.method
        out = model(batch)
        return ilql_loss(out, batch, tau=m.tau, gamma=m.gamma, cql_scale=m.cql_scale, awac_scale=m.awac_scale,
                         beta=m.beta, awac_weight_max=m.awac_weight_max)

    def next_token_scores(self, hidden: torch.Tensor, logits: torch.Tensor, beta: float) -> torch.Tensor:
        return shifted_log_probs(self.model.heads, hidden, logits, beta)
