"""The ILQL loss, line for line with the equations in `textrl.config.ILQLConfig`'s docstring (means over
the valid actions of the batch), and the token scores the other losses share."""

from __future__ import annotations

from typing import Any, Optional

import torch
from tensordict import TensorDict

from textrl.models.value_model import ValueOutput


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over the True entries of `mask`."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


class _TakenAndLogSumExp(torch.autograd.Function):
    """x[..., index] and logsumexp(x) over the last axis, with a backward that builds one [..., V] tensor
    (softmax times the logsumexp gradient, plus the taken entries' gradient; a second one to cast back
    for bf16/fp16 scores) where gather plus cross_entropy build five: at a 50k vocabulary each is the
    size of the batch's logits. An output the loss does not use costs nothing in the backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None, not as zeros
        acc = torch.promote_types(x.dtype, torch.float32)  # bf16/fp16 scores are reduced in float32
        taken = x.gather(-1, index[..., None]).squeeze(-1).to(acc)
        lse = torch.logsumexp(x.to(acc), -1)
        ctx.save_for_backward(x, index, lse)
        return taken, lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g_taken: Optional[torch.Tensor], g_lse: Optional[torch.Tensor]) -> tuple[torch.Tensor, None]:
        x, index, lse = ctx.saved_tensors
        if g_lse is None:
            grad = torch.zeros_like(x, dtype=lse.dtype)
        else:  # softmax(x) * g_lse, built in one new tensor
            grad = x.to(lse.dtype, copy=True).sub_(lse[..., None]).exp_().mul_(g_lse[..., None])
        if g_taken is not None:
            grad.scatter_add_(-1, index[..., None], g_taken[..., None].to(lse.dtype))
        return grad.to(x.dtype), None


def taken_and_logsumexp(x: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x[..., index], logsumexp of x over the last axis), in float32 at least: a token's score and the
    log-normaliser, so cross_entropy(x, index) = logsumexp - taken."""
    return _TakenAndLogSumExp.apply(x, index)


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-position cross-entropy [B, A] of logits [B, A, V] against token ids [B, A]."""
    taken, lse = taken_and_logsumexp(logits, targets)
    return lse - taken


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


def _masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Largest entry of `x` where `mask` is set (-inf when nothing is)."""
    return x.detach().masked_fill(~mask.bool(), float("-inf")).max()


def _spread(name: str, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean, min and max of `x` over the valid actions, named `<name>_mean` and so on."""
    return {f"{name}_mean": masked_mean(x.detach(), mask), f"{name}_min": -_masked_max(-x, mask),
            f"{name}_max": _masked_max(x, mask)}
