"""What every task provides: a vocabulary and tokenizer, batched dynamics, policies and reference scores.

Dynamics are batched numpy functions over N episodes at once, so the single env, the vector env
and dataset collection all run the same transition code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

Policy = Callable[[dict[str, np.ndarray], np.random.Generator], np.ndarray]
"""A batched policy: observations {"input_ids": [N, L], "length": [N]} and an rng -> N token ids.
`textrl.rollout` adds "ignored" [N] (bool): rows whose action the env will not use, whose work a policy may skip."""

PAD, EOS = "<pad>", "<eos>"


def normalized_score(returns: Any, ref_min: float, ref_max: float) -> Any:
    """100 * (R - ref_min) / (ref_max - ref_min): 0 is the uniform-token policy, 100 the optimum.

    The one definition of the benchmark's score; R may be a mean return or an array of returns.
    """
    return 100.0 * (returns - ref_min) / (ref_max - ref_min)


@dataclass
class Transition:
    """The outcome of one batched step: tokens the env appends, rewards and episode ends.

    A task's own limits (a step, node or guess budget that is scored or inside its reference
    scores) are `terminated`: no future follows them. `truncated` is for ends that cut an episode
    which could go on (learners bootstrap there); the built-in tasks have none.
    """

    response: np.ndarray  # [N, R] environment tokens appended after each action, -1 = none
    reward: np.ndarray  # [N] float
    terminated: np.ndarray  # [N] bool
    truncated: np.ndarray  # [N] bool


class Task(ABC):
    """A synthetic text task with a known optimum (see docs/architecture.md).

    Each task class documents itself in Gymnasium's sections (description, spaces, rewards,
    starting state, episode end, arguments, reference scores, version history).
    """

    name: ClassVar[str]
    env_id: ClassVar[str]
    # Older ids of this env -> what changed since; they are registered only to be refused with that reason.
    retired_env_ids: ClassVar[dict[str, str]] = {}
    # The version of this task's dataset ids (`textrl/<task>/<tier>-vN`), bumped when the data changes, and
    # why each older version is refused.
    dataset_version: ClassVar[int] = 1
    retired_dataset_versions: ClassVar[dict[int, str]] = {
        0: "was built with step limits as truncations (a task's own limits are terminations since -v1)"}
    max_length: int
    ref_min_score: float
    ref_max_score: float
    # Tier -> epsilon: the probability that the behaviour policy takes the exploratory action.
    tiers: ClassVar[dict[str, float]] = {"random": 1.0, "medium": 0.5, "mixed": 0.25, "expert": 0.0}

    # ------------------------------------------------------------------ vocabulary

    @property
    @abstractmethod
    def vocab(self) -> list[str]:
        """Token strings; a token's id is its index. Contains PAD and EOS."""

    @cached_property
    def token_to_id(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def pad_id(self) -> int:
        return self.token_to_id[PAD]

    @property
    def eos_id(self) -> int:
        return self.token_to_id[EOS]

    @cached_property
    def obs_dtype(self) -> np.dtype:
        """The smallest unsigned integer type that holds every token id."""
        return np.dtype(np.min_scalar_type(self.vocab_size - 1))

    @cached_property
    def tokenizer(self) -> Any:
        """A `PreTrainedTokenizerFast` over the vocabulary (whitespace-separated tokens), built locally.

        It has no unknown token: text with a word that is not a token ("crane" where Wordle's tokens
        are letters) raises instead of reading as pad. `encode_action` spells such words."""
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        core = Tokenizer(models.WordLevel(vocab=dict(self.token_to_id)))
        core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS)

    def encode(self, text: str) -> list[int]:
        """Token ids of whitespace-separated token strings; unknown tokens are an error."""
        ids = []
        for word in text.split():
            if word not in self.token_to_id:
                raise ValueError(f"unknown token {word!r} for task {self.name}; known tokens: {' '.join(self.vocab)}")
            ids.append(self.token_to_id[word])
        return ids

    def decode(self, ids: Any) -> str:
        """Text of token ids (tokens joined by spaces)."""
        return " ".join(self.vocab[int(i)] for i in ids)

    def encode_action(self, text: str) -> list[int]:
        """The actions that write `text`, one `env.step` each: a move token such as "c8h8" gives one id,
        a word the vocabulary spells letter by letter (Wordle's "crane") one id per letter."""
        ids = []
        for word in text.split():
            if word in self.token_to_id:
                ids.append(self.token_to_id[word])
            elif all(ch in self.token_to_id for ch in word):
                ids.extend(self.token_to_id[ch] for ch in word)
            else:
                raise ValueError(f"{word!r} is neither a token of task {self.name} nor spelled by its tokens")
        return ids

    def decode_action(self, actions: Any) -> str:
        """The text of an action (a token id) or of a list of them: letters joined into a word, tokens by spaces."""
        ids = [actions] if np.ndim(actions) == 0 else list(actions)
        bad = [int(i) for i in ids if not 0 <= int(i) < self.vocab_size]
        if bad:
            raise ValueError(f"actions {bad} are outside the action space Discrete({self.vocab_size})")
        tokens = [self.vocab[int(i)] for i in ids]
        return "".join(tokens) if all(len(t) == 1 for t in tokens) else " ".join(tokens)

    # ------------------------------------------------------------------ dynamics

    @abstractmethod
    def sample_prompt(self, rng: np.random.Generator) -> list[int]:
        """A prompt drawn from the task's start distribution."""

    @abstractmethod
    def check_prompt(self, prompt: list[int]) -> None:
        """Raise ValueError if `prompt` is not a valid start of this task."""

    @abstractmethod
    def initial_state(self, prompts: list[list[int]], rngs: list[np.random.Generator]) -> dict[str, np.ndarray]:
        """The batched hidden state of episodes starting from these prompts (rngs: one per episode)."""

    @abstractmethod
    def transition(self, state: dict[str, np.ndarray], actions: np.ndarray, active: np.ndarray) -> Transition:
        """Advance the episodes where `active` is True by `actions`, updating `state` in place."""

    def evaluation_prompts(self) -> list[list[int]] | None:
        """A finite set of start prompts that evaluation plays equally often (None: prompts are drawn).

        With it, `evaluate` gives every start the same number of episodes, so the mean return is
        the mean over starts that the reference scores are (the optimum reads exactly 100).
        """
        return None

    def dataset_task(self) -> Task:
        """The task whose episodes make this task's datasets: itself, unless it holds its evaluation starts out."""
        return self

    # ------------------------------------------------------------------ policies

    @abstractmethod
    def optimal_policy(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """The exact optimal policy."""

    def random_policy(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """Uniform over the whole vocabulary (the policy behind ref_min_score)."""
        return rng.integers(0, self.vocab_size, size=len(obs["length"]))

    def exploration_policy(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """The exploratory half of the behaviour mixtures (uniform over the vocabulary unless overridden)."""
        return self.random_policy(obs, rng)

    def behaviour_policy(self, epsilon: float) -> Policy:
        """With probability `epsilon` the exploration policy's token, else the optimal one."""
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")

        def policy(obs: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
            explore = rng.random(len(obs["length"])) < epsilon
            return np.where(explore, self.exploration_policy(obs, rng), self.optimal_policy(obs, rng))

        policy.__name__ = f"{self.name}_behaviour_eps{epsilon:g}"
        return policy

    # ------------------------------------------------------------------ scores

    def normalized_score(self, returns: Any) -> Any:
        """`normalized_score` against this task's reference scores (a return or an array of them)."""
        return normalized_score(returns, self.ref_min_score, self.ref_max_score)
