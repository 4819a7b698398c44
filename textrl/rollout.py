"""Run a batched policy through a task's vector env: whole episodes for datasets, scores for evaluation.

Each of the `num_envs` sub-envs is given a fixed share of the episodes, so long episodes are
not under-counted, and everything is deterministic in the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from textrl.tasks.base import Policy, Task


@dataclass
class Episode:
    """One episode: T+1 observations (the reset one first), T actions, rewards and end flags."""

    observations: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    prompt: str = ""
    text: str = ""


@dataclass
class EvalResult:
    """Per-episode returns and lengths of an evaluation, with the task's reference scores."""

    returns: np.ndarray
    lengths: np.ndarray
    ref_min_score: float
    ref_max_score: float

    @property
    def mean_return(self) -> float:
        return float(self.returns.mean())

    @property
    def normalized_score(self) -> float:
        """100 * (R - ref_min) / (ref_max - ref_min) of the mean return."""
        return 100.0 * (self.mean_return - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)


def _run(task: Task, policy: Policy, num_episodes: int, seed: int, num_envs: int, record: bool,
         progress: bool, desc: str) -> tuple[np.ndarray, np.ndarray, list[Episode]]:
    """Step the vector env until every sub-env has played its share of `num_episodes`."""
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be at least 1, got {num_episodes}")
    num_envs = max(1, min(num_envs, num_episodes))
    quota = np.full(num_envs, num_episodes // num_envs) + (np.arange(num_envs) < num_episodes % num_envs)
    offsets = np.concatenate([[0], np.cumsum(quota)[:-1]])  # index of each sub-env's first episode
    played = np.zeros(num_envs, dtype=np.int64)
    returns = np.zeros(num_episodes)
    lengths = np.zeros(num_episodes, dtype=np.int64)
    steps: list[list[tuple]] = [[] for _ in range(num_episodes)]
    first_obs: list[dict] = [{} for _ in range(num_episodes)]
    env = task.make_vector_env(num_envs)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    if record:
        for i in range(num_envs):
            first_obs[offsets[i]] = {k: v[i].copy() for k, v in obs.items()}
    resetting = np.zeros(num_envs, dtype=bool)  # NEXT_STEP autoreset: these ignore their action
    bar = tqdm(total=num_episodes, desc=desc, unit="ep", disable=not progress)
    while (played < quota).any():
        actions = np.asarray(policy(obs, rng), dtype=np.int64)
        obs, reward, terminated, truncated, _ = env.step(actions)
        playing = played < quota
        live = ~resetting & playing
        ep = offsets + np.minimum(played, quota - 1)
        returns[ep[live]] += reward[live]
        lengths[ep[live]] += 1
        if record:
            for i in np.flatnonzero(live):
                steps[ep[i]].append((actions[i], reward[i], terminated[i], truncated[i],
                                     {k: v[i].copy() for k, v in obs.items()}))
            for i in np.flatnonzero(resetting & playing):
                first_obs[ep[i]] = {k: v[i].copy() for k, v in obs.items()}
        done = live & (terminated | truncated)
        played += done
        bar.update(int(done.sum()))
        resetting = terminated | truncated
    bar.close()
    episodes = [_episode(task, first_obs[e], steps[e]) for e in range(num_episodes)] if record else []
    return returns, lengths, episodes


def _episode(task: Task, first: dict[str, np.ndarray], steps: list[tuple]) -> Episode:
    """Stack one episode's recorded steps into arrays."""
    actions, rewards, terms, truncs, obs = zip(*steps)
    observations = {k: np.stack([first[k], *(o[k] for o in obs)]) for k in first}
    last = observations["input_ids"][-1][: observations["length"][-1]]
    prompt = observations["input_ids"][0][: observations["length"][0]]
    return Episode(observations, np.array(actions, dtype=np.int64), np.array(rewards, dtype=np.float64),
                   np.array(terms, dtype=bool), np.array(truncs, dtype=bool), task.decode(prompt), task.decode(last))


def collect_episodes(task: Task, policy: Policy, num_episodes: int, seed: int, num_envs: int = 256,
                     progress: bool = False) -> list[Episode]:
    """Whole episodes of `policy` (observations, actions, rewards, end flags, text), deterministic in `seed`."""
    return _run(task, policy, num_episodes, seed, num_envs, True, progress, f"collect {task.name}")[2]


def evaluate(policy: Policy, task: Task, num_episodes: int = 256, seed: int = 0, num_envs: int = 256,
             progress: bool = False) -> EvalResult:
    """Returns and lengths of `policy` over `num_episodes` episodes, with the normalised score."""
    returns, lengths, _ = _run(task, policy, num_episodes, seed, num_envs, False, progress, f"evaluate {task.name}")
    return EvalResult(returns, lengths, task.ref_min_score, task.ref_max_score)
