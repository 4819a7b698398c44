"""The tasks: one module each, found by short name or env id."""

from __future__ import annotations

from functools import cache
from typing import Any

from textrl.tasks.base import Policy, Task, Transition
from textrl.tasks.brackets import BracketsTask
from textrl.tasks.endgames import EndgamesStockfishTask, EndgamesTask
from textrl.tasks.maze import MazePOTask, MazeTask
from textrl.tasks.randomwalks import RandomWalksTask
from textrl.tasks.wordle import WordleTask

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (RandomWalksTask, MazeTask, MazePOTask, BracketsTask,
                                                          EndgamesTask, EndgamesStockfishTask, WordleTask)}
_BY_ENV_ID = {cls.env_id: cls.name for cls in TASKS.values()}
TASK_ENV_IDS = frozenset(_BY_ENV_ID)
"""The env ids of the built-in tasks."""
RETIRED_ENV_IDS: dict[str, str] = {old: f"{old} is retired: {why}; use {cls.env_id}"
                                   for cls in TASKS.values() for old, why in cls.retired_env_ids.items()}
"""Old env id -> the message that refuses it (names the current id and what changed)."""

__all__ = ["TASKS", "TASK_ENV_IDS", "BracketsTask", "EndgamesStockfishTask", "EndgamesTask", "MazePOTask", "MazeTask",
           "Policy", "RETIRED_ENV_IDS", "RandomWalksTask", "Task", "Transition", "WordleTask", "get_task"]


def get_task(name_or_env_id: str, **kwargs: Any) -> Task:
    """The task with this short name ("maze") or env id ("textrl/Maze-v1"), built with `kwargs`.

    A retired id ("textrl/Maze-v0") is refused with what changed and the id to use.
    """
    if name_or_env_id in RETIRED_ENV_IDS:
        raise ValueError(RETIRED_ENV_IDS[name_or_env_id])
    name = _BY_ENV_ID.get(name_or_env_id, name_or_env_id)
    if name not in TASKS:
        known = ", ".join([*TASKS, *_BY_ENV_ID])
        raise ValueError(f"unknown task {name_or_env_id!r}; known tasks: {known}")
    return _cached_task(name, tuple(sorted(kwargs.items())))


@cache
def _cached_task(name: str, kwargs: tuple[tuple[str, Any], ...]) -> Task:
    """Tasks are immutable after construction and their references cost a DP: build each once."""
    return TASKS[name](**dict(kwargs))
