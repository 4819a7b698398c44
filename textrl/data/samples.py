"""Import trlx-style offline data: `samples` (strings or alternating prompt/output turns) and one reward each.

Each sample becomes one episode, tokenized as trlx's offline (ILQL) pipeline does:
- a string is the agent's output after a one-token prompt, the BOS token: `[BOS] + string`;
  a tokenizer without a BOS token (GPT-2 style) starts with its EOS token instead, as trlx does;
- in a turn list `[prompt, output, prompt, output, ...]` even turns are prompt or environment
  text (observations) and odd turns the agent's output (actions);
- the EOS token is appended to the last output (unless it already ends with EOS), so the agent
  learns to stop; the reward sits on that last action and every episode terminates.
Text is encoded without other special tokens. Text the tokenizer cannot represent (characters
it maps to its unk or pad token, or drops) is an error naming the sample and the characters:
the pad token is never a trained action. When pad and EOS are one token (GPT-2), only the EOS
that ends the sample (and the BOS stand-in) may use that id. Samples longer than `max_length`
tokens are rejected, not cut, so no reward is attached to text the agent did not write. There
is no env to roll out in unless `env=` names one (a `TextEnv` with your reward function, by its
registered id, kept in the dataset's textrl.json with how to make it again: see
`textrl.data.env_record`); its spaces follow docs/architecture.md with the
tokenizer's size as vocabulary.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from collections.abc import Iterable, Iterator, Sized
from itertools import zip_longest
from typing import Any

import minari
import numpy as np
from gymnasium import spaces
from tqdm.auto import tqdm

from textrl.data.env_record import record_env
from textrl.data.store import check_dataset_id, written_line
from textrl.data.writer import write_dataset
from textrl.rollout import Episode

CHUNK = 512  # samples tokenized in one call
FLOAT32_MAX = float(np.finfo(np.float32).max)
_MISSING = object()

Turns = list[list[int]]


def check_tokenizer(tokenizer: Any) -> None:
    """Raise a clear error unless `tokenizer` is a transformers tokenizer with pad and EOS tokens."""
    if type(tokenizer).__module__.startswith("tokenizers"):
        raise TypeError(
            "from_samples needs a transformers tokenizer, got a raw tokenizers.Tokenizer. Wrap it and name its "
            "pad and end-of-sequence tokens: `from transformers import PreTrainedTokenizerFast; tokenizer = "
            "PreTrainedTokenizerFast(tokenizer_object=tok, pad_token='<pad>', eos_token='<eos>')` (use the "
            f"tokens of your vocabulary; its special tokens: {_special_tokens(tokenizer)})")
    if not callable(tokenizer) or not hasattr(tokenizer, "pad_token_id"):
        raise TypeError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token: set tokenizer.pad_token (e.g. to its eos token)")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token, which ends every imported sample (so agents learn to "
                         "stop): set tokenizer.eos_token")


def _special_tokens(tokenizer: Any) -> list[str]:
    """The special tokens a raw tokenizers.Tokenizer declares (to suggest pad/eos names)."""
    try:
        return [t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special]
    except AttributeError:
        return []


class _Encoder:
    """Turns samples into checked token turns, a chunk of samples per tokenizer call."""

    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id
        self.bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else self.eos
        self.bad = {i for i in (tokenizer.unk_token_id, self.pad) if i is not None}
        self.offsets = bool(getattr(tokenizer, "is_fast", False))

    def encode(self, samples: list[Any], first: int) -> list[Turns]:
        """Token turns of samples numbered from `first`, with EOS after the last output."""
        texts: list[str] = []
        for k, sample in enumerate(samples):
            texts.extend(_texts(sample, first + k))
        enc = self.tok(texts, add_special_tokens=False, return_offsets_mapping=self.offsets)
        out, pos = [], 0
        for k, sample in enumerate(samples):
            n = 1 if isinstance(sample, str) else len(sample)
            turns = [self._checked(enc, pos + j, texts[pos + j], first + k, last=j == n - 1) for j in range(n)]
            pos += n
            out.append(self._finish(turns, isinstance(sample, str), first + k))
        return out

    def _checked(self, enc: Any, row: int, text: str, index: int, last: bool) -> list[int]:
        """One text's ids; an error naming the characters the tokenizer maps to unk/pad or drops."""
        ids = list(enc["input_ids"][row])
        if last and ids and ids[-1] == self.eos:
            ids.pop()  # the sample already ends with EOS: it is not doubled
        bad = [j for j, t in enumerate(ids) if t in self.bad]
        if not self.offsets:
            if bad:
                raise ValueError(f"sample {index}: the tokenizer maps part of {text!r} to its unk/pad token (ids "
                                 f"{sorted({ids[j] for j in bad})}): clean the text or use a tokenizer that covers it")
            return ids
        offsets = enc["offset_mapping"][row]
        chars = [text[offsets[j][0]:offsets[j][1]] or self.tok.convert_ids_to_tokens(ids[j]) for j in bad]
        covered = np.zeros(len(text), bool)
        for s, e in offsets:
            covered[s:e] = True
        dropped = [text[i] for i in np.flatnonzero(~covered) if not text[i].isspace()]
        if dropped:  # offsets shift past a dropped character: name what the decoded ids lack, if anything
            chars += sorted(set(text) - set(self.tok.decode(ids)) - set(" \t\n\r")) or dropped
        if chars:
            raise ValueError(f"sample {index}: the tokenizer cannot represent {sorted(set(chars))} in {text[:80]!r} "
                             "(mapped to its unk or pad token, or dropped): clean the text or use a tokenizer that "
                             "covers these characters")
        return ids

    def _finish(self, turns: Turns, plain: bool, index: int) -> Turns:
        """[BOS] before a string's output; EOS after the last output; checks of the turn structure."""
        if plain:
            if not turns[0]:
                raise ValueError(f"sample {index} has 0 tokens: a string sample is the agent's output after BOS")
            return [[self.bos], turns[0] + [self.eos]]
        if not turns[0]:
            raise ValueError(f"sample {index}: the first prompt turn is empty; the agent needs a context to start from")
        if not any(turns[1::2]):
            raise ValueError(f"sample {index} has no output tokens: every output turn is empty")
        turns[-1] = turns[-1] + [self.eos]
        return turns


