"""Behaviour cloning and filtered BC (%BC): their configs, and the top-fraction filter of filtered BC."""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass

import torch

from textrl.methods.base import MethodConfig, register_method


@register_method
@dataclass(frozen=True)
class BCConfig(MethodConfig):
    """Behaviour cloning: next-token cross-entropy on the agent's tokens."""

    name: typing.ClassVar[str] = "bc"


@register_method
@dataclass(frozen=True)
class FilteredBCConfig(MethodConfig):
    """%BC: behaviour cloning on the top `fraction` of episodes by return."""

    name: typing.ClassVar[str] = "filtered_bc"

    fraction: float = 0.1

    def _check(self) -> None:
        self._check_unit("fraction", True, False)


def top_fraction(returns: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices of the best ceil(fraction * n) episodes; ties go to the earlier episode."""
    keep = max(1, math.ceil(fraction * len(returns)))
    order = sorted(range(len(returns)), key=lambda i: (-float(returns[i]), i))
    return torch.tensor(sorted(order[:keep]))
