"""Offline agents that share textrl's data, training loop and evaluation.

The names below are imported on first use, so `textrl --help` (which loads `agents.commands`) runs
without importing torch.
"""

import importlib

_MODULES = {"OfflineAgent": "agents.base", "BCAgent": "agents.bc", "CQLAgent": "agents.cql",
            "FilteredBCAgent": "agents.filtered_bc", "ILQLAgent": "agents.ilql", "MCReturnsAgent": "agents.mc_returns",
            "AGENTS": "agents.registry", "load_agent": "agents.registry"}

__all__ = ["OfflineAgent", "BCAgent", "FilteredBCAgent", "MCReturnsAgent", "CQLAgent", "ILQLAgent", "AGENTS",
           "load_agent"]


def __getattr__(name: str) -> object:
    """An agent class (or AGENTS, load_agent), imported when first asked for."""
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")