def _texts(sample: Any, index: int) -> list[str]:
    """The texts of a sample, checked: one string, or an even number (>= 2) of turns."""
    if isinstance(sample, str):
        return [sample]
    if not isinstance(sample, (list, tuple)) or not all(isinstance(t, str) for t in sample):
        raise TypeError(f"sample {index} must be a string or a list of strings (alternating prompt/output turns)")
    if len(sample) < 2 or len(sample) % 2:
        raise ValueError(f"sample {index} has {len(sample)} turns; a turn list alternates prompt and output and "
                         "ends with an output, so it has an even number (>= 2) of turns")
    return list(sample)


def _real(value: Any, what: str, kind: str = "rewards") -> float:
    """A real number (int or float, numpy's too; not bool, not str) as a float that stays finite in float32."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{kind} must be real numbers (int or float; not bool, str or None): {what} is {value!r} "
                        f"({type(value).__name__})")
    number = float(value)
    if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
        raise ValueError(f"{kind} must be finite (within float32's range, |r| <= 3.4e38, the dtype they are trained "
                         f"in); {what} is {value!r}")
    return number


def _reference_scores(lowest: float, highest: float, ref_min_score: float | None, ref_max_score: float | None,
                      count: int) -> tuple[float | None, float | None]:
    """The reference scores to store: as given, else the lowest and highest reward; none when all rewards are equal.

    A normalised score divides by `ref_max_score - ref_min_score`, so equal scores are never stored:
    defaulted ones are left out (with a warning), given ones that meet or cross are an error.
    """
    lo = lowest if ref_min_score is None else ref_min_score
    hi = highest if ref_max_score is None else ref_max_score
    if lo < hi:
        return lo, hi
    if ref_min_score is None and ref_max_score is None:
        warnings.warn(f"all {count} rewards equal {lo!r}: no reference scores are stored (a normalised score would "
                      "divide by zero); pass ref_min_score and ref_max_score to set them", UserWarning, stacklevel=6)
        return None, None
    raise ValueError(f"ref_min_score ({lo!r}) must be below ref_max_score ({hi!r}); a score that is not given is "
                     "the lowest or highest reward: a normalised score divides by their difference")


def _reward(value: Any, index: int) -> float:
    """A sample's reward, checked by `_real`."""
    return _real(value, f"the reward of sample {index}")


