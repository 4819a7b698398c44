"""Your own text as a Gymnasium env: prompts, a reward function and a token budget over any tokenizer.

`TextTask` gives the batched dynamics (`TokenEnv`, `TokenVectorEnv`, evaluation and beta sweeps
run it like a built-in task); `TextEnv` is the single env that `gymnasium.make` builds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, Union

import numpy as np

from textrl.env import TokenEnv
from textrl.tasks.base import Task, Transition

PromptSource = Union[Sequence[str], Callable[[np.random.Generator], str]]
"""A list of prompt strings, or a sampler `sampler(rng) -> str` (rng: a numpy Generator)."""


class RewardFunctionError(RuntimeError):
    """The user's reward function raised: the message names the prompt and completion it was given."""


class TextTask(Task):
    """Token generation after a prompt, scored by `reward_fn(prompt, completion)` when the episode ends.

    The batched dynamics behind `TextEnv` (see its docstring for the spaces, rewards and ends).
    """

    name = "text"
    env_id = "textrl/Text-v0"
    tiers: dict[str, float] = {}

    def __init__(self, tokenizer: Any, prompts: PromptSource, reward_fn: Callable[..., Any],
                 max_new_tokens: int = 32, batched: bool = False, max_prompt_tokens: int | None = None,
                 ref_scores: tuple[float, float] = (0.0, 1.0), bos: bool = True) -> None:
        from textrl.data.samples import check_tokenizer

        check_tokenizer(tokenizer)
        if not callable(reward_fn):
            raise TypeError(f"reward_fn must be callable as reward_fn(prompt, completion) -> float, got "
                            f"{type(reward_fn).__name__}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1 (the token budget), got {max_new_tokens!r}")
        lo, hi = (float(v) for v in ref_scores)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"ref_scores must be two finite numbers (min, max) with min < max, got {ref_scores!r}")
        self.tokenizer = tokenizer
        self.reward_fn, self.batched, self.max_new_tokens = reward_fn, bool(batched), max_new_tokens
        self.ref_min_score, self.ref_max_score = lo, hi
        eos = tokenizer.eos_token_id
        self.prefix = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos] if bos else []
        if callable(prompts) and not isinstance(prompts, (str, list, tuple)):
            if max_prompt_tokens is None:
                raise ValueError("with a prompt sampler, give max_prompt_tokens (the longest prompt in tokens): the "
                                 "observation width is fixed up front")
            self.sampler, self.prompts = prompts, None
        else:
            if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts) or not len(prompts):
                raise TypeError("prompts must be a non-empty list of strings (\"\" for none) or a sampler "
                                "sampler(rng) -> str")
            self.sampler, self.prompts = None, [self.encode(p) for p in prompts]
            longest = max(len(p) for p in self.prompts) - len(self.prefix)
            max_prompt_tokens = longest if max_prompt_tokens is None else max_prompt_tokens
        self.max_length = len(self.prefix) + int(max_prompt_tokens) + max_new_tokens
        if self.prompts is not None:
            for p in self.prompts:
                self.check_prompt(p)

    # ------------------------------------------------------------------ vocabulary

    @cached_property
    def vocab(self) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def encode(self, text: str) -> list[int]:
        """The prefix (BOS, as `from_samples` stores a string sample), then the text's tokens."""
        return self.prefix + list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Any) -> str:
        """The text of token ids, special tokens included (as `info["text"]` shows them)."""
        return self.tokenizer.decode([int(i) for i in ids])

    def encode_action(self, text: str) -> list[int]:
        """The actions (token ids, one `env.step` each) that write `text`, without the BOS prefix."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode_action(self, actions: Any) -> str:
        """The text of an action (a token id) or of a list of them."""
        return self.decode([actions] if np.ndim(actions) == 0 else list(actions))

    def _text(self, ids: Any) -> str:
        """Text as the reward function sees it: special tokens (BOS, EOS) left out."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    # ------------------------------------------------------------------ dynamics

    def sample_prompt(self, rng: np.random.Generator) -> list[int]:
        if self.prompts is not None:
            return self.prompts[int(rng.integers(len(self.prompts)))]
        text = self.sampler(rng)
        if not isinstance(text, str):
            raise TypeError(f"the prompt sampler returned {type(text).__name__}, not a string")
        ids = self.encode(text)
        self.check_prompt(ids)
        return ids

    def check_prompt(self, prompt: list[int]) -> None:
        room = self.max_length - self.max_new_tokens
        if len(prompt) > room:
            raise ValueError(f"a prompt of {len(prompt)} tokens (with the BOS prefix) is longer than the {room} this "
                             "env was made for: raise max_prompt_tokens")

    def evaluation_prompts(self) -> list[list[int]] | None:
        """A prompt list is played equally often in evaluation (a sampler's prompts are drawn)."""
        return self.prompts

    def initial_state(self, prompts: list[list[int]], rngs: list[np.random.Generator]) -> dict[str, np.ndarray]:
        room = self.max_length - self.max_new_tokens
        ids = np.full((len(prompts), room), self.pad_id, np.int64)
        for i, p in enumerate(prompts):
            ids[i, :len(p)] = p
        return {"prompt": ids, "prompt_length": np.array([len(p) for p in prompts], np.int64),
                "tokens": np.zeros((len(prompts), self.max_new_tokens), np.int64),
                "written": np.zeros(len(prompts), np.int64)}

    def transition(self, state: dict[str, np.ndarray], actions: np.ndarray, active: np.ndarray) -> Transition:
        n = len(actions)
        rows = np.flatnonzero(active)
        state["tokens"][rows, state["written"][rows]] = actions[rows]
        state["written"][rows] += 1
        stop = np.zeros(n, bool)
        stop[rows] = actions[rows] == self.eos_id
        budget = np.zeros(n, bool)
        budget[rows] = ~stop[rows] & (state["written"][rows] >= self.max_new_tokens)
        reward = np.zeros(n)
        ended = np.flatnonzero(stop | budget)
        if len(ended):
            reward[ended] = self._rewards(state, ended)
        return Transition(np.full((n, 0), -1, np.int64), reward, stop, budget)

    def _rewards(self, state: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
        """`reward_fn` on the finished rows' prompt and completion texts, checked."""
        prompts = [self._text(state["prompt"][r, len(self.prefix):state["prompt_length"][r]]) for r in rows]
        completions = [self._text(state["tokens"][r, :state["written"][r]]) for r in rows]
        try:
            if self.batched:
                values = list(self.reward_fn(prompts, completions))
            else:
                values = [self.reward_fn(p, c) for p, c in zip(prompts, completions)]
        except Exception as e:
            raise RewardFunctionError(self._failed(prompts, completions, e)) from e
        if len(values) != len(rows):
            raise ValueError(f"a batched reward_fn must return one reward per completion: got {len(values)} for "
                             f"{len(rows)}")
        out = np.empty(len(rows))
        for k, v in enumerate(values):
            try:
                out[k] = float(v)
            except (TypeError, ValueError):
                raise TypeError(f"reward_fn returned {v!r} ({type(v).__name__}) for prompt {prompts[k]!r} and "
                                f"completion {completions[k]!r}: return a float") from None
            if not math.isfinite(out[k]):
                raise ValueError(f"reward_fn returned {v!r} for prompt {prompts[k]!r} and completion "
                                 f"{completions[k]!r}: rewards must be finite floats")
        return out

    @staticmethod
    def _failed(prompts: list[str], completions: list[str], e: Exception) -> str:
        return (f"reward_fn raised {type(e).__name__}: {e} (on prompt {prompts[0]!r} and completion "
                f"{completions[0]!r}{f', one of {len(prompts)}' if len(prompts) > 1 else ''})")

    # ------------------------------------------------------------------ policies

    def optimal_policy(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError("a TextEnv has no known optimal policy: its reward is your function")


class TextEnv(TokenEnv):
    """Token generation over any tokenizer, scored by your reward function: your own text as an env.

    ## Description
    Each episode writes one completion. It starts from a prompt (drawn from a list or a sampler),
    after the tokenizer's BOS token (its EOS token when it has no BOS), which is the layout
    `from_samples` stores for a string sample. The agent then appends one token per step.
    `TextTask` holds the dynamics, so the vector env, evaluation rollouts and beta sweeps during
    `fit` run it as they run a built-in task.

    ## Action Space
    `Discrete(len(tokenizer))`: a token id.

    ## Observation Space
    `Dict(input_ids=Box(0, V - 1, (max_length,)), length=Box(0, max_length, ()))`, as `TokenEnv`.
    `max_length` is 1 (the BOS prefix) + the longest prompt's tokens + `max_new_tokens`.

    ## Rewards
    0 on every step but the last. The last step gets `reward_fn(prompt, completion)`, where both
    are text without special tokens and the completion is what the agent wrote (EOS left out).
    The reward function's contract:
    - unbatched (default): called once per finished episode with two strings; return a float.
    - `batched=True`: called once per env step with the lists of prompts and completions of the
      episodes that ended on that step; return one float per completion (a list or an array).
    - It must be deterministic or at least stateless across calls: evaluation calls it on
      rollouts of the agent, in any order.
    - An exception it raises stops the rollout as `RewardFunctionError`, whose message names the
      prompt and completion. The original exception is its `__cause__`.
    - A value that is not a number raises `TypeError`. A NaN or infinite value raises
      `ValueError` naming the prompt and completion (rewards are trained in float32).

    ## Starting State
    A prompt from `prompts`: drawn uniformly by `reset`, and played equally often (a list) by
    evaluation rollouts. `reset(options={"prompt": "some text"})` starts from a given prompt.
    `prompts=[""]` writes fresh text after BOS.

    ## Episode End
    `terminated=True` when the agent writes EOS. `truncated=True` when it has written
    `max_new_tokens` tokens without EOS. The reward function still scores that cut completion,
    but the text could have gone on, so a learner bootstraps there.

    ## Arguments
    - `tokenizer`: a transformers tokenizer with pad and EOS tokens.
    - `prompts`: a list of strings, or a sampler `sampler(rng) -> str`. A sampler needs
      `max_prompt_tokens`.
    - `reward_fn(prompt, completion) -> float`, see Rewards; `batched` changes its form.
    - `max_new_tokens`: the token budget (default 32).
    - `max_prompt_tokens`: the longest prompt (default: the longest of the list).
    - `ref_scores`: `(min, max)` returns that normalised scores map to 0 and 100 (default (0, 1)).
    - `bos`: prefix prompts with BOS (default True, as string samples). False matches datasets
      made from `[prompt, output]` turn lists, which have no prefix.
    - `render_mode`: None or "ansi".

    Register your env under its own id so that datasets can name it and `fit` can find it:
    `gymnasium.register("reviews/Review-v0", entry_point="textrl:TextEnv", kwargs=dict(...))`.

    ## Reference scores
    `ref_scores`: no optimum is known for a reward function in general.

    ## Version History
    - v0: the first version.
    """

    def __init__(self, tokenizer: Any, prompts: PromptSource, reward_fn: Callable[..., Any],
                 max_new_tokens: int = 32, batched: bool = False, max_prompt_tokens: int | None = None,
                 ref_scores: tuple[float, float] = (0.0, 1.0), bos: bool = True,
                 render_mode: str | None = None) -> None:
        task = TextTask(tokenizer, prompts, reward_fn, max_new_tokens=max_new_tokens, batched=batched,
                        max_prompt_tokens=max_prompt_tokens, ref_scores=ref_scores, bos=bos)
        super().__init__(task, render_mode=render_mode)
