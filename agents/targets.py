"""Regression targets of the value-based baselines, as pure tensor functions over packed batches."""

from __future__ import annotations

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


def max_backup(rewards: torch.Tensor, next_q_max: torch.Tensor, notdone: torch.Tensor, gamma: float) -> torch.Tensor:
    """The Q-learning target r_k + gamma * max_a' Qbar(s_{k+1}, a') * notdone_k (no gradient)."""
    return (rewards + gamma * next_q_max * notdone).detach()
