"""Run a batched policy through a task's vector env: whole episodes for datasets, scores for evaluation.

Each of the `num_envs` sub-envs is given a fixed share of the episodes, so long episodes are
not under-counted, and everything is deterministic in the seed (for a given `num_envs`).
Steps are recorded as whole batches and cut into episodes once at the end, so collection does
no per-environment Python work per step.

The policy is shown each step's observations plus `obs["ignored"]` (bool [N]): the rows whose
action will go unused, because the env resets that row at this step (Gymnasium's next-step
autoreset) or the sub-env has played its share of the episodes. A policy may skip their work
and return any valid token there (the agents' context cache runs nothing for them). A sub-env
past its share restarts from a spare prompt instead of drawing one (those episodes go unused);
the episodes of the share are those its own seeded draws give.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from textrl.env import TokenVectorEnv
from textrl.tasks.base import Policy, Task, normalized_score

PROGRESS_MIN_EPISODES = 10_000
"""With `progress=None`, a progress bar is shown for runs of at least this many episodes."""


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
        """The mean undiscounted episode return."""
        return float(self.returns.mean())

    @property
    def normalized_score(self) -> float:
        """The normalised score (`textrl.tasks.base.normalized_score`) of the mean return."""
        return normalized_score(self.mean_return, self.ref_min_score, self.ref_max_score)


class _Trace:
    """Every batched step of a rollout, kept as whole arrays; cut into episodes once at the end."""

    def __init__(self, obs: dict[str, np.ndarray], first_episodes: np.ndarray) -> None:
        self.ids, self.lengths = [obs["input_ids"]], [obs["length"]]  # observation batch k
        self.starts = [(first_episodes, np.zeros(len(first_episodes), np.int64), np.arange(len(first_episodes)))]
        self.steps: list[tuple[np.ndarray, ...]] = []  # (episode, k, env, action, reward, terminated, truncated)

    def add(self, obs: dict[str, np.ndarray], episode: np.ndarray, live: np.ndarray, starting: np.ndarray,
            actions: np.ndarray, reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> None:
        """Record one batched step: `live` envs took a step of `episode`; `starting` envs reset into one."""
        k = len(self.ids)
        self.ids.append(obs["input_ids"])
        self.lengths.append(obs["length"])
        rows = np.flatnonzero(live)
        self.steps.append((episode[rows], np.full(len(rows), k), rows, actions[rows], reward[rows],
                           terminated[rows], truncated[rows]))
        rows = np.flatnonzero(starting)
        self.starts.append((episode[rows], np.full(len(rows), k), rows))

    def episodes(self, task: Task, num_episodes: int) -> list[Episode]:
        """The recorded steps as `num_episodes` episodes, in episode order."""
        ids, lengths = np.stack(self.ids), np.stack(self.lengths)  # [K, N, L], [K, N]
        first_ep, first_k, first_env = (np.concatenate(c) for c in zip(*self.starts))
        first_ids = np.empty((num_episodes, ids.shape[2]), ids.dtype)
        first_len = np.empty(num_episodes, lengths.dtype)
        first_ids[first_ep], first_len[first_ep] = ids[first_k, first_env], lengths[first_k, first_env]
        episode, k, env, actions, rewards, terms, truncs = (np.concatenate(c) for c in zip(*self.steps))
        order = np.argsort(episode, kind="stable")  # by episode, then time
        k, env = k[order], env[order]
        step_ids, step_len = ids[k, env], lengths[k, env]
        actions, rewards = actions[order].astype(np.int64), rewards[order].astype(np.float64)
        terms, truncs = terms[order].astype(bool), truncs[order].astype(bool)
        bounds = np.concatenate([[0], np.cumsum(np.bincount(episode, minlength=num_episodes))])
        out = []
        for e in range(num_episodes):
            s, t = bounds[e], bounds[e + 1]
            obs = {"input_ids": np.concatenate([first_ids[e:e + 1], step_ids[s:t]]),
                   "length": np.concatenate([first_len[e:e + 1], step_len[s:t]])}
            out.append(Episode(obs, actions[s:t], rewards[s:t], terms[s:t], truncs[s:t],
                               task.decode(first_ids[e, :first_len[e]]), task.decode(step_ids[t - 1, :step_len[t - 1]])))
        return out


def _run(task: Task, policy: Policy, num_episodes: int, seed: int, num_envs: int, record: bool,
         progress: bool | None, desc: str) -> tuple[np.ndarray, np.ndarray, list[Episode]]:
    """Step the vector env until every sub-env has played its share of `num_episodes`."""
    for name, value in (("num_episodes", num_episodes), ("num_envs", num_envs)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    starts = None if record else task.evaluation_prompts()
    if starts is not None:
        num_episodes, starts = _equal_starts(starts, num_episodes, seed)
    num_envs = min(num_envs, num_episodes)
    quota = np.full(num_envs, num_episodes // num_envs) + (np.arange(num_envs) < num_episodes % num_envs)
    offsets = np.concatenate([[0], np.cumsum(quota)[:-1]])  # index of each sub-env's first episode
    played = np.zeros(num_envs, dtype=np.int64)
    returns = np.zeros(num_episodes)
    lengths = np.zeros(num_episodes, dtype=np.int64)
    upcoming = None if starts is None else [iter(starts[o:o + q]) for o, q in zip(offsets, quota)]
    spare: list[list[int]] = [] if starts is None else [starts[0]]  # any valid prompt

    def prompt_fn(i: int) -> list[int] | None:
        """Sub-env i's next prompt: its next start (episodes offsets[i], offsets[i] + 1, ... in order) or the
        task's draw (None); past its share a spare one, without a draw (those episodes go unused)."""
        if played[i] >= quota[i]:
            return spare[0]
        return None if upcoming is None else next(upcoming[i])

    env = TokenVectorEnv(task, num_envs, prompt_fn=prompt_fn)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    if not spare:
        spare.append(obs["input_ids"][0, :obs["length"][0]].tolist())
    trace = _Trace(obs, offsets) if record else None
    resetting = np.zeros(num_envs, dtype=bool)  # NEXT_STEP autoreset: these ignore their action
    ignored = resetting.copy()  # the rows whose action goes unused: resetting, or past their share
    show = num_episodes >= PROGRESS_MIN_EPISODES if progress is None else progress
    with tqdm(total=num_episodes, desc=desc, unit="ep", disable=not show) as bar:
        while (played < quota).any():
            actions = np.asarray(policy({**obs, "ignored": ignored}, rng))
            if actions.shape != (num_envs,):
                raise ValueError(f"policy {getattr(policy, '__name__', policy)!r} returned actions of shape "
                                 f"{actions.shape} for {num_envs} observations: return one token id per row")
            obs, reward, terminated, truncated, _ = env.step(actions)
            playing = played < quota
            live = ~resetting & playing
            ep = offsets + np.minimum(played, quota - 1)
            returns[ep[live]] += reward[live]
            lengths[ep[live]] += 1
            if trace is not None:
                trace.add(obs, ep, live, resetting & playing, actions, reward, terminated, truncated)
            done = live & (terminated | truncated)
            played += done
            bar.update(int(done.sum()))
            resetting = terminated | truncated
            ignored = resetting | (played >= quota)
    env.close()
    return returns, lengths, trace.episodes(task, num_episodes) if trace is not None else []


