"""Gymnasium ids of the tasks, registered with string entry points when textrl is imported."""

import gymnasium

from textrl.tasks import TASKS


def register_envs() -> None:
    """Register every task's env id (idempotent); kwargs given to gymnasium.make reach the task."""
    for cls in TASKS.values():
        if cls.env_id not in gymnasium.registry:
            gymnasium.register(id=cls.env_id, entry_point="textrl.env:TokenEnv", kwargs={"task": cls.name})


register_envs()
