"""Your own dataset as a benchmark cell: `textrl bench --dataset ID` on data made with
`from_samples(..., env=...)`.

The cell is (the env id the dataset records, the dataset id), where a task cell is (task, tier). Its
env (a `TextEnv` with your reward function) is registered from the dataset's record in every process
that needs it (`textrl.dataset_env`), its agents train with `text_config` (a tiny GPT-2 sized to the
dataset's tokenizer), and its scores are mean returns in your reward function's units: no reference
scores are known for a reward function, so nothing is normalised.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

import gymnasium

from textrl.tasks import Task

# textrl.data and the presets need torch: imported in the functions, so `textrl bench --help` stays fast

TOLERANCE = 0.05
"""The sanity gate of a dataset cell: BC within this fraction of the data's reward range (ref_max - ref_min,
by default the lowest and highest reward in the data) of the data's own mean return."""


def dataset_cell(dataset_id: str) -> tuple[str, str]:
    """(env id, dataset id) of a dataset, after refusing what cannot be benchmarked: an unknown dataset, a task
    dataset, a dataset without an env, an env that cannot be made here or that is not a token env."""
    from textrl.data import dataset_env, load, parse_task_dataset_id

    if not isinstance(dataset_id, str):
        raise ValueError(f"--dataset {dataset_id!r}: give a local dataset id (namespace/name-vN)")
    try:
        task, tier = parse_task_dataset_id(dataset_id)
    except ValueError:
        pass  # not a task dataset
    else:
        raise ValueError(f"--dataset {dataset_id}: a task dataset is benchmarked as its task; use --tasks {task} "
                         f"--tiers {tier}")
    try:
        dataset = load(dataset_id)
    except FileNotFoundError as e:
        raise ValueError(f"--dataset {dataset_id}: {e}") from None
    env_id = dataset_env(dataset)  # EnvUnavailableError (a ValueError) says why it cannot be made
    if env_id is None:
        raise ValueError(f"--dataset {dataset_id}: the dataset names no env to evaluate agents in; make it with "
                         "from_samples(..., env='ns/MyText-v0'), the id of a TextEnv registered with your prompts and "
                         "reward function")
    dataset_task(dataset_id)
    return env_id, dataset_id


@functools.cache
def dataset_task(dataset_id: str) -> Task:
    """The task (batched dynamics) of the env a dataset records, made in this process from its record if need be."""
    from textrl.data import dataset_env

    env_id = dataset_env(dataset_id)
    env = gymnasium.make(env_id)
    task = getattr(env.unwrapped, "task", None)
    env.close()
    if not isinstance(task, Task):
        raise ValueError(f"dataset {dataset_id} names env {env_id!r}, which is not a textrl token env (a TextEnv): "
                         "the benchmark rolls agents out through a TextEnv's batched dynamics")
    return task


def dataset_preset(dataset_id: str, method: str, **train: Any) -> Any:
    """`text_config` for a dataset (a TRLConfig): a tiny GPT-2 over its tokenizer, as long as its episodes and
    its env's."""
    from textrl.data import load, load_tokenizer
    from textrl.presets import text_config

    dataset = load(dataset_id)
    width = max(int(dataset.observation_space["input_ids"].shape[0]), dataset_task(dataset_id).max_length)
    return text_config(method, load_tokenizer(dataset), width, **train)


def dataset_fingerprint(dataset_id: str) -> str:
    """A digest of the dataset's content and its env's record: a dataset made again under the same id (with
    `overwrite=True`) gets new runs."""
    from textrl.data import build_info, load
    from textrl.data.cache import content_key

    dataset = load(dataset_id)
    info = json.dumps(build_info(dataset), sort_keys=True, default=repr)
    return hashlib.sha256(f"{content_key(dataset, {})}:{info}".encode()).hexdigest()[:16]


def gate_tolerance(dataset_id: str) -> float | None:
    """How far below the data's mean return BC may end and still pass the sanity gate (None: the dataset has
    no reward range, as when all its rewards are equal)."""
    from textrl.data import load

    meta = load(dataset_id).storage.metadata
    lo, hi = meta.get("ref_min_score"), meta.get("ref_max_score")
    return None if lo is None or hi is None else TOLERANCE * (float(hi) - float(lo))