def _equal_starts(starts: list[list[int]], num_episodes: int, seed: int) -> tuple[int, list[list[int]]]:
    """(episodes, the prompt of each): every start equally often, `num_episodes` rounded up to a multiple of
    their number; with fewer episodes than starts, that many distinct starts drawn with `seed`."""
    if num_episodes < len(starts):
        chosen = np.random.default_rng(seed).permutation(len(starts))[:num_episodes]
        return num_episodes, [starts[i] for i in chosen]
    rounds = -(-num_episodes // len(starts))
    return rounds * len(starts), starts * rounds


def collect_episodes(task: Task, policy: Policy, num_episodes: int, seed: int, num_envs: int = 256,
                     progress: bool | None = None) -> list[Episode]:
    """Whole episodes of `policy` (observations, actions, rewards, end flags, text), deterministic in `seed`.

    `progress`: show a tqdm bar (None: only for runs of at least PROGRESS_MIN_EPISODES episodes).
    """
    return _run(task, policy, num_episodes, seed, num_envs, True, progress, f"collect {task.name}")[2]


def evaluate(policy: Policy, task: Task, num_episodes: int = 256, seed: int = 0, num_envs: int = 256,
             progress: bool | None = None) -> EvalResult:
    """Returns and lengths of `policy` over `num_episodes` episodes, with the normalised score.

    A task with a finite set of starts (`task.evaluation_prompts()`, e.g. the maze's 25) plays each
    equally often: `num_episodes` is rounded up to a multiple of their number (with fewer episodes
    than starts, that many distinct starts are drawn with `seed`)."""
    returns, lengths, _ = _run(task, policy, num_episodes, seed, num_envs, False, progress, f"evaluate {task.name}")
    return EvalResult(returns, lengths, task.ref_min_score, task.ref_max_score)
