"""What `act` and `generate` receive, checked and encoded: observations that fit the model, prompts
the tokenizer can read, and room left in the model's positions (each would otherwise fail deep in torch)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

from textrl.models import ValueModel
from textrl.models.value_model import transformers_model
from textrl.tasks import TASK_ENV_IDS, get_task


def left_padded(tokenizer: Any, prompts: list[str], prefix: Sequence[int] = ()) -> dict[str, torch.Tensor]:
    """`prefix` (the start token training saw, if any) and each prompt's tokens, padded on the left
    (decoding appends on the right): `input_ids` and `attention_mask` tensors."""
    for i, prompt in enumerate(prompts):
        unknown = unknown_words(tokenizer, prompt)
        if unknown:
            raise ValueError(f"prompt {i} has words outside the tokenizer's vocabulary: {', '.join(map(repr, unknown))} "
                             "(the tokenizer cannot read them); use the tokens the agent was trained on")
    rows = [[*prefix, *ids] for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
    attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def start_prefix(first_tokens: torch.Tensor, tokenizer: Any) -> list[int]:
    """The start token every training episode begins with, which prompts then get too: the tokenizer's BOS
    (its EOS when it has none), as `from_samples` puts before a string sample; [] for other data."""
    if tokenizer is None or tokenizer.eos_token_id is None:
        return []
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [int(bos)] if len(first_tokens) and bool((first_tokens == bos).all()) else []


def model_limits(model: ValueModel) -> tuple[int, Optional[int]]:
    """(vocabulary size, position limit or None) of a model's backbone."""
    inner = transformers_model(model.backbone)
    positions = getattr(inner.config.get_text_config(), "max_position_embeddings", None)
    return inner.get_input_embeddings().num_embeddings, (None if model.seq2seq else positions)


def check_observation_fits(model: ValueModel, ids: np.ndarray, length: np.ndarray) -> None:
    """Refuse observations whose token ids the model has no embedding for (another task's env) or whose
    context is longer than the model's positions, before they reach an index error deep in torch."""
    vocab, positions = model_limits(model)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"observation input_ids must be integer token ids, got dtype {ids.dtype}")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab:
        raise ValueError(f"the observation holds token id {high if high >= vocab else low} but the model's vocabulary "
                         f"has {vocab} tokens (ids 0..{vocab - 1}): is it an observation of another task's env? Act "
                         "on the env of the data the agent was trained on")
    if positions is not None and int(length.max()) > positions:
        raise ValueError(f"the observation's context is {int(length.max())} tokens but the model has {positions} "
                         "positions: train a model with more positions (model.model_path) for such long episodes")


def check_positions(model: ValueModel, longest: int, seq_length: int) -> None:
    """Refuse training data or a `train.seq_length` longer than the model's positions before anything is
    written (it would fail at the first step with an index error deep in torch)."""
    _, positions = model_limits(model)
    if positions is None:
        return
    if longest > positions:
        raise ValueError(f"the dataset's episodes are up to {longest} tokens but the model has {positions} positions: "
                         f"use a model with at least {longest} positions (model.model_path, e.g. n_positions in a "
                         "GPT2Config), or shorter episodes")
    if seq_length > positions:
        raise ValueError(f"train.seq_length = {seq_length} is more than the model's {positions} positions: lower "
                         f"train.seq_length to at most {positions} (the episodes are up to {longest} tokens)")


def check_env(trained_on: Optional[str], ids: np.ndarray, env: Any) -> None:
    """Refuse an observation of another env than the one the agent's data came from (`trained_on`, an env
    id): by the env the caller names (an id or a gymnasium env) and, for a built-in task, by the
    observation's width (wider than that env's contexts)."""
    if trained_on is None:
        return
    given = env if env is None or isinstance(env, str) else getattr(getattr(env, "spec", None), "id", None)
    if given is not None and given != trained_on:
        raise ValueError(f"the agent was trained on data of {trained_on}, not {given}: act on the env of the data "
                         "the agent was trained on")
    if trained_on not in TASK_ENV_IDS:  # an env registered by the user (a TextEnv): checked by its id only
        return
    width = get_task(trained_on).max_length  # an observation may be trimmed to its length, never wider
    if ids.shape[-1] > width:
        raise ValueError(f"the observation has {ids.shape[-1]} token slots but {trained_on} gives at most {width}: is "
                         "it an observation of another task's env? Act on the env of the data the agent was trained "
                         "on")


def prompt_list(prompts: Any, tokenizer: Any) -> list[str]:
    """The prompts as a list of strings (None: one empty prompt), with a clear error for a bare string, a
    non-string or no tokenizer."""
    if prompts is None:
        return [""]  # one fresh text, after the start token training saw
    if isinstance(prompts, str):
        raise TypeError("generate takes a list of prompt strings; wrap a single prompt in a list")
    prompts = list(prompts)
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise TypeError(f"generate takes prompt strings; prompt {bad[0]} is of type {type(prompts[bad[0]]).__name__}")
    if prompts and tokenizer is None:
        raise ValueError("the agent has no tokenizer to encode prompts: pass tokenizer=... to the agent, or fit or "
                         "load it first")
    return prompts


def unknown_words(tokenizer: Any, prompt: str) -> list[str]:
    """The words of a prompt that the tokenizer maps to its unknown token, or cannot encode at all (a word-level
    tokenizer without one, as the tasks' are); none for byte-level tokenizers."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return [w for w in prompt.split() if not _encodes(tokenizer, w)]
    if not tokenizer.is_fast:
        return []
    enc = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    spans = [prompt[a:b] for t, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]) if t == unk]
    return [w for w in spans if w != tokenizer.unk_token]


def _encodes(tokenizer: Any, word: str) -> bool:
    """Whether the tokenizer encodes `word` (a word-level tokenizer without an unknown token raises)."""
    try:
        tokenizer(word, add_special_tokens=False)
    except Exception:  # tokenizers raises a bare Exception for a word outside a WordLevel vocabulary
        return False
    return True


def room_for_new_tokens(model: ValueModel, prompts: list[str], attention_mask: torch.Tensor,
                        max_new_tokens: int) -> int:
    """How many tokens to generate: `max_new_tokens`, or fewer where the context would outgrow the
    model's positions. Refuses empty prompts and prompts that leave no room (each would otherwise fail
    deep in torch)."""
    lengths = attention_mask.sum(1)
    if (lengths == 0).any():
        i = int((lengths == 0).nonzero()[0])
        raise ValueError(f"prompt {i} ({prompts[i]!r}) is empty: it has no tokens to continue (the agent's data "
                         "had no start token to begin from); give each prompt at least one token")
    _, positions = model_limits(model)
    longest = int(lengths.max())
    if positions is None:
        return max_new_tokens
    if longest >= positions:
        raise ValueError(f"a prompt of {longest} tokens fills the model's {positions} positions and leaves no room to "
                         f"generate: shorten it to at most {positions - 1} tokens")
    return min(max_new_tokens, positions - longest)
