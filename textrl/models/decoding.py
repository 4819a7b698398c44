"""Sampling shared by every agent: a score function over the vocabulary, top-k, temperature, KV cache,
for decoder-only and encoder-decoder backbones.

An agent decides the scores from the last hidden state and the LM logits (BC: log-probabilities;
ILQL: log-probabilities + beta * (Qbar - V); CQL: Q); decoding is the same for all.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional

import torch

from textrl.models.value_model import is_seq2seq, last_hidden_and_lm, transformers_model
from textrl.trainer import NonFiniteLossError

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""score_fn(hidden [B, H], logits [B, V]) -> scores [B, V]; higher is preferred."""


class NonFiniteScoresError(NonFiniteLossError):
    """The next-token scores hold NaN or +inf (or no finite entry): the model's weights have diverged."""


def check_scores(scores: torch.Tensor) -> None:
    """Raise `NonFiniteScoresError` unless every row has finite scores (-inf marks a banned token and is fine)."""
    bad = scores.isnan().any(-1) | scores.isposinf().any(-1) | scores.isneginf().all(-1)
    if bad.any():
        raise NonFiniteScoresError(
            f"the model's next-token scores are NaN or infinite in {int(bad.sum())} of {len(bad)} rows: its weights "
            "have diverged (look at the training loss; lower optimizer.kwargs.lr, set train.max_grad_norm, or load "
            "an earlier checkpoint)"
        )


def sample_next(scores: torch.Tensor, top_k: int, temperature: float,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One token per row: keep the top-k scores, divide by the temperature, sample (0 = greedy).

    The scores are shifted so their maximum is 0 before dividing, so a tiny temperature tends to
    greedy instead of overflowing (one below float32's smallest normal number is greedy outright);
    non-finite scores raise `NonFiniteScoresError`.
    """
    scores = scores.float()
    check_scores(scores)
    if temperature < torch.finfo(torch.float32).smallest_normal:
        return scores.argmax(-1)
    if 0 < top_k < scores.shape[-1]:
        kth = scores.topk(top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    shifted = scores - scores.amax(-1, keepdim=True)
    probs = torch.softmax(shifted / temperature, dim=-1)
    if generator is not None and generator.device != probs.device:
        return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@functools.lru_cache(maxsize=None)
def _cache_name(forward: Any) -> str:
    """The KV cache keyword of a forward: transformers 5.24 renamed `past_key_values` to `cache`
    (the old name is deprecated, to be removed in 5.40)."""
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def _returned_cache(out: Any) -> Any:
    """The KV cache a forward returned, under either name."""
    return out["cache"] if "cache" in out else out.past_key_values


def causal_forward(base: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                   cache: Any = None) -> tuple[torch.Tensor, Any]:
    """Last hidden states [B, T, H] of a causal base model over `input_ids`, and the KV cache after them.

    With `cache` (a transformers `Cache` holding the earlier tokens) the new tokens attend to it and it
    comes back grown by them; without, nothing is cached (None comes back).
    """
    out = base(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
               use_cache=cache is not None, **{_cache_name(type(base).forward): cache})
    return out.last_hidden_state, (_returned_cache(out) if cache is not None else None)


class _CausalSteps:
    """Decoder-only stepping: left-padded prompts, then one new token per step (KV cache or full recompute)."""

    def __init__(self, backbone: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, use_cache: bool) -> None:
        from transformers import DynamicCache

        self.base, self.lm_head = last_hidden_and_lm(backbone)
        self.use_cache, self.ids, self.mask = use_cache, input_ids, attention_mask.long()
        self.past = DynamicCache() if use_cache else None
        self.feed, self.feed_pos = self.ids, (self.mask.cumsum(-1) - 1).clamp(min=0)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden state and LM logits [B, H], [B, V] for the next token."""
        states, self.past = causal_forward(self.base, self.feed, self.mask, self.feed_pos, self.past)
        hidden = states[:, -1]
        return hidden, self.lm_head(hidden)

    def append(self, token: torch.Tensor, visible: torch.Tensor) -> None:
        """Add the chosen tokens; `visible` is False for rows that had already ended (pads)."""
        next_pos = self.feed_pos[:, -1:] + 1
        self.mask = torch.cat([self.mask, visible.long()[:, None]], dim=1)
        if self.use_cache:
            self.feed, self.feed_pos = token[:, None], next_pos
        else:
            self.ids = torch.cat([self.ids, token[:, None]], dim=1)
            self.feed, self.feed_pos = self.ids, (self.mask.cumsum(-1) - 1).clamp(min=0)


class _Seq2SeqSteps:
    """Encoder-decoder stepping: encode the prompts once, decode from the start token (as in training)."""

    def __init__(self, backbone: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, use_cache: bool) -> None:
        self.model = transformers_model(backbone)
        self.use_cache, self.enc_mask = use_cache, attention_mask.long()
        self.encoded = self.model.get_encoder()(input_ids=input_ids, attention_mask=self.enc_mask)
        start = self.model.config.decoder_start_token_id
        self.dec = torch.full((len(input_ids), 1), start, dtype=torch.long, device=input_ids.device)
        self.dec_mask = torch.ones_like(self.dec)
        self.feed, self.past = self.dec, None
        self.cache_name = _cache_name(type(self.model).forward)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(encoder_outputs=self.encoded, attention_mask=self.enc_mask, decoder_input_ids=self.feed,
                         decoder_attention_mask=self.dec_mask, use_cache=self.use_cache, output_hidden_states=True,
                         **{self.cache_name: self.past})
        self.past = _returned_cache(out) if self.use_cache else None
        return out.decoder_hidden_states[-1][:, -1], out.logits[:, -1]

    def append(self, token: torch.Tensor, visible: torch.Tensor) -> None:
        self.dec_mask = torch.cat([self.dec_mask, visible.long()[:, None]], dim=1)
        self.dec = torch.cat([self.dec, token[:, None]], dim=1)
        self.feed = token[:, None] if self.use_cache else self.dec


@torch.no_grad()
def decode(backbone: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, top_k: int,
           temperature: float, score_fn: ScoreFn, eos_token_id: Optional[int], pad_token_id: int,
           generator: Optional[torch.Generator] = None, use_cache: bool = True) -> torch.Tensor:
    """New tokens [B, <= max_new_tokens] for left-padded prompts; rows stop at EOS (kept), then pad."""
    steps_cls = _Seq2SeqSteps if is_seq2seq(backbone) else _CausalSteps
    steps = steps_cls(backbone, input_ids, attention_mask, use_cache)
    finished = torch.zeros(len(input_ids), dtype=torch.bool, device=input_ids.device)
    new_tokens = []
    for _ in range(max_new_tokens):
        hidden, logits = steps.next()
        token = sample_next(score_fn(hidden, logits), top_k, temperature, generator)
        token = torch.where(finished, torch.full_like(token, pad_token_id), token)
        new_tokens.append(token)
        ended_now = (token == eos_token_id) & ~finished if eos_token_id is not None else torch.zeros_like(finished)
        visible = ~finished  # the EOS itself stays visible to attention; pads after it do not
        finished = finished | ended_now
        if finished.all():
            break
        steps.append(token, visible)
    return torch.stack(new_tokens, dim=1)
