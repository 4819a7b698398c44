"""The pieces every method's loss is built from: a masked mean over valid actions, and a token's score
with the log-normaliser (cross-entropy) in one pass."""

from __future__ import annotations

from typing import Any, Optional

import torch


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