def _pairs(samples: Iterable[Any], rewards: Iterable[Any] | None) -> Iterator[tuple[Any, float]]:
    """(sample, reward) pairs from two parallel iterables, or from an iterable of pairs."""
    if rewards is None:
        for i, item in enumerate(samples):
            if not (isinstance(item, tuple) and len(item) == 2):
                raise TypeError(f"with rewards=None, samples must yield (sample, reward) pairs; item {i} is "
                                f"{type(item).__name__}: pass rewards, or yield (sample, reward) tuples")
            yield item[0], _reward(item[1], i)
        return
    for i, (sample, reward) in enumerate(zip_longest(samples, rewards, fillvalue=_MISSING)):
        if sample is _MISSING or reward is _MISSING:
            longer = "rewards" if sample is _MISSING else "samples"
            raise ValueError(f"samples and rewards differ in length: {longer} go on after {i} items; give exactly one "
                             "reward per sample")
        yield sample, _reward(reward, i)


def _encoded(pairs: Iterator[tuple[Any, float]], encoder: _Encoder) -> Iterator[tuple[Turns, float]]:
    """(token turns, reward) of each sample, tokenized a chunk at a time."""
    done = 0
    while True:
        chunk = [p for _, p in zip(range(CHUNK), pairs)]
        if not chunk:
            return
        turns = encoder.encode([s for s, _ in chunk], done)
        yield from zip(turns, (r for _, r in chunk))
        done += len(chunk)


def _episode(turns: Turns, reward: float, max_length: int, pad: int, dtype: np.dtype, tokenizer: Any) -> Episode:
    """The episode of one sample: the context before each action, actions, the reward at the end."""
    flat, agent = [], []  # small per-sample arrays: Python lists, then one numpy conversion each
    for k, turn in enumerate(turns):
        if k % 2:
            agent.extend(range(len(flat), len(flat) + len(turn)))
        flat.extend(turn)
    tokens, positions = np.array(flat, np.int64), np.array(agent, np.int64)
    lengths = np.array([*agent, len(flat)], np.int32)  # the context before each action, then all
    row = np.full(max_length, pad, np.int64)
    row[:len(flat)] = tokens
    ids = np.where(np.arange(max_length) < lengths[:, None], row, pad).astype(dtype)
    t = len(positions)
    rewards = np.zeros(t)
    rewards[-1] = reward
    return Episode({"input_ids": ids, "length": lengths}, tokens[positions], rewards, np.arange(t) == t - 1,
                   np.zeros(t, dtype=bool), tokenizer.decode(turns[0]), tokenizer.decode(tokens.tolist()))


def _registered_env_id(env: Any, vocab: int) -> str:
    """The registered id of `env` (an id or an env made by gymnasium.make), checked against the tokenizer."""
    import gymnasium

    from textrl.registration import TEXT_ENV_ID

    env_id = env if isinstance(env, str) else getattr(getattr(env, "spec", None), "id", None)
    how = ("register it under its own id first: gymnasium.register('mydata/MyText-v0', entry_point='textrl:TextEnv', "
           "kwargs=dict(tokenizer=..., prompts=..., reward_fn=...)), then pass env='mydata/MyText-v0'")
    if env_id is None:
        raise ValueError(f"env {env!r} has no registered id, so the dataset cannot name it: {how}")
    if env_id == TEXT_ENV_ID:
        raise ValueError(f"env {TEXT_ENV_ID} takes its tokenizer, prompts and reward function when it is made, so "
                         f"the dataset cannot name them: {how}")
    if env_id not in gymnasium.registry:
        raise ValueError(f"env {env_id!r} is not registered in this process: {how}")
    made = gymnasium.make(env_id)
    n = getattr(made.action_space, "n", None)
    made.close()
    if n != vocab:
        raise ValueError(f"env {env_id!r} has {n} actions but the tokenizer has {vocab} tokens: give the env the "
                         "tokenizer of the samples")
    return env_id


