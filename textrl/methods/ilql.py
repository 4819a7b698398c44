"""ILQL (Implicit Language Q-Learning): its config, with the losses in math, the loss itself, and the
advantage-shifted acting scores."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Optional

import torch
from tensordict import TensorDict

from textrl.methods.base import MethodConfig, register_method
from textrl.methods.loss_parts import masked_mean, taken_and_logsumexp, token_cross_entropy

if typing.TYPE_CHECKING:
    from textrl.models.heads import ValueHeads
    from textrl.models.value_model import ValueOutput


@register_method
@dataclass(frozen=True)
class ILQLConfig(MethodConfig):
    r"""Implicit Language Q-Learning (Snell et al. 2022), with trlx's defaults.

    Notation: an episode is one token sequence; action k is the token x_{k+1} the agent emitted at
    state s_k (the context before it), r_k its reward and notdone_k = 0 when the episode terminated
    there (1 otherwise, and at a truncation, where the target bootstraps from V). The heads read the
    last hidden state: V(s), Q_j(s, .) for j = 1..2 (1 when `two_qs` is False) and their target
    copies Qbar_j, with Qbar(s, a) = min_j Qbar_j(s, a). Every mean is over the valid actions of
    the batch (`ilql_loss` below computes these lines)::

        y_k    = r_k + gamma * V(s_{k+1}) * notdone_k                    (V detached)
        L_Q    = sum_j mean_k (Q_j(s_k, a_k) - y_k)^2
        L_V    = mean_k |tau - 1[Qbar(s_k, a_k) < V(s_k)]| * (Qbar(s_k, a_k) - V(s_k))^2
        L_CQL  = sum_j mean_k [logsumexp_a Q_j(s_k, a) - Q_j(s_k, a_k)]
        w_k    = exp(beta * (Qbar(s_k, a_k) - V(s_k)))                  (no gradient;
                 min(w_k, awac_weight_max) when awac_weight_max is set)
        L_AWAC = mean_k w_k * (-log pi(a_k | s_k))                       (pi: the LM's softmax)
        L      = L_Q + L_V + cql_scale * L_CQL + awac_scale * L_AWAC

    Every `steps_for_target_q_sync` optimizer steps: Qbar_j <- alpha * Q_j + (1 - alpha) * Qbar_j.
    Acting scores the next token by log pi(a | s) + gen_kwargs.beta * (Qbar(s, a) - V(s)).

    Attributes:
        tau: expectile of V's regression on Qbar, in (0, 1); above 0.5 V leans towards the best
            actions the data took.
        gamma: discount factor.
        cql_scale: weight of the conservative term L_CQL (the cross-entropy of Q as a softmax over
            tokens: it pushes down the Q of tokens the data did not take).
        awac_scale: weight of the advantage-weighted LM loss L_AWAC. The value terms share the
            backbone with it: at trlx's 1 the policy can learn more slowly than BC's (Wordle: 14
            points below BC at 3,000 steps; at 10, level with it. benchmarks/RESULTS.md).
        alpha: Polyak rate of the target Q heads (trlx's name; `CQLConfig.target_update_rate` is
            the same thing). With 0.001 every 5 steps the targets move about 18% of the way to the
            online heads in 1000 steps.
        beta: AWAC temperature in *training* (0: plain cross-entropy). Not the acting weight, which
            is `gen_kwargs.beta`.
        awac_weight_max: optional cap on the AWAC weight w_k (d3rlpy and CORL cap at 100); None,
            trlx's behaviour, leaves it uncapped.
        steps_for_target_q_sync: optimizer steps between target updates.
        two_qs: twin Q heads (min of the two targets), as trlx.
        gen_kwargs: decoding; `gen_kwargs.beta` is the advantage weight when *acting*.

    Returns: trlx's ILQL trainer z-scores the returns before training;
    `default_ilql_config()` does the same with `train.reward_normalization: zscore`. The task
    presets (`task_config`) set `reward_normalization: none` and their own rates explicitly.
    """

    name: typing.ClassVar[str] = "ilql"

    tau: float = 0.7
    gamma: float = 0.99
    cql_scale: float = 0.1
    awac_scale: float = 1.0
    alpha: float = 0.001
    beta: float = 0.0
    awac_weight_max: Optional[float] = None
    steps_for_target_q_sync: int = 5
    two_qs: bool = True

    def _check(self) -> None:
        self._check_unit("tau", True, True)
        self._check_unit("gamma", False, False)
        self._check_unit("alpha", False, False)
        self._require("cql_scale", self.cql_scale >= 0, "must be >= 0")
        self._require("awac_scale", self.awac_scale >= 0, "must be >= 0")
        if self.awac_weight_max is not None:
            self._require("awac_weight_max", self.awac_weight_max > 0,
                          "must be positive (or null: the AWAC weight is not capped)")
        self._require("steps_for_target_q_sync", self.steps_for_target_q_sync >= 1, "must be at least 1")

    @property
    def target_update_rate(self) -> float:
        """The Polyak rate of the target Q heads (`alpha`), under the name every method shares."""
        return self.alpha


def ilql_loss(out: ValueOutput, batch: TensorDict, tau: float, gamma: float, cql_scale: float,
              awac_scale: float, beta: float, awac_weight_max: Optional[float] = None
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """L_Q + L_V + cql_scale * L_CQL + awac_scale * L_AWAC and its stats; each line below is the line of
    `ILQLConfig`'s equations named in its comment (`awac_weight_max`: cap on w_k, None = uncapped)."""
    mask = batch["action_mask"].float()
    a = out.actions
    v, v_next = out.vs[:, :-1], out.vs[:, 1:]  # V(h_{a_k}) (s_k = a_k) and V(h_{s_{k+1}})
    target = batch["rewards"] + gamma * v_next.detach() * batch["notdone"]  # y_k
    q_taken, q_lse = zip(*(taken_and_logsumexp(q, a) for q in out.qs))  # Q_j(h_{a_k})[x_{a_k+1}], logsumexp Q_j
    qbar = out.target_q  # min_j Qbar_j at the action, no gradient

    loss_q = sum(masked_mean((q - target) ** 2, mask) for q in q_taken)  # L_Q
    diff = qbar - v
    loss_v = masked_mean((tau - (diff < 0).float()).abs() * diff**2, mask)  # L_V
    loss_cql = sum(masked_mean(lse - q, mask) for q, lse in zip(q_taken, q_lse))  # L_CQL: cross_entropy(Q_j, a_k)
    awac_weight = torch.exp(beta * (qbar - v)).detach()  # w_k
    if awac_weight_max is not None:
        awac_weight = awac_weight.clamp(max=awac_weight_max)
    loss_awac = masked_mean(awac_weight * token_cross_entropy(out.logits, a), mask)  # L_AWAC
    loss = loss_q + loss_v + cql_scale * loss_cql + awac_scale * loss_awac

    stats = {"loss_q": loss_q, "loss_v": loss_v, "loss_cql": loss_cql, "loss_awac": loss_awac}
    stats.update(_spread("v", v, mask), **_spread("q", q_taken[0], mask), **_spread("target_q", qbar, mask))
    stats.update(awac_weight_mean=masked_mean(awac_weight, mask), awac_weight_max=_masked_max(awac_weight, mask))
    names = list(stats)
    values = torch.stack([t.detach().float() for t in stats.values()]).tolist()  # one device sync, not one per stat
    return loss, dict(zip(names, values))


def shifted_log_probs(heads: ValueHeads, h: torch.Tensor, logits: torch.Tensor, beta: float,
                      use_targets: bool = True) -> torch.Tensor:
    """log_softmax(logits) + beta * (Q - V) over the vocabulary: the acting scores of ILQL (Q = min of the
    target heads) and of MC returns (`use_targets=False`: Q = min of the online heads)."""
    q = heads.target_q(h) if use_targets else torch.stack(heads.qs(h)).amin(0)
    return torch.log_softmax(logits.float(), -1) + beta * (q - heads.v(h)[:, None]).float()


def _masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Largest entry of `x` where `mask` is set (-inf when nothing is)."""
    return x.detach().masked_fill(~mask.bool(), float("-inf")).max()


def _spread(name: str, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean, min and max of `x` over the valid actions, named `<name>_mean` and so on."""
    return {f"{name}_mean": masked_mean(x.detach(), mask), f"{name}_min": -_masked_max(-x, mask),
            f"{name}_max": _masked_max(x, mask)}
