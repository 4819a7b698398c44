"""Task datasets by id, `textrl/<task>/<tier>-v0`, built on first use from the task's behaviour policy.

A tier is an epsilon-mixture of the task's optimal policy and its exploration policy: at each
step the exploration policy's token with probability epsilon, else the optimal one
(`Task.tiers`: random 1.0, medium 0.5, mixed 0.25, expert 0.0). RandomWalks explores by a
uniform step along an existing edge, so its random tier is trlx's behaviour data; Maze
explores uniformly over the vocabulary. Every tier has `DEFAULT_EPISODES` episodes (1000, the
size of trlx's RandomWalks data) drawn with seed `DEFAULT_SEED`, so an id means the same data
everywhere; other sizes or seeds belong under another version number.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import minari
from gymnasium import spaces
from tqdm.auto import tqdm

from textrl.data.store import build_info, check_dataset_id, dataset_dir, load, write_dataset
from textrl.env import observation_space
from textrl.rollout import Episode, collect_episodes
from textrl.tasks import TASKS, get_task

DEFAULT_EPISODES = 1000
DEFAULT_SEED = 0
CHUNK = 2000  # episodes collected and written at a time (part of what an id means: do not change)
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
        raise ValueError(f"{dataset_id!r}: unknown tier {m['tier']!r} for {m['task']}; tiers: {', '.join(tiers)}")
    return m["task"], m["tier"]


def task_dataset_ids() -> list[str]:
    """Every task dataset id that `make_dataset` can build."""
    return [f"textrl/{name}/{tier}-v0" for name, cls in TASKS.items() for tier in cls.tiers]


def _check_existing(dataset: minari.MinariDataset, num_episodes: int | None, seed: int | None) -> None:
    """Raise if an explicit size or seed disagrees with the dataset already built under the id."""
    info = build_info(dataset)
    wanted = {"num_episodes": num_episodes, "seed": seed}
    clash = {k: (v, info.get(k)) for k, v in wanted.items() if v is not None and info.get(k) != v}
    if clash:
        detail = ", ".join(f"{k} {want} (built with {have})" for k, (want, have) in clash.items())
        raise ValueError(f"{dataset.spec.dataset_id} already exists with other data than asked: {detail}; use "
                         "another version number (e.g. -v1) for other data, or delete the dataset folder")


def make_dataset(dataset_id: str, num_episodes: int | None = None, seed: int | None = None,
                 progress: bool = True) -> minari.MinariDataset:
    """The local dataset `dataset_id` (e.g. 'textrl/randomwalks/random-v0'), built first if missing.

    The build is atomic: until it completes nothing loads under the id, and an interrupted
    build can simply be run again.
    """
    task_name, tier = parse_task_dataset_id(dataset_id)
    if num_episodes is not None and (not isinstance(num_episodes, int) or num_episodes < 1):
        raise ValueError(f"num_episodes must be a positive int, got {num_episodes!r}")
    if dataset_dir(dataset_id).exists():
        dataset = load(dataset_id)
        _check_existing(dataset, num_episodes, seed)
        return dataset
    task = get_task(task_name)
    n = DEFAULT_EPISODES if num_episodes is None else num_episodes
    s = DEFAULT_SEED if seed is None else int(seed)
    epsilon = task.tiers[tier]
    source = task.dataset_task()  # e.g. a task's training starts; evaluation stays on `task`
    policy = source.behaviour_policy(epsilon)

    def chunks() -> Iterator[list[Episode]]:
        with tqdm(total=n, desc=f"build {dataset_id}", unit="ep", disable=not progress) as bar:
            for start in range(0, n, CHUNK):
                size = min(CHUNK, n - start)
                yield collect_episodes(source, policy, size, seed=s * 1_000_003 + start)
                bar.update(size)

    metadata = {
        "env": task.env_id,
        "eval_env": task.env_id,
        "algorithm_name": getattr(policy, "__name__", f"{task.name}_behaviour_eps{epsilon:g}"),
        "author": "textrl",
        "author_email": "textrl@users.noreply.github.com",
        "code_permalink": "https://github.com/textrl/textrl",
        "description": (f"{task.name}, tier {tier}: {n} episodes (seed {s}) of an epsilon-mixture behaviour policy, "
                     f"epsilon {epsilon:g} (probability of the exploration policy's token, else the optimal one). "
                     "Each episode's reset options hold its prompt and decoded text; the task tokenizer is in "
                     "tokenizer/ beside data/."),
        "ref_min_score": task.ref_min_score,
        "ref_max_score": task.ref_max_score,
        "requirements": ["textrl"],
    }
    info = {"source": "task", "task": task.name, "tier": tier, "epsilon": epsilon, "num_episodes": n, "seed": s, "chunk": CHUNK}
    try:
        return write_dataset(dataset_id, chunks(), observation_space(task), spaces.Discrete(task.vocab_size),
                             task.tokenizer, metadata, info)
    except FileExistsError:
        if dataset_dir(dataset_id).exists():  # built meanwhile by another process: same id, same data
            return load(dataset_id)
        raise
