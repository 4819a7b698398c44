"""Wordle (LMRL-Gym's task) on a fixed list of 400 common five-letter words, with exact feedback.

The list ships as package data (data/wordle_words.txt), generated once from wordfreq 3.1.1's
English frequency list: the most frequent words of exactly 5 lowercase ASCII letters, without
plural/third-person "-s" forms and without a stated list of proper nouns, contractions and
slang (the file header gives the exact rule). It is both the answer list and the guess list.

The optimal policy is exact: a memoised branch-and-bound search over candidate sets (the words
still consistent with the feedback) and guesses left, any list word being a possible guess. The
whole search takes a few seconds; its first guess ("trade" with 6 guesses) is kept as a constant
that a test re-derives, so building the task only solves the candidate sets after that guess
(about 0.1 s) to get the exact optimal mean return, -1.8675 (2.8675 guesses on average).
"""

from __future__ import annotations

import string
from functools import cached_property
from importlib import resources

import numpy as np

from textrl.tasks.base import EOS, PAD, Policy, Task, Transition

WORD_LENGTH = 5
LETTERS = list(string.ascii_lowercase)
SEP, GREEN, YELLOW, GREY, INVALID = "|", "G", "Y", "-", "?"
MARKS = (GREY, YELLOW, GREEN)  # mark value m in a feedback pattern (sum of m_i * 3**i) -> token
NUM_PATTERNS = 3**WORD_LENGTH
TURN = 2 * WORD_LENGTH + 1  # tokens per completed turn: 5 letters, 5 marks, the separator
STEP_REWARD, SOLVE_REWARD = -1.0, 0.0
OPENING = "trade"  # the optimal first guess with 6 guesses (the full search, a few seconds, is in the tests)
EXPLORE_CONSISTENT = 0.5  # the exploration word is a uniform consistent word with this probability


def load_words() -> list[str]:
    """The word list shipped with the package (comment lines start with #)."""
    text = resources.files("textrl.tasks").joinpath("data/wordle_words.txt").read_text()
    words = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    bad = [w for w in words if len(w) != WORD_LENGTH or not set(w) <= set(LETTERS)]
    if bad or len(set(words)) != len(words):
        raise ValueError(f"the Wordle list must hold distinct 5-letter lowercase words; bad entries: {bad[:5]}")
    return words


