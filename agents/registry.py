"""Agents by name, and loading a saved agent whatever its type."""

from __future__ import annotations

import os
from pathlib import Path

from agents.base import OfflineAgent
from agents.bc import BCAgent
from agents.cql import CQLAgent
from agents.filtered_bc import FilteredBCAgent
from agents.ilql import ILQLAgent
from agents.mc_returns import MCReturnsAgent
from agents.saving import AGENT_FILE, read_agent_info

AGENTS: dict[str, type[OfflineAgent]] = {
    cls.agent_name: cls for cls in (BCAgent, FilteredBCAgent, MCReturnsAgent, CQLAgent, ILQLAgent)
}


def load_agent(directory: str | os.PathLike) -> OfflineAgent:
    """Load a saved agent (or a checkpoint's) with the class recorded in its agent.json."""
    path = Path(directory)
    for candidate in (path / AGENT_FILE, path / "agent" / AGENT_FILE):
        if candidate.is_file():
            name = read_agent_info(candidate).get("agent")
            if name not in AGENTS:
                raise ValueError(f"{candidate} names an unknown agent {name!r}; known: {', '.join(AGENTS)}")
            return AGENTS[name].load(directory)
    raise FileNotFoundError(f"{directory} is not a saved agent or checkpoint (no {AGENT_FILE})")
