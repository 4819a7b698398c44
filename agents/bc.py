"""Behaviour cloning: next-token cross-entropy on the agent's tokens only."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from agents.base import OfflineAgent
from textrl.methods import BCConfig, masked_mean, token_cross_entropy
from textrl.models import ValueModel, load_backbone


class BCAgent(OfflineAgent):
    """Imitates the dataset's actions; acts by sampling the language model."""

    method_cls = BCConfig
    agent_name = "bc"

    def build_model(self, vocab_size: int) -> ValueModel:
        return ValueModel.build(load_backbone(self.config.model, vocab_size), with_heads=False)

    def loss(self, model: ValueModel, batch: TensorDict) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(batch)
        loss = masked_mean(token_cross_entropy(out.logits, out.actions), batch["action_mask"].float())
        return loss, {"loss_bc": loss.item()}
