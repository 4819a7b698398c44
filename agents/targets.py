"""Regression targets of the value-based baselines (pure tensor functions over packed batches), and the
target-head update that ILQL and CQL share."""

from __future__ import annotations

from typing import Any

import torch


def returns_to_go(rewards: torch.Tensor, action_mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Discounted returns-to-go G_k = sum_{j >= k} gamma^(j-k) r_j over each row's valid actions."""
    rewards = rewards * action_mask
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for k in range(rewards.shape[1] - 1, -1, -1):
        running = rewards[:, k] + gamma * running * action_mask[:, k]
        out[:, k] = running
    return out * action_mask


def td_target(rewards: torch.Tensor, next_q: torch.Tensor, notdone: torch.Tensor, gamma: float) -> torch.Tensor:
    """The one-step target r_k + gamma * next_q_k * notdone_k (no gradient); next_q is the value of the
    next state (for CQL's double DQN, Qbar(s_{k+1}, argmax_a Q(s_{k+1}, a)))."""
    return (rewards + gamma * next_q * notdone).detach()


class PolyakTargetSync:
    """Mixin for agents with target Q heads: every `method.steps_for_target_q_sync` optimizer steps,
    Qbar <- rate * Q + (1 - rate) * Qbar with rate = `method.target_update_rate`."""

    config: Any

    def after_optimizer_step(self, model: Any, step: int) -> None:
        method = self.config.method
        if step % method.steps_for_target_q_sync == 0:
            model.heads.sync_target_q_heads(method.target_update_rate)
