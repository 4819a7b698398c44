"""Brackets: a sparse-reward, single-turn task with an exact optimum (close the open brackets of a prompt)."""

from __future__ import annotations

from functools import cached_property

import numpy as np

from textrl.tasks.base import EOS, PAD, Task, Transition

PAIRS = {"(": ")", "[": "]", "{": "}"}


class BracketsTask(Task):
    """Close every open bracket of the prompt, innermost first, then emit `<eos>`.

    ## Description
    The prompt is a valid prefix of a bracket string over `( [ {`; the agent must write exactly
    the closers it still owes and then `<eos>`. One mistake ends the episode.

    ## Action Space
    `Discrete(8)`: `<pad>`, `<eos>`, `(`, `)`, `[`, `]`, `{`, `}`.

    ## Observation Space
    `Dict(input_ids=Box(0, 7, (13,), uint8), length=Box(0, 13, (), int32))` with the defaults:
    `max_length` = 2 * max_depth + 2 * max_pairs + 1, the longest prompt with its closers and `<eos>`.

    ## Rewards
    1 on the `<eos>` that follows the last owed closer, else 0.

    ## Starting State
    `depth` unclosed openers (uniform in 1..max_depth, each of a uniform type) with `pairs`
    matched pairs (uniform in 0..max_pairs) inserted at uniform places. A prompt given in reset
    options must be such a prefix with at least one bracket open, and fit `max_length`.

    ## Episode End
    Every end is a termination (`terminated=True`, `truncated=False`): the `<eos>` after the last
    closer (reward 1), or any other token than the one owed (a wrong closer, an opener, an early
    `<eos>`, a closer once all are closed; reward 0). So an episode lasts at most depth + 1 steps;
    the task has no step limit.

    ## Arguments
    `max_depth=4`, `max_pairs=2`.

    ## Reference scores
    Exact, with the defaults: `ref_max_score` 1.0 (the optimal policy always succeeds);
    `ref_min_score` 0.00446319580078125 (the uniform policy over the 8 tokens succeeds with
    probability 8^-(depth + 1); the mean over depths 1..4).

    ## Version History
    - v0: the only version (observations and ends never changed: every end was always a termination).
    - Datasets -v1: the same data as -v0 (the task never truncated); the dataset version moved with the
      other tasks' datasets.
    """

    name = "brackets"
    env_id = "textrl/Brackets-v0"

    def __init__(self, max_depth: int = 4, max_pairs: int = 2) -> None:
        if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1:
            raise ValueError(f"max_depth must be an int >= 1, got {max_depth!r}")
        if isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 0:
            raise ValueError(f"max_pairs must be an int >= 0, got {max_pairs!r}")
        self.max_depth, self.max_pairs = max_depth, max_pairs
        # the longest prompt, then its closers and <eos>
        self.max_length = 2 * max_depth + 2 * max_pairs + 1
        self.ref_max_score = 1.0
        self.ref_min_score = float(np.mean([self.vocab_size ** -(d + 1.0) for d in range(1, max_depth + 1)]))

    @cached_property
    def vocab(self) -> list[str]:
        return [PAD, EOS, *(t for pair in PAIRS.items() for t in pair)]

    @cached_property
    def _closer_of(self) -> np.ndarray:
        """Token id -> the id of its closer (openers), or -1 (every other token)."""
        table = np.full(self.vocab_size, -1, dtype=np.int64)
        for opener, closer in PAIRS.items():
            table[self.token_to_id[opener]] = self.token_to_id[closer]
        return table

    def _parse(self, ids: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batched scan of contexts: (closers still owed, innermost last [N, L]; depth [N]; valid prefix [N])."""
        n, width = ids.shape
        stack = np.full((n, width + 1), -1, dtype=np.int64)
        depth = np.zeros(n, dtype=np.int64)
        valid = np.ones(n, dtype=bool)
        rows = np.arange(n)
        for j in range(width):
            live = (j < length) & valid
            tok = ids[:, j].astype(np.int64)
            closer = self._closer_of[tok]
            push = live & (closer >= 0)
            top = stack[rows, np.maximum(depth - 1, 0)]
            pop = live & ~push & (depth > 0) & (tok == top)
            valid &= ~(live & ~push & ~pop)
            stack[rows[push], depth[push]] = closer[push]
            depth += push.astype(np.int64) - pop.astype(np.int64)
        return stack[:, :width], depth, valid

    # ------------------------------------------------------------------ dynamics

    @cached_property
    def _pair_ids(self) -> list[tuple[int, int]]:
        """(opener id, closer id) of each bracket type, in PAIRS' order."""
        return [(self.token_to_id[o], self.token_to_id[c]) for o, c in PAIRS.items()]

    def sample_prompt(self, rng: np.random.Generator) -> list[int]:
        # one scalar draw per opener: the stream of `rng.integers(0, 3, size=depth)` (each is one 32-bit draw),
        # at a quarter of its cost (an env reset or autoreset draws one prompt per row)
        pairs, draw = self._pair_ids, rng.integers
        prompt = [pairs[int(draw(0, len(pairs)))][0] for _ in range(int(draw(1, self.max_depth + 1)))]
        for _ in range(int(draw(0, self.max_pairs + 1))):
            opener, closer = pairs[int(draw(0, len(pairs)))]
            at = int(draw(0, len(prompt) + 1))
            prompt[at:at] = [opener, closer]
        return prompt

    def check_prompt(self, prompt: list[int]) -> None:
        ids = np.asarray([prompt], dtype=np.int64)
        _, depth, valid = self._parse(ids, np.array([len(prompt)]))
        if not valid[0] or depth[0] < 1:
            raise ValueError(f"a Brackets prompt is a prefix of a well-nested bracket string with at least one "
                             f"bracket left open, such as '( [ ] {{', got {self.decode(prompt)!r}")
        if len(prompt) + depth[0] + 1 > self.max_length:
            raise ValueError(f"prompt {self.decode(prompt)!r} and its {depth[0]} closers and <eos> do not fit "
                             f"in max_length {self.max_length}")

    def initial_state(self, prompts: list[list[int]], rngs: list[np.random.Generator]) -> dict[str, np.ndarray]:
        ids = np.full((len(prompts), self.max_length), self.pad_id, dtype=np.int64)
        for r, p in enumerate(prompts):
            ids[r, :len(p)] = p
        stack, depth, _ = self._parse(ids, np.array([len(p) for p in prompts]))
        return {"stack": stack, "depth": depth}

    def transition(self, state: dict[str, np.ndarray], actions: np.ndarray, active: np.ndarray) -> Transition:
        stack, depth = state["stack"], state["depth"]
        n = len(actions)
        expected = np.where(depth > 0, stack[np.arange(n), np.maximum(depth - 1, 0)], self.eos_id)
        correct = active & (actions == expected)
        closed = correct & (depth > 0)
        depth[closed] -= 1
        done = active & ~closed  # <eos> after the last closer, or any mistake
        reward = np.where(correct & ~closed, 1.0, 0.0)
        return Transition(np.full((n, 0), -1), reward, done, np.zeros(n, dtype=bool))

    # ------------------------------------------------------------------ policies

    def optimal_policy(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """The innermost closer still owed, or <eos> when none is."""
        stack, depth, _ = self._parse(np.asarray(obs["input_ids"]), np.asarray(obs["length"]))
        return np.where(depth > 0, stack[np.arange(len(depth)), np.maximum(depth - 1, 0)], self.eos_id)
