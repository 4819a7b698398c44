"""Sampling shared by every agent: a score function over the vocabulary, top-k, temperature, KV cache.

An agent decides the scores from the last hidden state and the LM logits (BC: log-probabilities;
ILQL: log-probabilities + beta * (Qbar - V); CQL: Q); decoding is the same for all.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from textrl.models.value_model import last_hidden_and_lm

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""score_fn(hidden [B, H], logits [B, V]) -> scores [B, V]; higher is preferred."""


def sample_next(scores: torch.Tensor, top_k: int, temperature: float,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One token per row: keep the top-k scores, divide by the temperature, sample (0 = greedy)."""
    scores = scores.float()
    if temperature == 0:
        return scores.argmax(-1)
    if 0 < top_k < scores.shape[-1]:
        kth = scores.topk(top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores / temperature, dim=-1)
    if generator is not None and generator.device != probs.device:
        return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def decode(backbone: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, top_k: int,
           temperature: float, score_fn: ScoreFn, eos_token_id: Optional[int], pad_token_id: int,
           generator: Optional[torch.Generator] = None, use_cache: bool = True) -> torch.Tensor:
    """New tokens [B, <= max_new_tokens] for left-padded prompts; rows stop at EOS (kept), then pad."""
    from transformers import DynamicCache

    base, lm_head = last_hidden_and_lm(backbone)
    mask = attention_mask.long()
    ids = input_ids
    past = DynamicCache() if use_cache else None
    feed, feed_pos = ids, (mask.cumsum(-1) - 1).clamp(min=0)
    finished = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
    new_tokens = []
    for _ in range(max_new_tokens):
        out = base(input_ids=feed, attention_mask=mask, position_ids=feed_pos, past_key_values=past, use_cache=use_cache)
        hidden = out.last_hidden_state[:, -1]
        token = sample_next(score_fn(hidden, lm_head(hidden)), top_k, temperature, generator)
        token = torch.where(finished, torch.full_like(token, pad_token_id), token)
        new_tokens.append(token)
        ended_now = (token == eos_token_id) & ~finished if eos_token_id is not None else torch.zeros_like(finished)
        visible = ~finished  # the EOS itself stays visible to attention; pads after it do not
        finished = finished | ended_now
        if finished.all():
            break
        next_pos = feed_pos[:, -1:] + 1
        mask = torch.cat([mask, visible.long()[:, None]], dim=1)
        if use_cache:
            past = out.past_key_values
            feed, feed_pos = token[:, None], next_pos
        else:
            ids = torch.cat([ids, token[:, None]], dim=1)
            feed, feed_pos = ids, (mask.cumsum(-1) - 1).clamp(min=0)
    return torch.stack(new_tokens, dim=1)
