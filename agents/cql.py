"""Token-level CQL: Q-learning with a double-DQN target, a Polyak target head and the CQL regulariser.

The losses, and their equations, are in textrl/methods/cql.py.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from agents.base import OfflineAgent
from agents.targets import PolyakTargetSync
from textrl.methods import CQLConfig, cql_loss
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
        return cql_loss(model(batch), model.heads, batch, gamma=m.gamma, cql_scale=m.cql_scale)

    def next_token_scores(self, hidden: torch.Tensor, logits: torch.Tensor, beta: float) -> torch.Tensor:
        return self.model.heads.qs(hidden)[0].float()