def from_samples(samples: Iterable[Any], rewards: Iterable[float] | None, tokenizer: Any, dataset_id: str,
                 max_length: int | None = None, description: str = "", ref_min_score: float | None = None,
                 ref_max_score: float | None = None, progress: bool = True, overwrite: bool = False,
                 env: Any = None) -> minari.MinariDataset:
    """A Minari dataset of the samples as token episodes (agent tokens are actions), written atomically.

    `samples` is a list (or array, Series, any sized collection) or any iterable, e.g. a
    generator over a file, read once and streamed; `rewards` is a parallel collection or
    iterable, or None when `samples` yields `(sample, reward)` pairs. `max_length` is the
    observation width: by default the longest sample, which needs a sized collection (an
    iterator is read only once, so give `max_length`). Rewards and reference scores are real
    numbers (not bool, not str). Reference scores default to the lowest and highest reward; when
    all rewards are equal none are stored (with a warning: a normalised score would divide by
    zero), and given ones must have ref_min_score < ref_max_score. The id is checked with
    Minari's rule before any sample is read. With `progress`, a bar runs and the rate and size
    are printed. `overwrite=True` replaces a dataset of the same id once the new one is written.
    `env` (a registered env id, or an env made by `gymnasium.make`) is the env the data's agents
    are evaluated in, e.g. a `TextEnv` with your reward function: it is recorded with the data, so
    `fit(dataset)` and `textrl bench --dataset` roll agents out in it. The record holds the env's
    registration, its reward function by import path, so another process makes the env again; a
    reward function defined in a script's `__main__` or as a lambda cannot be imported, and then
    that process must register the env itself.
    """
    check_dataset_id(dataset_id)
    if isinstance(samples, str):
        raise TypeError("samples must be a sequence of samples, got a single string: wrap it in a list")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
        raise ValueError(f"max_length must be an int >= 2 (a prompt and an output token), got {max_length!r}")
    if isinstance(samples, Sized) and isinstance(rewards, Sized) and len(samples) != len(rewards):
        raise ValueError(f"got {len(samples)} samples but {len(rewards)} rewards: give exactly one reward per sample")
    ref_min_score, ref_max_score = (None if score is None else _real(score, name, "reference scores")
                                    for score, name in ((ref_min_score, "ref_min_score"),
                                                        (ref_max_score, "ref_max_score")))
    if ref_min_score is not None and ref_max_score is not None:
        _reference_scores(ref_min_score, ref_max_score, ref_min_score, ref_max_score, 0)  # refuses crossed ones now
    check_tokenizer(tokenizer)
    env_id = None if env is None else _registered_env_id(env, len(tokenizer))
    encoder = _Encoder(tokenizer)
    items: Iterable[tuple[Turns, float]] = _encoded(_pairs(samples, rewards), encoder)
    if max_length is None:
        if not isinstance(samples, Sized):
            raise ValueError("max_length is required when samples is an iterator (it is read once, so the longest "
                             "sample is not known in advance): pass max_length")
        items = list(items)
        max_length = max((sum(len(t) for t in turns) for turns, _ in items), default=2)
    vocab = len(tokenizer)
    dtype = np.min_scalar_type(vocab - 1)
    obs_space = spaces.Dict({"input_ids": spaces.Box(0, vocab - 1, (max_length,), dtype),
                             "length": spaces.Box(0, max_length, (), np.int32)})
    metadata: dict[str, Any] = {
        "algorithm_name": "imported-samples", "author": "textrl", "author_email": "textrl@users.noreply.github.com",
        "code_permalink": "https://github.com/textrl/textrl", "requirements": ["textrl"],
    }
    seen = {"n": 0, "lo": math.inf, "hi": -math.inf}

    def chunks() -> Iterator[list[Episode]]:
        total = len(samples) if isinstance(samples, Sized) else None
        with tqdm(total=total, desc=f"import {dataset_id}", unit="sample", disable=not progress) as bar:
            for turns, reward in items:
                size = sum(len(t) for t in turns)
                if size > max_length:
                    raise ValueError(f"sample {seen['n']} is longer than max_length={max_length} tokens ({size}): "
                                     "raise max_length or shorten it (samples are not truncated, so rewards stay "
                                     "attached to real outputs)")
                yield [_episode(turns, reward, max_length, encoder.pad, dtype, tokenizer)]
                seen["n"] += 1
                seen["lo"], seen["hi"] = min(seen["lo"], reward), max(seen["hi"], reward)
                bar.update()
        if seen["n"] == 0:
            raise ValueError("no samples: give at least one sample and its reward")
        lo, hi = _reference_scores(seen["lo"], seen["hi"], ref_min_score, ref_max_score, seen["n"])
        metadata.update(  # read by write_dataset after the last chunk
            description=description or f"{seen['n']} samples imported with textrl.from_samples",
            ref_min_score=lo, ref_max_score=hi)
        info["num_episodes"] = seen["n"]  # build_info, too, is written after the last chunk

    start = time.perf_counter()
    info: dict[str, Any] = {"source": "samples", "max_length": max_length}
    if env_id is not None:
        info["env_id"] = env_id
        info["env_record"] = record_env(env_id, tokenizer)  # how another process can make the env again
    dataset = write_dataset(dataset_id, chunks(), obs_space, spaces.Discrete(vocab), tokenizer, metadata, info,
                            overwrite=overwrite)
    if progress:
        print(written_line(dataset, time.perf_counter() - start, "samples"))
    return dataset

