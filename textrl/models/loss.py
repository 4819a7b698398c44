"""The ILQL loss, line for line with DESIGN.md's equations (means over the valid actions of the batch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tensordict import TensorDict

from textrl.models.value_model import ValueOutput


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over the True entries of `mask`."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-position cross-entropy [B, A] of logits [B, A, V] against token ids [B, A]."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view(targets.shape)


def ilql_loss(out: ValueOutput, batch: TensorDict, tau: float, gamma: float, cql_scale: float,
              awac_scale: float, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """L_Q + L_V + cql_scale * L_CQL + awac_scale * L_AWAC, and its stats."""
    mask = batch["action_mask"].float()
    a = out.actions
    v, v_next = out.vs[:, :-1], out.vs[:, 1:]  # V(h_{a_k}) (s_k = a_k) and V(h_{s_{k+1}})
    target = batch["rewards"] + gamma * v_next.detach() * batch["notdone"]  # r_k + gamma V(s_{k+1}) notdone_k
    q_taken = [q.gather(-1, a[..., None]).squeeze(-1) for q in out.qs]  # Q_j(h_{a_k})[x_{a_k+1}]
    qbar = out.target_q  # min_j Qbar_j at the action, no gradient

    loss_q = sum(masked_mean((q - target) ** 2, mask) for q in q_taken)
    diff = qbar - v
    loss_v = masked_mean((tau - (diff < 0).float()).abs() * diff**2, mask)
    loss_cql = sum(masked_mean(token_cross_entropy(q, a), mask) for q in out.qs)
    awac_weight = torch.exp(beta * (qbar - v)).detach()
    loss_awac = masked_mean(awac_weight * token_cross_entropy(out.logits, a), mask)
    loss = loss_q + loss_v + cql_scale * loss_cql + awac_scale * loss_awac

    valid = mask.bool()
    stats = {
        "loss_q": loss_q.item(), "loss_v": loss_v.item(), "loss_cql": loss_cql.item(), "loss_awac": loss_awac.item(),
        "v_mean": v[valid].mean().item(), "q_mean": q_taken[0][valid].mean().item(),
        "target_q_mean": float(qbar[valid].mean()), "target_q_max": float(qbar[valid].max()),
        "target_q_min": float(qbar[valid].min()), "awac_weight_mean": float(awac_weight[valid].mean()),
        "awac_weight_max": float(awac_weight[valid].max()),
    }
    return loss, stats
