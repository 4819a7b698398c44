"""Behaviour cloning and filtered BC (%BC): their configs with the loss in math, the loss, and the
top-fraction filter of filtered BC."""

from __future__ import annotations

import math
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
class BCConfig(MethodConfig):
    r"""Behaviour cloning: next-token cross-entropy on the agent's tokens (notation of `ILQLConfig`; the
    mean is over the valid actions, so prompt and environment tokens are never targets)::

        L_BC = mean_k (-log pi(a_k | s_k))

    Acting samples the LM (pi) with `gen_kwargs`' top-k and temperature; `gen_kwargs.beta` is unused.
    It has no hyperparameters of its own.
    """

    name: typing.ClassVar[str] = "bc"


@register_method
@dataclass(frozen=True)
class FilteredBCConfig(MethodConfig):
    """%BC: behaviour cloning (`BCConfig`'s L_BC) on the top `fraction` of episodes by return only.

    Attributes:
        fraction: the share of episodes kept, in (0, 1]: the best ceil(fraction * n) by return (ties go
            to the earlier episode); 1 is plain BC.
    """

    name: typing.ClassVar[str] = "filtered_bc"

    fraction: float = 0.1

    def _check(self) -> None:
        self._check_unit("fraction", True, False)


def bc_loss(out: ValueOutput, batch: TensorDict) -> tuple[torch.Tensor, dict[str, float]]:
    """L_BC of `BCConfig`'s equation and its stat."""
    loss = masked_mean(token_cross_entropy(out.logits, out.actions), batch["action_mask"].float())  # L_BC
    return loss, {"loss_bc": loss.item()}


def top_fraction(returns: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices of the best ceil(fraction * n) episodes; ties go to the earlier episode."""
    keep = max(1, math.ceil(fraction * len(returns)))
    order = sorted(range(len(returns)), key=lambda i: (-float(returns[i]), i))
    return torch.tensor(sorted(order[:keep]))
