"""Import trlx-style offline data: `samples` (strings or alternating prompt/output turns) and one reward each.

Each sample becomes one episode. In a turn list, even turns (0, 2, ...) are prompt or environment
text (observations) and odd turns are the agent's output (actions); a plain string's first token
is the prompt and the rest is output (as trlx does, where that first token is usually a BOS).
Tokens are encoded without special tokens. The reward sits on the last action token and every
episode terminates. Samples longer than `max_length` tokens are rejected, not cut, so no reward
is attached to text the agent did not write. There is no env to roll out in, so the dataset has
no env spec; its spaces follow docs/architecture.md with the tokenizer's size as vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import minari
import numpy as np
from gymnasium import spaces

from textrl.data.store import write_dataset
from textrl.rollout import Episode

CHUNK = 2000


def _turns(sample: Any, index: int, tokenizer: Any) -> list[list[int]]:
    """Token ids of each turn of a sample, checked."""
    if isinstance(sample, str):
        ids = tokenizer(sample, add_special_tokens=False)["input_ids"]
        if len(ids) < 2:
            raise ValueError(f"sample {index} has {len(ids)} token(s); a string sample needs a prompt token and "
                             "at least one output token (or pass [prompt, output] turns)")
        return [ids[:1], ids[1:]]
    if not isinstance(sample, (list, tuple)) or not all(isinstance(t, str) for t in sample):
        raise TypeError(f"sample {index} must be a string or a list of strings (alternating prompt/output turns)")
    if len(sample) < 2 or len(sample) % 2:
        raise ValueError(f"sample {index} has {len(sample)} turns; a turn list alternates prompt and output and "
                         "ends with an output, so it has an even number (>= 2) of turns")
    turns = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in sample]
    if not turns[0]:
        raise ValueError(f"sample {index}: the first prompt turn is empty; the agent needs a context to start from")
    if not any(turns[1::2]):
        raise ValueError(f"sample {index} has no output tokens: every output turn is empty")
    return turns


def _episode(turns: list[list[int]], reward: float, max_length: int, pad: int, dtype: np.dtype,
             tokenizer: Any) -> Episode:
    """The episode of one sample: observations before each action, actions, the reward at the end."""
    context: list[int] = []
    observations, actions = [], []
    for k, turn in enumerate(turns):
        for tok in turn:
            if k % 2:
                observations.append(list(context))
                actions.append(tok)
            context.append(tok)
    observations.append(context)
    ids = np.full((len(observations), max_length), pad, dtype=dtype)
    for i, o in enumerate(observations):
        ids[i, :len(o)] = o
    t = len(actions)
    rewards = np.zeros(t)
    rewards[-1] = reward
    return Episode({"input_ids": ids, "length": np.array([len(o) for o in observations], dtype=np.int32)},
                   np.array(actions), rewards, np.arange(t) == t - 1, np.zeros(t, dtype=bool),
                   tokenizer.decode(turns[0]), tokenizer.decode(context))


def from_samples(samples: Sequence[Any], rewards: Sequence[float], tokenizer: Any, dataset_id: str,
                 max_length: int | None = None, description: str = "",
                 ref_min_score: float | None = None, ref_max_score: float | None = None) -> minari.MinariDataset:
    """A Minari dataset of the samples as token episodes (agent tokens are actions), written atomically.

    `max_length` (default: the longest sample) is the observation width; reference scores
    default to the lowest and highest reward in the data.
    """
    if isinstance(samples, str):
        raise TypeError("samples must be a sequence of samples, got a single string: wrap it in a list")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
        raise ValueError(f"max_length must be an int >= 2 (a prompt and an output token), got {max_length!r}")
    if len(samples) != len(rewards):
        raise ValueError(f"got {len(samples)} samples but {len(rewards)} rewards: give exactly one reward per sample")
    if len(samples) == 0:
        raise ValueError("no samples: give at least one sample and its reward")
    try:
        rewards = [float(r) for r in rewards]
    except (TypeError, ValueError) as e:
        raise TypeError(f"rewards must be one number per sample ({e})") from e
    bad = [i for i, r in enumerate(rewards) if not math.isfinite(r)]
    if bad:
        raise ValueError(f"rewards must be finite; samples {bad[:10]} have NaN or infinite rewards")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token: set tokenizer.pad_token (e.g. to its eos token)")
    all_turns = [_turns(s, i, tokenizer) for i, s in enumerate(samples)]
    longest = max(sum(len(t) for t in turns) for turns in all_turns)
    max_length = longest if max_length is None else max_length
    too_long = [i for i, turns in enumerate(all_turns) if sum(len(t) for t in turns) > max_length]
    if too_long:
        raise ValueError(f"samples {too_long[:10]} are longer than max_length={max_length} tokens: raise max_length "
                         "or shorten them (they are not truncated, so rewards stay attached to real outputs)")
    vocab = len(tokenizer)
    dtype = np.min_scalar_type(vocab - 1)
    obs_space = spaces.Dict({"input_ids": spaces.Box(0, vocab - 1, (max_length,), dtype),
                             "length": spaces.Box(0, max_length, (), np.int32)})

    def chunks() -> Iterator[list[Episode]]:
        for start in range(0, len(samples), CHUNK):
            yield [_episode(t, r, max_length, tokenizer.pad_token_id, dtype, tokenizer)
                   for t, r in zip(all_turns[start:start + CHUNK], rewards[start:start + CHUNK])]

    metadata = {
        "algorithm_name": "imported-samples", "author": "textrl", "author_email": "textrl@users.noreply.github.com",
        "code_permalink": "https://github.com/textrl/textrl",
        "description": description or f"{len(samples)} samples imported with textrl.from_samples",
        "ref_min_score": float(min(rewards) if ref_min_score is None else ref_min_score),
        "ref_max_score": float(max(rewards) if ref_max_score is None else ref_max_score), "requirements": ["textrl"],
    }
    info = {"source": "samples", "num_episodes": len(samples), "max_length": max_length}
    return write_dataset(dataset_id, chunks(), obs_space, spaces.Discrete(vocab), tokenizer, metadata, info)
