"""Each env row's context held as its KV cache between acting calls, so a step runs only the new tokens.

An agent in an env loop is shown, at every step, each row's whole context so far. Running it in
full every step costs O(T^2) tokens over an episode. `ContextCache` keeps, per row, the tokens it
has run, their keys and values, and the last hidden state. A call whose observation for a row
extends what the row holds (the token it chose, plus whatever the env appended) runs only the new
tokens; a row whose observation does not (a reset or autoreset, another env, an arbitrary call)
starts over, and a row shown the same context again reuses its hidden state.

Layout: row r's cached tokens sit at slots 0 .. held[r] - 1 of per-layer key/value buffers
[rows, capacity, heads, head_dim] (new tokens are written per row and slot), capacity growing with the longest context and never past the
observation width, so memory is bounded by rows x context. Positions are each token's index in its
row's context, as in a full forward of the right-padded observation. Rows that have new tokens
are run in at most two forwards, grouped by how many new tokens they have, so one row's long
append (a whole prompt after a reset) does not pad every other row's single token to its width.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from textrl.models.decoding import causal_forward
from textrl.models.value_model import last_hidden_and_lm


class ContextCache:
    """Per-row KV caches of a causal backbone that follow a batch of growing contexts (see the module)."""

    def __init__(self, backbone: Any) -> None:
        self.backbone = backbone
        self.base, _ = last_hidden_and_lm(backbone)
        self.fed_tokens = 0  # tokens run through the model (the tokens it had not seen)
        self.fed_rows = np.zeros(0, dtype=np.int64)  # [N] of them per row (counted since the batch size was N)
        self.padded_tokens = 0  # positions of the forwards run, pads included
        self.clear()

    def clear(self) -> None:
        """Forget every row (the next call starts every row over)."""
        self.ids: Optional[np.ndarray] = None  # [N, L] the last observation's ids
        self.held = np.zeros(0, dtype=np.int64)  # [N] tokens of each row in the cache
        self.hidden: Optional[torch.Tensor] = None  # [N, H] last hidden state of each row
        self.keys: list[torch.Tensor] = []  # per layer [N, capacity, heads, head_dim]
        self.values: list[torch.Tensor] = []

    @property
    def capacity(self) -> int:
        """Slots per row in the key/value buffers (0 before the first call)."""
        return self.keys[0].shape[1] if self.keys else 0

    @torch.no_grad()
    def last_hidden(self, ids: np.ndarray, length: np.ndarray, ignored: Optional[np.ndarray] = None) -> torch.Tensor:
        """Last hidden state [N, H] of each row's context `ids[r, :length[r]]` (ids [N, L], length [N]).

        `ignored` rows (bool [N]: their result will go unused) that the cache holds run nothing: they keep the
        context they hold and get its hidden state."""
        n, width = ids.shape
        weight = next(self.base.parameters())
        if (self.ids is None or self.ids.shape != ids.shape or self.ids.dtype != ids.dtype
                or (self.keys and (self.keys[0].device, self.keys[0].dtype) != (weight.device, weight.dtype))):
            self.clear()  # another batch shape, or the model moved to another device or dtype
            self.ids, self.held = np.zeros_like(ids), np.zeros(n, dtype=np.int64)
        if len(self.fed_rows) != n:
            self.fed_rows = np.zeros(n, dtype=np.int64)
        length = length.astype(np.int64)
        held = self.held
        if ignored is not None:
            keep = ignored & (held > 0)
            ids, length = np.where(keep[:, None], self.ids, ids), np.where(keep, held, length)
        same = ((ids == self.ids) | (np.arange(width)[None] >= held[:, None])).all(1)
        start = np.where(same & (length >= held), held, 0)  # tokens each row reuses
        try:
            for rows in _groups(length - start):
                self._run(rows, ids, start[rows], length[rows])
        except BaseException:
            self.clear()  # rows half written: start every row over next time
            raise
        self.ids[:] = ids
        self.held = length
        return self.hidden.clone()

    def _run(self, rows: np.ndarray, ids: np.ndarray, start: np.ndarray, end: np.ndarray) -> None:
        """Run the tokens [start, end) of `rows` on top of their cached tokens [0, start)."""
        device = next(self.base.parameters()).device
        count = end - start
        width, past = int(count.max()), int(start.max())
        offset = np.arange(width)[None]
        valid = offset < count[:, None]
        at = np.minimum(start[:, None] + offset, end[:, None] - 1)  # pads repeat the row's last token
        chunk = torch.as_tensor(np.take_along_axis(ids[rows], at, 1).astype(np.int64), device=device)
        position = torch.as_tensor(at, device=device)
        mask = np.concatenate([np.arange(past)[None] < start[:, None], valid], 1)
        index = torch.as_tensor(rows, device=device)
        cache = self._past(index, past)
        states, cache = causal_forward(self.base, chunk, torch.as_tensor(mask, device=device).long(), position,
                                       cache)
        last = states[torch.arange(len(rows), device=device), torch.as_tensor(count - 1, device=device)]
        if self.hidden is None:
            self.hidden = last.new_zeros(len(self.ids), last.shape[-1])
        self.hidden[index] = last
        self._store(cache, index, past, start, valid, int(end.max()))
        self.fed_tokens += int(count.sum())
        self.fed_rows[rows] += count
        self.padded_tokens += len(rows) * width

    def _past(self, index: torch.Tensor, past: int) -> Any:
        """A transformers cache holding `past` slots of the given rows (what their new tokens attend to)."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        cache = DynamicCache()
        if past:
            whole = len(index) == len(self.ids)  # every row in order: a view, no gather
            for k, v in zip(self.keys, self.values):
                k, v = (k[:, :past], v[:, :past]) if whole else (k[index, :past], v[index, :past])
                # A layer that starts from these keys and values as they are. transformers' public way,
                # `DynamicCache([(k, v), ...])`, fills each layer through `update`, which copies them once
                # more than the forward's own concatenation of the new tokens does: measured 1.05x (maze)
                # and 1.12x (Wordle) the cached rollout's time at 256 envs (transformers 5.25, CPU), so the
                # layer's `keys`/`values` are set here (`crop`, `batch_select_indices` and `reorder_cache`
                # act on a whole cache in place, not on a per-row selection of our buffers).
                layer = DynamicLayer()
                layer.lazy_initialization(k, v)
                layer.keys, layer.values = k.transpose(1, 2), v.transpose(1, 2)
                cache.layers.append(layer)
        return cache

    def _store(self, cache: Any, index: torch.Tensor, past: int, start: np.ndarray, valid: np.ndarray,
               longest: int) -> None:
        """Write the new tokens' keys and values into their rows' slots start .. end - 1."""
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        if self.capacity < longest:
            self._grow(layers, longest)
        local, step = np.nonzero(valid)
        device = index.device
        src = torch.as_tensor(local, device=device)
        slot = torch.as_tensor(start[local] + step, device=device)
        at = torch.as_tensor(past + step, device=device)
        row = index[src]
        for buffer_k, buffer_v, (k, v) in zip(self.keys, self.values, layers):
            buffer_k[row, slot] = k[src, :, at]
            buffer_v[row, slot] = v[src, :, at]

    def _grow(self, layers: list[tuple[torch.Tensor, torch.Tensor]], longest: int) -> None:
        """Enlarge the key/value buffers to `longest` slots per row or more (doubling, at most the observation
        width); the held slots are copied over."""
        capacity = min(self.ids.shape[1], max(longest, 2 * self.capacity, 16))
        n, old = len(self.ids), self.capacity
        grown: list[list[torch.Tensor]] = [[], []]
        for i, (k, v) in enumerate(layers):
            for j, like in enumerate((k, v)):
                buffer = like.new_zeros(n, capacity, like.shape[1], like.shape[3])
                if old:
                    buffer[:, :old] = (self.keys, self.values)[j][i]
                grown[j].append(buffer)
        self.keys, self.values = grown


def _groups(new: np.ndarray) -> list[np.ndarray]:
    """The rows with new tokens (`new` per row), split into at most two forwards by their count of new tokens.

    Each forward pads its rows to its largest count; two are run where that saves more padded
    positions than one per row (about what a forward costs beyond its positions).
    """
    rows = np.flatnonzero(new > 0)
    if len(rows) < 2:
        return [rows] if len(rows) else []
    order = rows[np.argsort(new[rows], kind="stable")]
    counts = new[order]
    cut = np.arange(1, len(order))  # the first group is order[:cut]
    padded = cut * counts[cut - 1] + (len(order) - cut) * counts[-1]
    best = int(np.argmin(padded))
    if padded[best] + len(order) >= len(order) * counts[-1]:
        return [rows]
    return [np.sort(order[:cut[best]]), np.sort(order[cut[best]:])]
