"""Monte-Carlo returns: its config, with the losses in math, the returns-to-go and the loss itself."""

from __future__ import annotations

import typing
from dataclasses import dataclass

import torch
from tensordict import TensorDict

from textrl.methods.base import MethodConfig, register_method
from textrl.methods.loss_parts import masked_mean, token_cross_entropy

if typing.TYPE_CHECKING:
    from textrl.models.value_model import ValueOutput


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
        bc_scale: weight of the LM's cross-entropy on the data's tokens. Q and V regress raw
            returns on the shared backbone, so large returns drown the policy term (the maze,
            returns -3 to -30: 14 points below BC at 1, 2.7 at 10. benchmarks/RESULTS.md).
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


def mc_returns_loss(out: ValueOutput, batch: TensorDict, gamma: float, bc_scale: float
                    ) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of `MCReturnsConfig`'s equation, term by term, and its stats."""
    mask = batch["action_mask"].float()
    g = returns_to_go(batch["rewards"], mask, gamma)  # G_k
    q_taken = [q.gather(-1, out.actions[..., None]).squeeze(-1) for q in out.qs]  # Q_j(s_k, a_k)
    loss_q = sum(masked_mean((q - g) ** 2, mask) for q in q_taken)  # sum_j mean_k (Q_j(s_k, a_k) - G_k)^2
    loss_v = masked_mean((out.vs[:, :-1] - g) ** 2, mask)  # mean_k (V(s_k) - G_k)^2
    loss_bc = masked_mean(token_cross_entropy(out.logits, out.actions), mask)  # mean_k (-log pi(a_k | s_k))
    loss = loss_q + loss_v + bc_scale * loss_bc
    return loss, {"loss_q": loss_q.item(), "loss_v": loss_v.item(), "loss_bc": loss_bc.item()}
