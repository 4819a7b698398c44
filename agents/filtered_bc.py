"""Filtered BC (%BC): behaviour cloning on the top fraction of episodes by return."""

from __future__ import annotations

from agents.bc import BCAgent
from textrl.data import PackedDataset
from textrl.methods import FilteredBCConfig, top_fraction


class FilteredBCAgent(BCAgent):
    """BC restricted to the episodes with the highest returns."""

    method_cls = FilteredBCConfig
    agent_name = "filtered_bc"

    def prepare_data(self, packed: PackedDataset) -> PackedDataset:
        return packed.select(top_fraction(packed.returns, self.config.method.fraction))
