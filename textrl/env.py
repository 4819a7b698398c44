"""Token generation as a Gymnasium environment: `TokenEnv` (one episode) and `TokenVectorEnv` (N at once)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding

from textrl.tasks import get_task
from textrl.tasks.base import Task


def observation_space(task: Task) -> spaces.Dict:
    """The observation space of a task's envs."""
    return spaces.Dict({
        "input_ids": spaces.Box(0, task.vocab_size - 1, shape=(task.max_length,), dtype=task.obs_dtype),
        "length": spaces.Box(0, task.max_length, shape=(), dtype=np.int32),
    })


class _EpisodeBuffers:
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
    """One generation episode of a task: `reset` draws a prompt, `step(token_id)` appends a token.

    ## Description
    The agent writes one token per step after a prompt; a multi-turn task answers with
    environment tokens, appended to the context as observations (never actions). The dynamics
    are the task's batched `transition`, the code `TokenVectorEnv` and dataset collection run
    too. Each task class in `textrl.tasks.TASKS` (RandomWalks, Maze, MazePO, Brackets, Endgames,
    EndgamesStockfish, Wordle) documents its own spaces, rewards, ends and references; this gives
    what every task shares.

    ## Action Space
    `Discrete(task.vocab_size)`: a token id, an int or a 0-d integer array. Anything else raises
    an error naming the action and the space, and leaves the episode as it was.

    ## Observation Space
    `Dict(input_ids=Box(0, vocab_size - 1, (max_length,), dtype), length=Box(0, max_length, (), int32))`:
    the whole context so far, right-padded with the pad id (`input_ids[:length]` is the context),
    so the MDP is Markov; `dtype` is the smallest unsigned integer type that holds the vocabulary.

    ## Rewards
    The task's, one float per step.

    ## Starting State
    `reset(seed=..., options={"prompt": ...})` starts from the prompt given (a string of tokens or
    a list of ids, checked by the task) or draws one from the task with the env's seeded rng.
    `info` holds the text of the prompt and of the whole context (`"prompt"`, `"text"`).

    ## Episode End
    `terminated=True` at every end that belongs to the task: a terminal state (goal, failure,
    `<eos>`) and any limit that is part of the task (a budget that is scored or inside the
    reference scores, and whose remainder the context length shows). Nothing follows such an
    end, so a learner's target there is the reward alone (packed `notdone` = 0).
    `truncated=True` only for limits from outside the task, such as gymnasium's TimeLimit
    (`gymnasium.make(env_id, max_episode_steps=N)`) or a context window: the episode could go
    on, so a learner bootstraps from V of the last state (`notdone` = 1). The built-in tasks
    never truncate. `step` after an end raises until `reset`.

    ## Arguments
    `task`: a `Task`, or a short name or env id built with `**task_kwargs` (what
    `gymnasium.make(env_id, **kwargs)` passes); `render_mode`: None or `"ansi"` (`render()`
    returns the text so far).

    ## Reference scores
    `task.ref_min_score` (the uniform policy over the vocabulary) and `task.ref_max_score` (the
    optimal policy), exact mean returns; each task class gives its values. Normalised score =
    100 * (R - ref_min) / (ref_max - ref_min).

    ## Version History
    - Task datasets -v1: a task's own limits end with `terminated`; they were truncations in -v0.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"]}

    def __init__(self, task: Task | str, render_mode: str | None = None, **task_kwargs: Any) -> None:
        task = _resolve_task(task, task_kwargs)
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.task = task
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(task.vocab_size)
        self.observation_space = observation_space(task)
        self._ep = _EpisodeBuffers(task, 1)
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

    def encode_action(self, text: str) -> list[int]:
        """The actions that write `text`, one `step` each (`env.unwrapped.encode_action("crane")`): the task's."""
        return self.task.encode_action(text)

    def decode_action(self, actions: Any) -> str:
        """The text of an action or a list of them (`env.unwrapped.decode_action(id)`): the task's."""
        return self.task.decode_action(actions)

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
    """N episodes of a task stepped together with numpy arrays; autoreset on the step after a done.

    ## Description
    `TokenEnv`'s episodes, N at a time, with no Python loop per environment: what evaluation
    and dataset collection run.

    ## Action Space
    `MultiDiscrete([vocab_size] * num_envs)`: an integer array of shape `(num_envs,)`, one token
    per env (`single_action_space` is TokenEnv's).

    ## Observation Space
    TokenEnv's observation batched: `input_ids` `[num_envs, max_length]`, `length` `[num_envs]`.

    ## Rewards
    The task's, a float64 array `[num_envs]`.

    ## Starting State
    `reset(seed=s)` seeds env i with s + i (or takes a list of seeds, one per env);
    `options={"prompts": [...]}` gives one prompt per env, else each env draws its own.

    ## Episode End
    TokenEnv's flags, per env. Autoreset is gymnasium's NEXT_STEP mode: on the step after an
    env's episode ended it starts a new one, ignores that env's action and returns reward 0 and
    both flags False for it.

    ## Arguments
    `task` and `**task_kwargs` as TokenEnv; `num_envs` >= 1; `prompt_fn(i)`, if given, returns the
    prompt (token ids) of env i's next episode instead of the task's draw, or None for the task's draw
    (evaluation uses it to play a task's `evaluation_prompts` equally often, and to give a sub-env
    past its share of the episodes a prompt without a draw).

    ## Reference scores
    TokenEnv's (`task.ref_min_score`, `task.ref_max_score`).

    ## Version History
    As TokenEnv.
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, task: Task | str, num_envs: int, prompt_fn: Callable[[int], list[int] | None] | None = None,
                 **task_kwargs: Any) -> None:
        task = _resolve_task(task, task_kwargs)
        self._prompt_fn = prompt_fn
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        self.task = task
        self.num_envs = num_envs
        self.single_action_space = spaces.Discrete(task.vocab_size)
        self.single_observation_space = observation_space(task)
        self.action_space = spaces.MultiDiscrete(np.full(num_envs, task.vocab_size))
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self._ep = _EpisodeBuffers(task, num_envs)
        self._rngs: list[np.random.Generator] = []  # one per env, made at the first reset (seeded there, mostly)
        self._needs_reset = np.ones(num_envs, dtype=bool)
        self._started = False

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Reset every env; `seed` is one int (env i gets seed + i) or a list; `options["prompts"]` one per env."""
        if seed is not None:
            seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed + i for i in range(self.num_envs)]
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset(seed=...) needs one seed per env ({self.num_envs}), got {len(seeds)}")
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
        elif not self._rngs:
            self._rngs = [seeding.np_random(None)[0] for _ in range(self.num_envs)]
        prompts = options.get("prompts") if options else None
        if prompts is not None and len(prompts) != self.num_envs:
            raise ValueError(f"options['prompts'] must hold {self.num_envs} prompts, got {len(prompts)}")
        rows = np.arange(self.num_envs)
        if prompts is not None:
            self._ep.reset(rows, [_prompt_from_options(self.task, {"prompt": p}) for p in prompts], self._rngs, True)
        else:
            self._ep.reset(rows, [self._next_prompt(r) for r in rows], self._rngs)
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
            self._ep.reset(rows, [self._next_prompt(i) for i in rows], [self._rngs[i] for i in rows])
        self._needs_reset = terminated | truncated
        return self._ep.batch_obs(), reward, terminated, truncated, {}

    def _next_prompt(self, row: int) -> list[int]:
        """The prompt of env `row`'s next episode: `prompt_fn`'s, or the task's draw."""
        prompt = self._prompt_fn(int(row)) if self._prompt_fn is not None else None
        return self.task.sample_prompt(self._rngs[row]) if prompt is None else prompt
