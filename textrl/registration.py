"""Gymnasium ids of the tasks, registered with string entry points when textrl is imported."""

import gymnasium

from textrl.tasks import TASKS

TEXT_ENV_ID = "textrl/Text-v0"


def register_envs() -> None:
    """Register every task's env id (idempotent); kwargs given to gymnasium.make reach the task."""
    for cls in TASKS.values():
        if cls.env_id not in gymnasium.registry:
            gymnasium.register(id=cls.env_id, entry_point="textrl.env:TokenEnv", kwargs={"task": cls.name})
    if TEXT_ENV_ID not in gymnasium.registry:  # your own text: gymnasium.make(TEXT_ENV_ID, tokenizer=..., ...)
        gymnasium.register(id=TEXT_ENV_ID, entry_point="textrl.text_env:TextEnv")


register_envs()
