"""Token generation as a Gymnasium environment: `TokenEnv` (one episode) and `TokenVectorEnv` (N at once).

The observation is the whole context so far, right-padded: {"input_ids": [max_length], "length": ()}.
An action is one token id; the task may answer with environment tokens (multi-turn), which
are appended as observations. Both envs run the task's batched transition, so they agree.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding

from textrl.tasks.base import Task


def observation_space(task: Task) -> spaces.Dict:
    """The observation space of a task's envs."""
    return spaces.Dict({
        "input_ids": spaces.Box(0, task.vocab_size - 1, shape=(task.max_length,), dtype=task.obs_dtype),
        "length": spaces.Box(0, task.max_length, shape=(), dtype=np.int32),
    })


class _Episodes:
    """N episodes' token buffers, lengths and task state: the core both envs share."""

    def __init__(self, task: Task, n: int) -> None:
        self.task = task
        self.ids = np.full((n, task.max_length), task.pad_id, dtype=task.obs_dtype)
        self.length = np.zeros(n, dtype=np.int32)
        self.prompt_length = np.zeros(n, dtype=np.int32)
        self.state: dict[str, np.ndarray] = {}

    def reset(self, rows: np.ndarray, prompts: list[list[int]], rngs: list[np.random.Generator],
              given: bool = False) -> None:
        """Start new episodes in `rows` from `prompts`; `given` prompts (the user's) are checked first."""
        for p in prompts if given else ():
            if not 1 <= len(p) <= self.task.max_length:
                raise ValueError(f"a prompt must hold 1 to {self.task.max_length} tokens, got {len(p)}")
            self.task.check_prompt(p)
        self.ids[rows] = self.task.pad_id
        for r, p in zip(rows, prompts):
            self.ids[r, :len(p)] = p
        self.length[rows] = self.prompt_length[rows] = [len(p) for p in prompts]
        fresh = self.task.initial_state(prompts, rngs)
        if not self.state:
            self.state = {k: np.zeros((len(self.length),) + v.shape[1:], v.dtype) for k, v in fresh.items()}
        for k, v in fresh.items():
            self.state[k][rows] = v

    def step(self, actions: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Append `actions` (and the task's responses) where `active`; rewards, terminated, truncated."""
        out = self.task.transition(self.state, actions, active)
        rows = np.flatnonzero(active)
        resp = out.response[rows]
        valid = resp >= 0
        end = self.length[rows] + 1 + valid.sum(1)
        if (end > self.task.max_length).any():
            raise RuntimeError(f"task {self.task.name} overflowed max_length {self.task.max_length}")
        self.ids[rows, self.length[rows]] = actions[rows]
        pos = self.length[rows, None] + 1 + np.arange(resp.shape[1])
        row_idx = np.broadcast_to(rows[:, None], pos.shape)
        self.ids[row_idx[valid], pos[valid]] = resp[valid]
        self.length[rows] = end
        return out.reward, out.terminated, out.truncated

    def obs(self, r: int) -> dict[str, np.ndarray]:
        return {"input_ids": self.ids[r].copy(), "length": np.asarray(self.length[r], dtype=np.int32)}

    def batch_obs(self) -> dict[str, np.ndarray]:
        return {"input_ids": self.ids.copy(), "length": self.length.copy()}


def _prompt_from_options(task: Task, options: dict[str, Any] | None) -> list[int] | None:
    """The prompt given in reset options (a string of tokens or a list of ids), if any."""
    if not options or options.get("prompt") is None:
        return None
    prompt = options["prompt"]
    if isinstance(prompt, str):
        return task.encode(prompt)
    if isinstance(prompt, np.ndarray):
        prompt = prompt.tolist()
    if not isinstance(prompt, (list, tuple)) or not all(
            isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_)) for i in prompt):
        raise TypeError(f"a prompt is a string of tokens or a list of int token ids, got {prompt!r}")
    ids = [int(i) for i in prompt]
    bad = [i for i in ids if not 0 <= i < task.vocab_size]
    if bad:
        raise ValueError(f"prompt token ids {bad} are outside the vocabulary [0, {task.vocab_size})")
    return ids


def _resolve_task(task: Task | str, task_kwargs: dict[str, Any]) -> Task:
    """The task itself, or the one named (with `task_kwargs`); kwargs next to a Task object are an error."""
    if isinstance(task, str):
        from textrl.tasks import get_task

        return get_task(task, **task_kwargs)
    if not isinstance(task, Task):
        raise TypeError(f"task must be a Task or a task name/env id, got {type(task).__name__}")
    if task_kwargs:
        raise TypeError(f"task options {sorted(task_kwargs)} given with a Task object: build the task with them "
                        "instead (e.g. get_task(name, **options))")
    return task


