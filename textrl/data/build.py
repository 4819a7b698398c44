"""Task datasets by id: `textrl/<task>/<tier>-v0`, built on first use from the task's behaviour policy.

A tier is an epsilon-mixture of the task's optimal policy and its exploration policy (see
`Task.tiers`: random 1.0, medium 0.5, mixed 0.25, expert 0.0). The seed is fixed, so an id means
the same data everywhere.
"""

from __future__ import annotations

import re
from typing import Iterator, Optional

import minari

from textrl.data.store import check_dataset_id, dataset_dir, load, write_dataset
from textrl.env import observation_space
from textrl.rollout import Episode, collect_episodes
from textrl.tasks import TASKS, get_task
from gymnasium import spaces

DEFAULT_EPISODES = {"randomwalks": 1000, "maze": 1000, "maze_po": 1000}
DEFAULT_SEED = 0
CHUNK = 2000
_TASK_ID = re.compile(r"^textrl/(?P<task>[a-z_]+)/(?P<tier>[a-z]+)-v(?P<version>\d+)$")


def parse_task_dataset_id(dataset_id: str) -> tuple[str, str]:
    """(task, tier) of a task dataset id, with a clear error for anything else."""
    check_dataset_id(dataset_id)
    m = _TASK_ID.match(dataset_id)
    if not m or m["task"] not in TASKS:
        raise ValueError(f"{dataset_id!r} is not a task dataset id: expected textrl/<task>/<tier>-vN with task one "
                         f"of {', '.join(TASKS)}")
    tiers = TASKS[m["task"]].tiers
    if m["tier"] not in tiers:
        raise ValueError(f"{dataset_id!r}: unknown tier {m['tier']!r} for {m['task']}; tiers: {', '.join(tiers) or 'none'}")
    return m["task"], m["tier"]


def make_dataset(dataset_id: str, num_episodes: Optional[int] = None, seed: Optional[int] = None,
                 progress: bool = True) -> minari.MinariDataset:
    """The local dataset `dataset_id`, built first if missing (e.g. 'textrl/randomwalks/random-v0')."""
    task_name, tier = parse_task_dataset_id(dataset_id)
    if dataset_dir(dataset_id).exists():
        dataset = load(dataset_id)
        if num_episodes is not None and dataset.total_episodes != num_episodes:
            raise ValueError(f"{dataset_id} exists with {dataset.total_episodes} episodes, not {num_episodes}: "
                             "use another version number for other data, or delete the folder")
        return dataset
    task = get_task(task_name)
    n = num_episodes if num_episodes is not None else DEFAULT_EPISODES[task_name]
    s = DEFAULT_SEED if seed is None else seed
    epsilon = task.tiers[tier]
    policy = task.behaviour_policy(epsilon)

    def chunks() -> Iterator[list[Episode]]:
        for start in range(0, n, CHUNK):
            yield collect_episodes(task, policy, min(CHUNK, n - start), seed=s * 1_000_003 + start,
                                   progress=progress)

    metadata = dict(
        env=task.env_id,
        eval_env=task.env_id,
        algorithm_name=f"{task.name}-behaviour-epsilon-{epsilon:g}",
        author="textrl",
        author_email="textrl@users.noreply.github.com",
        code_permalink="https://github.com/textrl/textrl",
        description=(f"{task.name} episodes from an epsilon-mixture (epsilon {epsilon:g}) of the optimal and "
                     f"exploration policies; {n} episodes, seed {s}. Per-episode options hold the prompt and text."),
        ref_min_score=task.ref_min_score,
        ref_max_score=task.ref_max_score,
        requirements=["textrl"],
    )
    return write_dataset(dataset_id, chunks(), observation_space(task), spaces.Discrete(task.vocab_size),
                         task.tokenizer, metadata)
