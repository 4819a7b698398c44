"""Gymnasium ids of the tasks, registered with string entry points when textrl is imported."""

from typing import Any, NoReturn

import gymnasium

from textrl.tasks import RETIRED_ENV_IDS, TASKS


def refuse_retired(retired_id: str, **_: Any) -> NoReturn:
    """The entry point of a retired id: `gymnasium.make` raises DeprecatedEnv naming the new id and what changed."""
    raise gymnasium.error.DeprecatedEnv(RETIRED_ENV_IDS[retired_id])


TEXT_ENV_ID = "textrl/Text-v0"


def register_envs() -> None:
    """Register every task's env id, and its retired ids as refusals (idempotent); make's kwargs reach the task."""
    for cls in TASKS.values():
        if cls.env_id not in gymnasium.registry:
            gymnasium.register(id=cls.env_id, entry_point="textrl.env:TokenEnv", kwargs={"task": cls.name})
    for old in RETIRED_ENV_IDS:
        if old not in gymnasium.registry:
            gymnasium.register(id=old, entry_point="textrl.registration:refuse_retired", kwargs={"retired_id": old})
    if TEXT_ENV_ID not in gymnasium.registry:  # your own text: gymnasium.make(TEXT_ENV_ID, tokenizer=..., ...)
        gymnasium.register(id=TEXT_ENV_ID, entry_point="textrl.text_env:TextEnv")


register_envs()