def _check_action(action: Any, space: spaces.Discrete) -> int:
    """The action as an int, or a clear error naming the action and the space."""
    if isinstance(action, np.ndarray) and action.shape == () and np.issubdtype(action.dtype, np.integer):
        action = action.item()
    if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
        raise TypeError(
            f"action {action!r} of type {type(action).__name__} is not a token id: the action space is {space}; "
            "pass an int (cast model outputs with int(...))"
        )
    if not 0 <= int(action) < space.n:
        raise ValueError(f"action {int(action)} is outside the action space {space} (token ids 0..{space.n - 1})")
    return int(action)


class TokenEnv(gym.Env):
    """One generation episode of a task: `reset` draws a prompt, `step(token_id)` appends a token."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"]}

    def __init__(self, task: Task | str, render_mode: str | None = None, **task_kwargs: Any) -> None:
        task = _resolve_task(task, task_kwargs)
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.task = task
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(task.vocab_size)
        self.observation_space = observation_space(task)
        self._ep = _Episodes(task, 1)
        self._done = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode from `options["prompt"]` (a token string or ids) or a prompt drawn from the task."""
        super().reset(seed=seed)
        prompt = _prompt_from_options(self.task, options)
        given = prompt is not None
        if not given:
            prompt = self.task.sample_prompt(self.np_random)
        self._ep.reset(np.array([0]), [prompt], [self.np_random], given)
        self._done = False
        return self._ep.obs(0), self._info()

    def step(self, action: Any):
        """Append the token `action` (and any task response); Gymnasium 1.x five-tuple."""
        if self._done:
            raise RuntimeError("step() called after the episode ended: call reset() first")
        a = _check_action(action, self.action_space)
        reward, terminated, truncated = self._ep.step(np.array([a]), np.array([True]))
        self._done = bool(terminated[0] or truncated[0])
        return self._ep.obs(0), float(reward[0]), bool(terminated[0]), bool(truncated[0]), self._info()

    def _info(self) -> dict[str, Any]:
        ep = self._ep
        return {"prompt": self.task.decode(ep.ids[0, :ep.prompt_length[0]]),
                "text": self.task.decode(ep.ids[0, :ep.length[0]])}

    def render(self) -> str | None:
        """The text so far in "ansi" mode, else None."""
        if self.render_mode == "ansi":
            return self.task.decode(self._ep.ids[0, :self._ep.length[0]])
        return None


class TokenVectorEnv(gym.vector.VectorEnv):
    """N episodes of a task stepped together with numpy arrays; autoreset on the step after a done."""

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, task: Task | str, num_envs: int, **task_kwargs: Any) -> None:
        task = _resolve_task(task, task_kwargs)
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        self.task = task
        self.num_envs = num_envs
        self.single_action_space = spaces.Discrete(task.vocab_size)
        self.single_observation_space = observation_space(task)
        self.action_space = spaces.MultiDiscrete(np.full(num_envs, task.vocab_size))
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self._ep = _Episodes(task, num_envs)
        self._rngs = [seeding.np_random(None)[0] for _ in range(num_envs)]
        self._needs_reset = np.ones(num_envs, dtype=bool)
        self._started = False

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Reset every env; `seed` is one int (env i gets seed + i) or a list; `options["prompts"]` one per env."""
        if seed is not None:
            seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed + i for i in range(self.num_envs)]
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset(seed=...) needs one seed per env ({self.num_envs}), got {len(seeds)}")
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
        prompts = options.get("prompts") if options else None
        if prompts is not None and len(prompts) != self.num_envs:
            raise ValueError(f"options['prompts'] must hold {self.num_envs} prompts, got {len(prompts)}")
        rows = np.arange(self.num_envs)
        if prompts is not None:
            self._ep.reset(rows, [_prompt_from_options(self.task, {"prompt": p}) for p in prompts], self._rngs, True)
        else:
            self._ep.reset(rows, [self.task.sample_prompt(self._rngs[r]) for r in rows], self._rngs)
        self._needs_reset[:] = False
        self._started = True
        return self._ep.batch_obs(), {}

    def step(self, actions: Any):
        """Step every env by its token; envs that ended on the previous step reset instead (action ignored)."""
        if not self._started:
            raise RuntimeError("step() called before reset(): call reset() first")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(
                f"actions must be an integer array of shape ({self.num_envs},), got {actions.dtype} {actions.shape}"
            )
        bad = (actions < 0) | (actions >= self.task.vocab_size)
        if bad.any():
            raise ValueError(f"actions {actions[bad].tolist()} are outside the action space Discrete({self.task.vocab_size})")
        resetting = self._needs_reset.copy()
        active = ~resetting
        reward = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        if active.any():
            r, te, tr = self._ep.step(actions, active)
            reward[active], terminated[active], truncated[active] = r[active], te[active], tr[active]
        if resetting.any():
            rows = np.flatnonzero(resetting)
            self._ep.reset(rows, [self.task.sample_prompt(self._rngs[i]) for i in rows], [self._rngs[i] for i in rows])
        self._needs_reset = terminated | truncated
        return self._ep.batch_obs(), reward, terminated, truncated, {}
