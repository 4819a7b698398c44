"""Token-level CQL: its config, with the losses in math, and the loss itself."""

from __future__ import annotations

import typing
from dataclasses import dataclass

import torch
from tensordict import TensorDict

from textrl.methods.base import MethodConfig, register_method
from textrl.methods.loss_parts import masked_mean, taken_and_logsumexp

if typing.TYPE_CHECKING:
    from textrl.models.heads import ValueHeads
    from textrl.models.value_model import ValueOutput


@register_method
@dataclass(frozen=True)
class CQLConfig(MethodConfig):
    r"""Token-level conservative Q-learning (Kumar et al. 2020) with a double-DQN target.

    One Q head over the vocabulary and its target copy Qbar (notation of `ILQLConfig`; means over
    the valid actions)::

        a*_k  = argmax_a Q(s_{k+1}, a)                                (online head, no gradient)
        y_k   = r_k + gamma * Qbar(s_{k+1}, a*_k) * notdone_k         (double DQN, no gradient)
        L_TD  = mean_k (Q(s_k, a_k) - y_k)^2
        L_CQL = mean_k [logsumexp_a Q(s_k, a) - Q(s_k, a_k)]
        L     = L_TD + cql_scale * L_CQL

    Every `steps_for_target_q_sync` steps: Qbar <- target_update_rate * Q + (1 - rate) * Qbar.
    Acting samples softmax(Q(s, .) / gen_kwargs.temperature) (greedy at temperature 0);
    `gen_kwargs.beta` is unused.

    Attributes:
        gamma: discount factor.
        cql_scale: the conservative weight (d3rlpy calls it `alpha`): how hard L_CQL pushes down the
            Q of tokens the data did not take relative to the token it did.
        target_update_rate: Polyak rate of the target head (ILQL's `alpha`).
        steps_for_target_q_sync: optimizer steps between target updates.
    """

    name: typing.ClassVar[str] = "cql"

    gamma: float = 0.99
    cql_scale: float = 1.0
    target_update_rate: float = 0.1
    steps_for_target_q_sync: int = 1

    def _check(self) -> None:
        self._check_unit("gamma", False, False)
        self._check_unit("target_update_rate", False, False)
        self._require("cql_scale", self.cql_scale >= 0, "must be >= 0")
        self._require("steps_for_target_q_sync", self.steps_for_target_q_sync >= 1, "must be at least 1")


def td_target(rewards: torch.Tensor, next_q: torch.Tensor, notdone: torch.Tensor, gamma: float) -> torch.Tensor:
    """The one-step target r_k + gamma * next_q_k * notdone_k (no gradient); next_q is the value of the
    next state (for CQL's double DQN, Qbar(s_{k+1}, argmax_a Q(s_{k+1}, a)))."""
    return (rewards + gamma * next_q * notdone).detach()


def cql_loss(out: ValueOutput, heads: ValueHeads, batch: TensorDict, gamma: float, cql_scale: float
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """L_TD + cql_scale * L_CQL and its stats; each line is the line of `CQLConfig`'s equations named in its
    comment (`heads` give the online and target Q at the next states)."""
    mask = batch["action_mask"].float()
    with torch.no_grad():
        h_next = out.state_hidden[:, 1:]
        best = heads.qs(h_next)[0].argmax(-1)  # a*_k = argmax_a Q(s_{k+1}, a), online head
        next_q = heads.target_q_at(h_next, best)  # Qbar(s_{k+1}, a*_k)
    target = td_target(batch["rewards"], next_q, batch["notdone"], gamma)  # y_k
    q_taken, q_lse = taken_and_logsumexp(out.qs[0], out.actions)  # Q(s_k, a_k), logsumexp_a Q(s_k, a)
    loss_td = masked_mean((q_taken - target) ** 2, mask)  # L_TD
    loss_cql = masked_mean(q_lse - q_taken, mask)  # L_CQL: the cross-entropy of Q
    loss = loss_td + cql_scale * loss_cql
    return loss, {"loss_td": loss_td.item(), "loss_cql": loss_cql.item(), "q_mean": q_taken[mask.bool()].mean().item()}
