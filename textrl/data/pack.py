"""Packed training data: every episode once as flat, compact tensors, cached beside the dataset.

Packing reads the dataset's hdf5 file directly, episode by episode, into preallocated arrays
(it never holds episodes as Python objects), and writes a memory-mapped TensorDict keyed by
the file's content. Batches are padded on demand; see docs/architecture.md for their keys.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal, Optional

import h5py
import minari
import numpy as np
import torch
from gymnasium import spaces
from tensordict import TensorDict

from textrl.data.store import env_id_of, folder_of, load
from textrl.io import atomic_directory

PACK_VERSION = 1
CACHE_DIR = "packed"
Normalization = Literal["none", "zscore", "scale"]


def _check_spaces(dataset: minari.MinariDataset) -> tuple[int, int]:
    """(vocab size, max length) of a token dataset, or a clear error naming the wrong space."""
    obs, act = dataset.observation_space, dataset.action_space
    if not isinstance(act, spaces.Discrete):
        raise ValueError(f"the dataset's action space is {act}, not Discrete(vocab_size): not a token dataset")
    if not (isinstance(obs, spaces.Dict) and set(obs.spaces) == {"input_ids", "length"}):
        raise ValueError(f"the dataset's observation space is {obs}; a token dataset has a Dict of "
                         "'input_ids' (Box of token ids) and 'length'")
    return int(act.n), int(obs["input_ids"].shape[0])


def _content_key(path: Path) -> str:
    """A hash of the dataset's data files and the packing version."""
    digest = hashlib.sha256(f"pack-v{PACK_VERSION}".encode())
    for f in sorted(path.glob("*")):
        if f.is_file():
            digest.update(f.name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    digest.update(block)
    return digest.hexdigest()[:20]


def _read_into_arrays(data_file: Path, n: int, vocab: int) -> dict[str, np.ndarray]:
    """Stream every episode of an hdf5 Minari file into flat arrays."""
    tok_dtype = np.min_scalar_type(vocab - 1)
    token_offsets = np.zeros(n + 1, dtype=np.int64)
    action_offsets = np.zeros(n + 1, dtype=np.int64)
    tokens, positions, rewards = [], [], []
    terminated = np.zeros(n, dtype=bool)
    try:
        with h5py.File(data_file, "r") as f:
            for i in range(n):
                ep = f[f"episode_{i}"]
                lengths = ep["observations/length"][()]
                acts = ep["actions"][()]
                t = len(acts)
                if len(lengths) != t + 1 or len(ep["rewards"]) != t or len(ep["terminations"]) != t:
                    raise ValueError(f"episode {i} has {len(lengths)} observations, {t} actions and "
                                     f"{len(ep['rewards'])} rewards: expected T+1, T and T")
                final = ep["observations/input_ids"][t][: lengths[t]]
                pos = lengths[:-1].astype(np.int64) - 1
                if t and ((pos < 0).any() or (pos + 1 >= len(final)).any() or (final[pos + 1] != acts).any()):
                    raise ValueError(f"episode {i}: its actions are not the tokens after each observation")
                tokens.append(final.astype(tok_dtype))
                positions.append(pos)
                rewards.append(ep["rewards"][()].astype(np.float32))
                terminated[i] = bool(ep["terminations"][t - 1]) if t else False
                token_offsets[i + 1] = token_offsets[i] + len(final)
                action_offsets[i + 1] = action_offsets[i] + t
    except (OSError, KeyError) as e:
        raise ValueError(f"the dataset file {data_file} is damaged or truncated ({e}): rebuild the dataset") from e
    pos_dtype = np.int16 if max(len(t) for t in tokens) < 2**15 else np.int32
    return dict(
        tokens=np.concatenate(tokens), token_offsets=token_offsets,
        action_ixs=np.concatenate(positions).astype(pos_dtype), rewards=np.concatenate(rewards),
        action_offsets=action_offsets, terminated=terminated,
    )


class PackedDataset:
    """Episodes as flat tensors (memory-mapped) with per-episode offsets; `batch(rows)` pads on demand."""

    def __init__(self, td: TensorDict, info: dict[str, Any], reward_normalization: Normalization = "none",
                 rows: Optional[torch.Tensor] = None) -> None:
        self.td = td
        self.info = info
        self.vocab_size: int = info["vocab_size"]
        self.pad_token_id: int = info["pad_token_id"]
        self.env_id: Optional[str] = info.get("env_id")
        self.rows = torch.arange(info["num_episodes"]) if rows is None else rows
        self.reward_normalization = reward_normalization
        tok_off, act_off = td["token_offsets"], td["action_offsets"]
        self._lengths = (tok_off[1:] - tok_off[:-1])
        self._num_actions = (act_off[1:] - act_off[:-1])
        returns = torch.zeros(info["num_episodes"], dtype=torch.float64)
        episode_of_action = torch.repeat_interleave(torch.arange(info["num_episodes"]), self._num_actions)
        returns.index_add_(0, episode_of_action, td["rewards"].double())
        self._returns = returns.float()
        self._shift, self._scale = _normalizer(self._returns[self.rows], reward_normalization)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def returns(self) -> torch.Tensor:
        """Undiscounted return of each (selected) episode."""
        return self._returns[self.rows]

    @property
    def max_tokens(self) -> int:
        """The longest episode, in tokens."""
        return int(self._lengths[self.rows].max())

    @property
    def num_actions(self) -> int:
        """Total agent actions over the selected episodes."""
        return int(self._num_actions[self.rows].sum())

    def select(self, rows: torch.Tensor) -> "PackedDataset":
        """A view of a subset of episodes (indices into this view), sharing the storage."""
        return PackedDataset(self.td, self.info, self.reward_normalization, self.rows[torch.as_tensor(rows)])

    def batch(self, rows: torch.Tensor) -> TensorDict:
        """The padded training batch of these rows (indices into this view)."""
        ep = self.rows[torch.as_tensor(rows, dtype=torch.long)]
        n_tok, n_act = self._lengths[ep], self._num_actions[ep]
        T, A = int(n_tok.max()), int(n_act.max())
        tok_mask = torch.arange(T)[None] < n_tok[:, None]
        tok_idx = (self.td["token_offsets"][ep][:, None] + torch.arange(T)[None]).clamp(max=len(self.td["tokens"]) - 1)
        input_ids = torch.where(tok_mask, self.td["tokens"][tok_idx].long(), self.pad_token_id)
        act_mask = torch.arange(A)[None] < n_act[:, None]
        act_idx = (self.td["action_offsets"][ep][:, None] + torch.arange(A)[None]).clamp(max=max(len(self.td["rewards"]) - 1, 0))
        action_ixs = torch.where(act_mask, self.td["action_ixs"][act_idx].long(), 0)
        rewards = torch.where(act_mask, self.td["rewards"][act_idx].float() / self._scale, 0.0)
        last = (n_act - 1).clamp(min=0)
        rows_ix = torch.arange(len(ep))
        rewards[rows_ix, last] -= (self._shift / self._scale) * (n_act > 0)
        terminated = self.td["terminated"][ep]
        notdone = act_mask.float()
        notdone[rows_ix, last] = torch.where(terminated & (n_act > 0), 0.0, notdone[rows_ix, last])
        state_ixs = torch.cat([action_ixs, torch.zeros(len(ep), 1, dtype=torch.long)], dim=1)
        state_ixs[rows_ix, n_act] = n_tok - 1
        return TensorDict(
            {
                "input_ids": input_ids, "attention_mask": tok_mask.long(), "action_ixs": action_ixs,
                "state_ixs": state_ixs, "action_mask": act_mask, "rewards": rewards, "notdone": notdone,
                "returns": self._returns[ep],
            },
            batch_size=[len(ep)],
        )


def _normalizer(returns: torch.Tensor, how: Normalization) -> tuple[float, float]:
    """(shift, scale) for rewards: z-score or scale by the spread of returns, never dividing by 0 or NaN."""
    if how == "none" or len(returns) == 0:
        return 0.0, 1.0
    if how not in ("zscore", "scale"):
        raise ValueError(f"reward_normalization must be 'none', 'zscore' or 'scale', got {how!r}")
    std = float(returns.std(unbiased=False))
    scale = std if math.isfinite(std) and std > 1e-8 else 1.0
    shift = float(returns.mean()) if how == "zscore" else 0.0
    return (shift if math.isfinite(shift) else 0.0), scale


def pack(dataset: Any, reward_normalization: Normalization = "none", pad_token_id: Optional[int] = None) -> PackedDataset:
    """The packed form of a dataset, read from its cache or built (once) and cached beside it."""
    dataset = load(dataset)
    vocab, _ = _check_spaces(dataset)
    data_path = Path(dataset.storage.data_path)
    cache = folder_of(dataset) / CACHE_DIR / _content_key(data_path)
    if not (cache / "info.json").is_file():
        files = list(data_path.glob("*.hdf5"))
        if len(files) != 1:
            raise ValueError(f"{data_path}: packing reads Minari's hdf5 format; found {[f.name for f in files]}")
        arrays = _read_into_arrays(files[0], dataset.total_episodes, vocab)
        if pad_token_id is None:
            pad_token_id = _pad_id(dataset)
        info = dict(num_episodes=dataset.total_episodes, vocab_size=vocab, pad_token_id=pad_token_id,
                    env_id=env_id_of(dataset), pack_version=PACK_VERSION)
        with atomic_directory(cache) as tmp:
            TensorDict({k: torch.from_numpy(v) for k, v in arrays.items()}, batch_size=[]).memmap_(tmp / "tensors")
            (tmp / "info.json").write_text(json.dumps(info))
    info = json.loads((cache / "info.json").read_text())
    return PackedDataset(TensorDict.load_memmap(cache / "tensors"), info, reward_normalization)


def _pad_id(dataset: minari.MinariDataset) -> int:
    """The pad token of the dataset's tokenizer (0 if it has none)."""
    from textrl.data.store import load_tokenizer

    try:
        tok = load_tokenizer(dataset)
    except FileNotFoundError:
        return 0
    return int(tok.pad_token_id) if tok.pad_token_id is not None else 0
