"""Task datasets by id, `textrl/<task>/<tier>-v1`, built on first use from the task's behaviour policy.

A tier is an epsilon-mixture of the task's optimal policy and its exploration policy: at each
step the exploration policy's token with probability epsilon, else the optimal one
(`Task.tiers`: random 1.0, medium 0.5, mixed 0.25, expert 0.0). RandomWalks explores by a
uniform step along an existing edge, so its random tier is trlx's behaviour data; Maze
explores uniformly over the vocabulary. A tier id has `DEFAULT_EPISODES` episodes (1000, the
size of trlx's RandomWalks data) drawn with seed `DEFAULT_SEED`, so an id means the same data
everywhere. Another size or seed is part of the id: `-nN` and `-sS` before the version, e.g.
`textrl/randomwalks/random-n40-v1` (40 episodes) or `...random-n40-s3-v1`; asking
`make_dataset('textrl/randomwalks/random-v1', num_episodes=40)` gives that id. So the plain id
never returns a small build, and two builds of one id always mean the same data.
Each task has one dataset version, `Task.dataset_version` (1, or 2 for Endgames, whose env
changed); older versions are refused with the reason they were retired
(`Task.retired_dataset_versions`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import minari
from gymnasium import spaces
from tqdm.auto import tqdm

from textrl.data.store import (
    build_info,
    check_dataset_id,
    clean_staging_leftovers,
    dataset_dir,
    env_id_of,
    folder_of,
    load,
)
from textrl.data.writer import write_dataset
from textrl.env import observation_space
from textrl.rollout import Episode, collect_episodes
from textrl.tasks import TASKS, get_task

DEFAULT_EPISODES = 1000
DEFAULT_SEED = 0
CHUNK = 2000  # episodes collected and written at a time (part of what an id means: do not change)
_TASK_ID = re.compile(r"textrl/(?P<task>[a-z_]+)/(?P<tier>[a-z]+)(?:-n(?P<n>\d+))?(?:-s(?P<seed>\d+))?"
                      r"-v(?P<version>\d+)")


def _match(dataset_id: str) -> re.Match:
    """The parts of a task dataset id, with a clear error for anything else."""
    check_dataset_id(dataset_id)
    m = _TASK_ID.fullmatch(dataset_id)
    if not m or m["task"] not in TASKS:
        raise ValueError(f"{dataset_id!r} is not a task dataset id: expected textrl/<task>/<tier>-vN with task one "
                         f"of {', '.join(TASKS)}")
    tiers = TASKS[m["task"]].tiers
    if m["tier"] not in tiers:
        raise ValueError(f"{dataset_id!r}: unknown tier {m['tier']!r} for {m['task']}; tiers: {', '.join(tiers)}")
    version, cls = int(m["version"]), TASKS[m["task"]]
    if version != cls.dataset_version:
        why = cls.retired_dataset_versions.get(version,
                                               f"does not exist ({m['task']} datasets are at -v{cls.dataset_version})")
        raise ValueError(f"{dataset_id!r}: -v{version} {why}; use {task_dataset_id(m['task'], m['tier'])}")
    return m


def task_dataset_id(task: str, tier: str) -> str:
    """The current id of a task's tier, e.g. `textrl/maze/mixed-v1`."""
    return f"textrl/{task}/{tier}-v{TASKS[task].dataset_version}"


def parse_task_dataset_id(dataset_id: str) -> tuple[str, str]:
    """(task, tier) of a task dataset id at its task's current version, with a clear error for anything else."""
    m = _match(dataset_id)
    return m["task"], m["tier"]


def sized_dataset_id(dataset_id: str, num_episodes: int | None = None, seed: int | None = None) -> str:
    """The id of a task dataset of this size and seed: `-nN`/`-sS` appear only for non-default values.

    A size or seed given both in the id and as an argument must agree.
    """
    m = _match(dataset_id)
    for name, given, in_id in (("num_episodes", num_episodes, m["n"]), ("seed", seed, m["seed"])):
        if given is not None and in_id is not None and int(in_id) != given:
            raise ValueError(f"{dataset_id!r} names {name} {int(in_id)} but {name}={given} was asked: "
                             "drop one of them")
    n = num_episodes if num_episodes is not None else int(m["n"] or DEFAULT_EPISODES)
    s = seed if seed is not None else int(m["seed"] or DEFAULT_SEED)
    if n < 1:
        raise ValueError(f"num_episodes must be a positive int, got {n!r}")
    size = (f"-n{n}" if n != DEFAULT_EPISODES else "") + (f"-s{s}" if s != DEFAULT_SEED else "")
    return f"textrl/{m['task']}/{m['tier']}{size}-v{m['version']}"


def task_dataset_ids() -> list[str]:
    """Every task dataset id that `make_dataset` can build."""
    return [task_dataset_id(name, tier) for name, cls in TASKS.items() for tier in cls.tiers]


def _check_existing(dataset: minari.MinariDataset, wanted: dict[str, Any]) -> minari.MinariDataset:
    """The dataset already under the id, or an error naming what differs from the data this build makes.

    Catches a dataset built elsewhere under a task id, one made by an older textrl at another size
    or for an env id since retired, and another process that finished the same id first with other
    settings. `wanted` is the build info this id means plus "env", the env id it evaluates on.
    """
    info = {**build_info(dataset), "env": env_id_of(dataset)}
    clash = {k: (v, info.get(k)) for k, v in wanted.items() if info.get(k) != v}
    if clash:
        detail = ", ".join(f"{k} {want} (built with {have})" for k, (want, have) in clash.items())
        raise ValueError(f"{dataset.spec.dataset_id} already exists with other data than this id means: {detail}; "
                         f"delete {folder_of(dataset)} to rebuild it, or set MINARI_DATASETS_PATH to another folder")
    return dataset


def make_dataset(dataset_id: str, num_episodes: int | None = None, seed: int | None = None,
                 progress: bool = True) -> minari.MinariDataset:
    """The local dataset `dataset_id` (e.g. 'textrl/randomwalks/random-v1'), built first if missing.

    A non-default `num_episodes` or `seed` selects the id that names them (`...random-n40-v1`),
    so the plain id always holds the default size. The build is atomic: until it completes
    nothing loads under the id, and an interrupted build can simply be run again (staging
    folders left by killed builds are removed here).
    """
    if num_episodes is not None and (not isinstance(num_episodes, int) or num_episodes < 1):
        raise ValueError(f"num_episodes must be a positive int, got {num_episodes!r}")
    if seed is not None and (not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    dataset_id = sized_dataset_id(dataset_id, num_episodes, seed)
    m = _match(dataset_id)
    task, tier = get_task(m["task"]), m["tier"]
    n, s = int(m["n"] or DEFAULT_EPISODES), int(m["seed"] or DEFAULT_SEED)
    epsilon = task.tiers[tier]
    info = {"source": "task", "task": task.name, "tier": tier, "epsilon": epsilon, "num_episodes": n, "seed": s,
            "chunk": CHUNK}
    clean_staging_leftovers()
    if dataset_dir(dataset_id).exists():
        return _check_existing(load(dataset_id), {**info, "env": task.env_id})
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
    try:
        return write_dataset(dataset_id, chunks(), observation_space(task), spaces.Discrete(task.vocab_size),
                             task.tokenizer, metadata, info)
    except FileExistsError:
        if dataset_dir(dataset_id).exists():  # built meanwhile by another process: check it is what was asked
            return _check_existing(load(dataset_id), {**info, "env": task.env_id})
        raise
