"""Behaviour cloning: next-token cross-entropy on the agent's tokens only (textrl/methods/bc.py)."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from agents.base import OfflineAgent
from textrl.methods import BCConfig, bc_loss
from textrl.models import ValueModel, load_backbone


class BCAgent(OfflineAgent):
    """Imitates the dataset's actions; acts by sampling the language model."""

    method_cls = BCConfig
    agent_name = "bc"

    def build_model(self, vocab_size: int) -> ValueModel:
        return ValueModel.build(load_backbone(self.config.model, vocab_size), with_heads=False)

    def loss(self, model: ValueModel, batch: TensorDict) -> tuple[torch.Tensor, dict[str, float]]:
        return bc_loss(model(batch), batch)
