"""Monte-Carlo returns: its config, with the losses in math, and the returns-to-go it regresses on."""

from __future__ import annotations

import typing
from dataclasses import dataclass

import torch

from textrl.methods.base import MethodConfig, register_method


@register_method
@dataclass(frozen=True)
class MCReturnsConfig(MethodConfig):
    r"""Monte-Carlo returns: Q and V regressed on the data's discounted returns-to-go, acting like ILQL.

    With G_k = sum_{j >= k} gamma^(j - k) r_j the return-to-go of action k (notation of
    `ILQLConfig`; means over the valid actions)::

        L = sum_j mean_k (Q_j(s_k, a_k) - G_k)^2 + mean_k (V(s_k) - G_k)^2
            + bc_scale * mean_k (-log pi(a_k | s_k))

    Acting scores tokens by log pi(a | s) + gen_kwargs.beta * (min_j Q_j(s, a) - V(s)).

    There is no conservative term, on purpose: this is the baseline that estimates the *behaviour*
    policy's values (no max, no bootstrap), so nothing in training chases over-estimated actions.
    The price is at acting time: Q of a token the data never took at s is untrained, so a large
    `gen_kwargs.beta` follows noise. The task presets therefore use a small acting beta chosen on
    validation episodes where it was swept, 1 elsewhere (`textrl.presets`).

    Attributes:
        gamma: discount factor of the returns-to-go.
        bc_scale: weight of the LM's cross-entropy on the data's tokens.
        two_qs: two Q heads (min when acting).
        gen_kwargs: decoding; `gen_kwargs.beta` is the advantage weight when acting (MC returns has
            no training beta).
    """

    name: typing.ClassVar[str] = "mc_returns"

    gamma: float = 0.99
    bc_scale: float = 1.0
    two_qs: bool = False

    def _check(self) -> None:
        self._check_unit("gamma", False, False)
        self._require("bc_scale", self.bc_scale >= 0, "must be >= 0")


def returns_to_go(rewards: torch.Tensor, action_mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Discounted returns-to-go G_k = sum_{j >= k} gamma^(j-k) r_j over each row's valid actions."""
    rewards = rewards * action_mask
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for k in range(rewards.shape[1] - 1, -1, -1):
        running = rewards[:, k] + gamma * running * action_mask[:, k]
        out[:, k] = running
    return out * action_mask
