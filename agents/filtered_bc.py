"""Filtered BC (%BC): behaviour cloning on the top fraction of episodes by return."""

from __future__ import annotations

import math

import torch

from agents.bc import BCAgent
from textrl.config import FilteredBCConfig
from textrl.data import PackedDataset


def top_fraction(returns: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices of the best ceil(fraction * n) episodes; ties go to the earlier episode."""
    keep = max(1, math.ceil(fraction * len(returns)))
    order = sorted(range(len(returns)), key=lambda i: (-float(returns[i]), i))
    return torch.tensor(sorted(order[:keep]))


class FilteredBCAgent(BCAgent):
    """BC restricted to the episodes with the highest returns."""

    method_cls = FilteredBCConfig
    agent_name = "filtered_bc"

    def prepare_data(self, packed: PackedDataset) -> PackedDataset:
        return packed.select(top_fraction(packed.returns, self.config.method.fraction))
