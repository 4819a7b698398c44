"""Offline agents that share textrl's data, training loop and evaluation."""

from agents.base import OfflineAgent
from agents.bc import BCAgent
from agents.cql import CQLAgent
from agents.filtered_bc import FilteredBCAgent
from agents.ilql import ILQLAgent
from agents.mc_returns import MCReturnsAgent
from agents.registry import AGENTS, load_agent

__all__ = ["OfflineAgent", "BCAgent", "FilteredBCAgent", "MCReturnsAgent", "CQLAgent", "ILQLAgent", "AGENTS",
           "load_agent"]