def feedback_patterns(guesses: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """Wordle feedback of every guess against every answer, as pattern codes sum(m_i * 3**i).

    guesses [G, 5] and answers [A, 5] are letter indices; m_i is 2 (green: same letter in place),
    1 (yellow) or 0 (grey). As in the real game, greens are given first; then, left to right, a
    guess letter is yellow while the answer still has unmatched (non-green, not yet yellowed)
    copies of it, so a letter repeated in the guess is yellow at most as often as it remains.
    """
    g, a = guesses[:, None, :], answers[None, :, :]  # [G, 1, 5], [1, A, 5]
    green = g == a  # [G, A, 5]
    code = np.zeros(green.shape[:2], dtype=np.int64)
    for i in range(WORD_LENGTH):
        same_g = g[..., :i] == g[..., i:i + 1]  # earlier guess letters equal to letter i
        used = (same_g & ~green[..., :i]).sum(-1)  # earlier non-green copies already given a mark
        left = ((a == g[..., i:i + 1]) & ~green).sum(-1)  # unmatched copies in the answer
        yellow = ~green[..., i] & (used < left)
        code += np.where(green[..., i], 2, yellow.astype(np.int64)) * 3**i
    return code


class WordleTask(Task):
    """Guess a hidden five-letter word in at most six guesses, letter by letter, from colour feedback.

    ## Description
    A hidden word is drawn uniformly from a fixed list of 400 common English five-letter words
    (data/wordle_words.txt, generated once from wordfreq 3.1.1; its header states the rule).
    The agent guesses one letter token at a time; after every fifth letter the environment
    answers with the feedback of the real game: green (G) for a right letter in the right place,
    yellow (Y) for a letter that is in the word elsewhere, grey (-) otherwise, with repeated
    letters handled exactly as Wordle does (greens first, then yellows left to right, at most as
    many as the answer's unmatched copies). A guess that is not a word of the list wastes the
    turn. The list is both the answer list and the guess list.

    ## Action Space
    `Discrete(33)`: one token per step. Tokens: `<pad>`, `<eos>`, the separator `|`, the letters
    `a`..`z`, the marks `G` `Y` `-` and the invalid marker `?`. Five consecutive actions form a
    guess. Any action that is not a letter (pad, eos, separator, mark, marker) is accepted and
    makes its guess invalid: the turn is wasted when its fifth action arrives (no early end).

    ## Observation Space
    The whole context, `{"input_ids": [61] uint8, "length": int32}` (right-padded with `<pad>`):
    the prompt `|`, then per guess its 5 letters followed, except after the last step of the
    episode, by the environment's 6 tokens: 5 marks (or 5 `?` for a guess not in the list) and
    `|`. Every turn is 11 tokens, so the context length tells the guess and the letter.

    ## Rewards
    0 for the first four letters of a guess; on the fifth, -1, or 0 if the guess is the hidden
    word. A whole episode returns -(guesses that did not solve): -(k - 1) when solved at guess
    k, -6 when never solved.

    ## Starting State
    The prompt is always `|`; the hidden word is uniform over the list (from the env's rng).

    ## Episode End
    Termination on the guess that solves the word, and on the sixth guess (the guess budget is
    part of the task, so running out is a termination, never a truncation). The task never
    truncates; only an outside wrapper (a TimeLimit) can.

    ## Arguments
    `max_guesses` (default 6): the guess budget, e.g. `gymnasium.make("textrl/Wordle-v0", max_guesses=4)`;
    the context then holds at most 1 + 11 * max_guesses - 6 tokens.

    ## Reference scores
    `ref_max_score` = -1.8675, the exact optimal mean return over the 400 words (memoised search
    over candidate sets; 2.8675 guesses on average: 1, 88, 275, 35 and 1 words in 1 to 5 guesses;
    another `max_guesses` runs the whole search at construction). `ref_min_score` =
    -sum_{t=1..6} (1 - q)^t with q = 33^-5, the exact mean return of the uniform-over-vocabulary
    policy (-5.9999994634...): whatever the history, a uniform guess solves with probability q
    (any other guess costs -1, valid or not).
    Behaviour tiers mix per guess, not per token: with probability epsilon the whole guess is an
    exploration word (a uniform word still consistent with the feedback, or with probability 1/2
    a uniform word of the list), else the optimal guess.

    ## Version History
    - v0: the only version (its guess budget was a termination from the start; datasets -v1).
    """

    name = "wordle"
    env_id = "textrl/Wordle-v0"

    def __init__(self, max_guesses: int = 6) -> None:
        if isinstance(max_guesses, bool) or not isinstance(max_guesses, int) or max_guesses < 1:
            raise ValueError(f"max_guesses must be a positive int, got {max_guesses!r}")
        self.max_guesses = max_guesses
        self.words = load_words()
        self.letters = np.array([[ord(c) - ord("a") for c in w] for w in self.words], dtype=np.int64)  # [W, 5]
        self.patterns = feedback_patterns(self.letters, self.letters)  # [guess, answer]
        codes = self.letters @ (26 ** np.arange(WORD_LENGTH))
        self._code_order = np.argsort(codes)
        self._sorted_codes = codes[self._code_order]
        self.max_length = 1 + max_guesses * WORD_LENGTH + (max_guesses - 1) * (WORD_LENGTH + 1)
        self._solved: dict[tuple[bytes, int], tuple[float, int]] = {}  # (candidates, guesses left) -> search
        self._best: dict[bytes, int] = {}  # packed candidate mask + guesses left -> best guess
        q = float(self.vocab_size) ** -WORD_LENGTH
        self.ref_min_score = -sum((1.0 - q) ** t for t in range(1, max_guesses + 1))
        self.ref_max_score = float(-np.mean(self.optimal_costs()))

    @cached_property
    def vocab(self) -> list[str]:
        return [PAD, EOS, SEP, *LETTERS, GREEN, YELLOW, GREY, INVALID]

    @cached_property
    def _letter0(self) -> int:
        return self.token_to_id["a"]

    @cached_property
    def _mark_tokens(self) -> np.ndarray:
        """Per pattern code, its 5 mark tokens followed by the separator: [243, 6]."""
        digits = (np.arange(NUM_PATTERNS)[:, None] // 3 ** np.arange(WORD_LENGTH)) % 3
        marks = np.array([self.token_to_id[m] for m in MARKS])[digits]
        return np.concatenate([marks, np.full((NUM_PATTERNS, 1), self.token_to_id[SEP])], axis=1)

    @cached_property
    def _invalid_tokens(self) -> np.ndarray:
        return np.array([self.token_to_id[INVALID]] * WORD_LENGTH + [self.token_to_id[SEP]])

    @cached_property
    def _prefix_codes(self) -> np.ndarray:
        """[5, W]: the code of each word's first k letters (sum of letter * 26**i), for k = 0..4."""
        powers = 26 ** np.arange(WORD_LENGTH)
        return np.stack([self.letters[:, :k] @ powers[:k] for k in range(WORD_LENGTH)])

    @staticmethod
    def _prefix_code(typed: np.ndarray) -> np.ndarray:
        """The code of each row's typed letters (-1 past them); -2 when one is not a letter (26: fits no word)."""
        ok = (typed < 26).all(1)
        return np.where(ok, np.maximum(typed, 0) @ (26 ** np.arange(WORD_LENGTH)), -2)

    def word_index(self, letters: np.ndarray) -> np.ndarray:
        """Index in the list of each row of letter indices [..., 5] (-1 = not a word of the list)."""
        letters = np.asarray(letters, dtype=np.int64)
        ok = ((letters >= 0) & (letters < 26)).all(-1)
        codes = np.where(ok, np.clip(letters, 0, 25) @ (26 ** np.arange(WORD_LENGTH)), -1)
        pos = np.clip(np.searchsorted(self._sorted_codes, codes), 0, len(self.words) - 1)
        return np.where(ok & (self._sorted_codes[pos] == codes), self._code_order[pos], -1)

    # ------------------------------------------------------------------ dynamics

    def sample_prompt(self, rng: np.random.Generator) -> list[int]:
        return [self.token_to_id[SEP]]

    def check_prompt(self, prompt: list[int]) -> None:
        if list(prompt) != [self.token_to_id[SEP]]:
            raise ValueError(f"the Wordle prompt is the single token {SEP!r}, got {self.decode(prompt)!r}")

    def initial_state(self, prompts: list[list[int]], rngs: list[np.random.Generator]) -> dict[str, np.ndarray]:
        n = len(prompts)
        return {"answer": np.array([int(rng.integers(len(self.words))) for rng in rngs], dtype=np.int64),
                "guesses": np.zeros(n, dtype=np.int64), "letter": np.zeros(n, dtype=np.int64),
                "typed": np.zeros((n, WORD_LENGTH), dtype=np.int64)}

    def transition(self, state: dict[str, np.ndarray], actions: np.ndarray, active: np.ndarray) -> Transition:
        letter, typed, guesses = state["letter"], state["typed"], state["guesses"]
        rows = np.flatnonzero(active)
        typed[rows, letter[rows]] = np.asarray(actions)[rows] - self._letter0  # non-letters fall outside 0..25
        letter[rows] += 1
        done = active & (letter == WORD_LENGTH)
        word = np.where(done, self.word_index(typed), -1)
        solved = done & (word == state["answer"])
        guesses[done] += 1
        letter[done] = 0
        terminated = solved | (done & (guesses >= self.max_guesses))
        reward = np.where(done & ~solved, STEP_REWARD, SOLVE_REWARD)
        pattern = self.patterns[np.maximum(word, 0), state["answer"]]
        reply = np.where((word >= 0)[:, None], self._mark_tokens[pattern], self._invalid_tokens)
        response = np.where((done & ~terminated)[:, None], reply, -1)
        return Transition(response, reward, terminated, np.zeros_like(terminated))

    # ------------------------------------------------------------------ reading observations

    def _read(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Candidates [N, W], typed letters of the guess [N, 5] (26 not a letter, -1 past them), letter k, guesses left."""
        ids = np.asarray(obs["input_ids"], dtype=np.int64)
        length = np.asarray(obs["length"], dtype=np.int64)
        turns, k = (length - 1) // TURN, (length - 1) % TURN
        width = 1 + self.max_guesses * TURN
        ids = np.pad(ids, ((0, 0), (0, max(0, width - ids.shape[1]))), constant_values=self.pad_id)
        cand = np.ones((len(ids), len(self.words)), dtype=bool)
        mark_value = np.full(self.vocab_size, -1)
        mark_value[[self.token_to_id[m] for m in MARKS]] = np.arange(3)
        for j in range(self.max_guesses - 1):
            start = 1 + j * TURN
            word = self.word_index(ids[:, start:start + WORD_LENGTH] - self._letter0)
            marks = mark_value[ids[:, start + WORD_LENGTH:start + 2 * WORD_LENGTH]]
            pattern = marks @ (3 ** np.arange(WORD_LENGTH))
            use = (j < turns) & (word >= 0) & (marks >= 0).all(1)
            cand &= ~use[:, None] | (self.patterns[np.maximum(word, 0)] == pattern[:, None])
        start = 1 + turns * TURN
        cols = start[:, None] + np.arange(WORD_LENGTH)
        typed = np.take_along_axis(ids, np.minimum(cols, ids.shape[1] - 1), 1) - self._letter0
        typed = np.where((typed >= 0) & (typed < 26), typed, 26)  # 26: not a letter
        typed = np.where(np.arange(WORD_LENGTH)[None] < k[:, None], typed, -1)
        return cand, typed, np.minimum(k, WORD_LENGTH - 1), np.maximum(self.max_guesses - turns, 1)

    # ------------------------------------------------------------------ the optimal policy

    def solve(self, cand: np.ndarray, guesses_left: int) -> tuple[float, int]:
        """(expected guesses still to fail, best guess) for candidate indices `cand` (sorted), memoised.

        Exact branch and bound over every list word as the guess: a feedback class of m words
        costs at least m + (m - 1) (one failing guess for all of them, a second for all but one),
        guesses are tried in order of that bound and a guess is dropped once its partial cost
        reaches the best so far; equal costs go to the earlier guess in that order.
        """
        n = len(cand)
        if n <= 2 or guesses_left == 1:
            return (n - 1) / n if n else 0.0, int(cand[0]) if n else 0
        key = (cand.tobytes(), guesses_left)
        if key in self._solved:
            return self._solved[key]
        num = len(self.words)
        pat = self.patterns[:, cand]  # [W, n]
        counts = np.bincount((pat + NUM_PATTERNS * np.arange(num)[:, None]).ravel(),
                             minlength=num * NUM_PATTERNS).reshape(num, NUM_PATTERNS)
        is_cand = np.zeros(num, dtype=bool)
        is_cand[cand] = True
        bound = (np.where(counts > 0, 2 * counts - 1, 0).sum(1) - is_cand) / n  # the solved class costs 0
        bound[(counts.max(1) == n) & ~is_cand] = np.inf  # a guess that tells nothing
        best = (np.inf, 0)
        for w in np.lexsort((np.arange(num), bound)):
            if bound[w] >= best[0] - 1e-12:
                break
            cost = self._guess_cost(cand, int(w), guesses_left, best[0] * n - bound[w] * n)
            if cost is not None and cost < best[0] - 1e-12:
                best = (cost, int(w))
        self._solved[key] = best
        return best

    def _guess_cost(self, cand: np.ndarray, guess: int, guesses_left: int, slack: float = np.inf) -> float | None:
        """Exact expected failing guesses after guessing `guess` (None once over the bound by `slack`)."""
        pattern = self.patterns[guess, cand]
        total = excess = 0.0
        for code in np.unique(pattern):
            if code == NUM_PATTERNS - 1:  # all green: solved
                continue
            sub = cand[pattern == code]
            rest = self.solve(sub, guesses_left - 1)[0] if guesses_left > 1 else 0.0
            total += len(sub) * (1 + rest)
            excess += len(sub) * (1 + rest) - (2 * len(sub) - 1)
            if excess > slack + 1e-9:
                return None
        return total / len(cand)

    def best_guess(self, cand: np.ndarray, guesses_left: int, allowed: np.ndarray | None = None) -> int:
        """The optimal guess for candidate indices `cand`, among `allowed` words if given (the earliest of equals)."""
        if not len(cand):
            cand = np.arange(len(self.words))  # no word fits the history (a hand-made context): start over
        if allowed is None:
            if len(cand) == len(self.words) and guesses_left == self.max_guesses and self.max_guesses == 6:
                return self.words.index(OPENING)
            return self.solve(cand, guesses_left)[1]
        costs = [self._guess_cost(cand, int(w), guesses_left) for w in allowed]
        return int(allowed[int(np.argmin(costs))])

    def optimal_costs(self) -> np.ndarray:
        """Per answer, the guesses that fail before the optimal policy solves it (its return is minus that)."""
        costs = np.zeros(len(self.words))
        for answer in range(len(self.words)):
            cand = np.arange(len(self.words))
            for left in range(self.max_guesses, 0, -1):
                guess = self.best_guess(cand, left)
                if guess == answer:
                    break
                costs[answer] += 1
                cand = cand[self.patterns[guess, cand] == self.patterns[guess, answer]]
        return costs

    def _best_guesses(self, cand: np.ndarray, guesses_left: np.ndarray) -> np.ndarray:
        """The optimal guess of each row (candidate mask [N, W], guesses left [N]); one search per distinct row."""
        rows = np.concatenate([np.packbits(cand, axis=1), guesses_left[:, None].astype(np.uint8)], axis=1)
        unique, inverse = np.unique(np.ascontiguousarray(rows).view(f"V{rows.shape[1]}").ravel(), return_inverse=True)
        best = []
        for u in unique:
            key = u.tobytes()
            if key not in self._best:
                row = np.frombuffer(key, dtype=np.uint8)
                self._best[key] = self.best_guess(np.flatnonzero(np.unpackbits(row[:-1])[:cand.shape[1]]), int(row[-1]))
            best.append(self._best[key])
        return np.array(best, dtype=np.int64)[inverse.reshape(-1)]

    def _word_policy(self, obs: dict[str, np.ndarray], rng: np.random.Generator, epsilon: float) -> np.ndarray:
        """The next letter of a guess drawn, per guess, from (1 - eps) * optimal + eps * exploration.

        Sampling a word from the mixture restricted to the letters already typed and emitting its
        next letter gives exactly the per-guess mixture over whole words, with no state kept
        between calls. A typed prefix outside the mixture's support (another policy typed it) is
        completed by the optimal word with that prefix.
        """
        cand, typed, k, left = self._read(obs)
        n, num_words = cand.shape
        match = self._prefix_codes[k] == self._prefix_code(typed)[:, None]  # [N, W]: words that fit the typed letters
        weights = np.zeros((n, num_words))
        if epsilon < 1:
            weights[np.arange(n), self._best_guesses(cand, left)] = 1.0 - epsilon
        if epsilon > 0:
            consistent = cand / np.maximum(cand.sum(1, keepdims=True), 1)
            weights += epsilon * (EXPLORE_CONSISTENT * consistent + (1.0 - EXPLORE_CONSISTENT) / num_words)
        weights *= match
        cum = np.cumsum(weights, axis=1)
        word = np.minimum((cum < rng.random(n)[:, None] * cum[:, -1:]).sum(1), num_words - 1) if epsilon > 0 \
            else np.argmax(weights, axis=1)
        for r in np.flatnonzero(cum[:, -1] <= 0):  # the typed prefix is off the policy's support
            allowed = np.flatnonzero(match[r])
            word[r] = self.best_guess(np.flatnonzero(cand[r]), int(left[r]), allowed) if len(allowed) else 0
        return self.letters[word, k] + self._letter0

    def optimal_policy(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """The exact optimal guess for the words still possible and the guesses left, letter by letter."""
        return self._word_policy(obs, rng, 0.0)

    def exploration_policy(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """Letters of a uniform consistent word (probability 1/2) or a uniform list word, drawn per guess."""
        return self._word_policy(obs, rng, 1.0)

    def behaviour_policy(self, epsilon: float) -> Policy:
        """Per guess: with probability `epsilon` an exploration word, else the optimal guess."""
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")

        def policy(obs: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
            return self._word_policy(obs, rng, epsilon)

        policy.__name__ = f"{self.name}_behaviour_eps{epsilon:g}"
        return policy
