"""What `act` and `generate` receive, checked and encoded: observations that fit the model, prompts
the tokenizer can read, and room left in the model's positions (each would otherwise fail deep in torch)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from textrl.models import ValueModel
from textrl.models.value_model import transformers_model
from textrl.tasks import get_task


def left_padded(tokenizer: Any, prompts: list[str]) -> Any:
    """Encode prompts padded on the left (decoding appends on the right), restoring the tokenizer's side."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        return tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side


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
    id): by the env the caller names (an id or a gymnasium env) and by the observation's width (wider
    than that env's contexts)."""
    if trained_on is None:
        return
    given = env if env is None or isinstance(env, str) else getattr(getattr(env, "spec", None), "id", None)
    if given is not None and given != trained_on:
        raise ValueError(f"the agent was trained on data of {trained_on}, not {given}: act on the env of the data "
                         "the agent was trained on")
    width = get_task(trained_on).max_length  # an observation may be trimmed to its length, never wider
    if ids.shape[-1] > width:
        raise ValueError(f"the observation has {ids.shape[-1]} token slots but {trained_on} gives at most {width}: is "
                         "it an observation of another task's env? Act on the env of the data the agent was trained "
                         "on")


def prompt_list(prompts: Any, tokenizer: Any) -> list[str]:
    """The prompts as a list of strings, with a clear error for a bare string, a non-string or no tokenizer."""
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
    """The words of a prompt that the tokenizer maps to its unknown token (none for byte-level tokenizers)."""
    unk = tokenizer.unk_token_id
    if unk is None or not tokenizer.is_fast:
        return []
    enc = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    spans = [prompt[a:b] for t, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]) if t == unk]
    return [w for w in spans if w != tokenizer.unk_token]


def room_for_new_tokens(model: ValueModel, tokenizer: Any, prompts: list[str], attention_mask: torch.Tensor,
                         max_new_tokens: int) -> int:
    """How many tokens to generate: `max_new_tokens`, or fewer where the context would outgrow the
    model's positions. Refuses empty prompts, words outside the vocabulary and prompts that leave no
    room (each would otherwise fail deep in torch or generate from unknown tokens)."""
    lengths = attention_mask.sum(1)
    if (lengths == 0).any():
        i = int((lengths == 0).nonzero()[0])
        raise ValueError(f"prompt {i} ({prompts[i]!r}) is empty: it has no tokens to continue; give each prompt at "
                         "least one token")
    for i, prompt in enumerate(prompts):
        unknown = unknown_words(tokenizer, prompt)
        if unknown:
            raise ValueError(f"prompt {i} has words outside the tokenizer's vocabulary: {', '.join(map(repr, unknown))} "
                             f"(they would be read as the unknown token {tokenizer.unk_token!r}); use the tokens the "
                             "agent was trained on")
    _, positions = model_limits(model)
    longest = int(lengths.max())
    if positions is None:
        return max_new_tokens
    if longest >= positions:
        raise ValueError(f"a prompt of {longest} tokens fills the model's {positions} positions and leaves no room to "
                         f"generate: shorten it to at most {positions - 1} tokens")
    return min(max_new_tokens, positions - longest)
