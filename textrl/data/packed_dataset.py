"""Packed episodes in memory-mapped flat tensors, and the padded training batches made from them.

Every episode is one row: its final context (tokens), the positions whose hidden states predict
its actions, its per-action rewards and whether it terminated. Rows are stored back to back
with offsets, in the smallest dtypes, and padded only when a batch is assembled.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

from textrl.io import file_sha256

NORMALIZATIONS = ("none", "zscore", "scale")

Batch = TensorDict
"""A training batch: a TensorDict of batch size [B] with exactly the keys of docs/architecture.md."""

BATCH_KEYS = ("input_ids", "attention_mask", "action_ixs", "state_ixs", "action_mask", "rewards", "notdone",
              "returns")


class _Growing:
    """A 1-d array that doubles its storage when full (tokens per episode are not known in advance)."""

    def __init__(self, dtype: Any, capacity: int = 1024) -> None:
        self.data = np.empty(max(capacity, 16), dtype)
        self.size = 0

    def extend(self, values: np.ndarray) -> None:
        end = self.size + len(values)
        if end > len(self.data):
            grown = np.empty(max(end, 2 * len(self.data)), self.data.dtype)
            grown[:self.size] = self.data[:self.size]
            self.data = grown
        self.data[self.size:end] = values
        self.size = end

    def array(self) -> np.ndarray:
        return self.data[:self.size].copy()


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest dtype torch can gather from for token ids below `vocab_size` (torch lacks uint16 indexing)."""
    return np.dtype(np.uint8 if vocab_size <= 2**8 else np.int16 if vocab_size <= 2**15 else np.int32)


class PackBuilder:
    """The flat arrays of a packed dataset, grown one checked episode at a time.

    Fed by `pack` (reading an hdf5 file) and by the dataset writer (in the same pass as the hdf5
    file, so a dataset textrl writes is packed without being read back).
    """

    def __init__(self, vocab_size: int, max_length: int) -> None:
        self.pos_dtype = np.int16 if max_length < 2**15 else np.int32
        self.tokens = _Growing(token_dtype(vocab_size))
        self.action_ixs = _Growing(self.pos_dtype)
        self.rewards = _Growing(np.float32)
        self.token_offsets: list[int] = [0]  # per-episode values: Python lists append fastest
        self.action_offsets: list[int] = [0]
        self.terminated: list[bool] = []
        self.returns: list[float] = []

    def add(self, name: str, lengths: np.ndarray, final_row: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
            terminations: np.ndarray) -> None:
        """Append one episode from its observation lengths, last observation row, actions, rewards and ends."""
        t = len(actions)
        if t == 0 or len(lengths) != t + 1 or len(rewards) != t or len(terminations) != t:
            raise ValueError(f"{name} has {len(lengths)} observations, {t} actions, {len(rewards)} rewards and "
                             f"{len(terminations)} terminations: expected T+1, T, T and T with T >= 1")
        final = final_row[: int(lengths[-1])]
        pos = lengths[:-1].astype(np.int64) - 1
        if ((pos < 0) | (pos + 1 >= len(final))).any() or (final[pos + 1] != actions).any():
            raise ValueError(f"{name}: its actions are not the tokens that follow each observation's context "
                             "(observation lengths and actions disagree)")
        rewards32 = np.asarray(rewards, dtype=np.float32)
        total = np.float32(np.sum(rewards, dtype=np.float64))
        if not (np.isfinite(rewards32).all() and np.isfinite(total)):
            raise ValueError(f"{name} has a reward or return that is not finite in float32 (|r| < 3.4e38), the dtype "
                             "rewards are trained in: rescale the rewards")
        self.tokens.extend(final)
        self.action_ixs.extend(pos.astype(self.pos_dtype))
        self.rewards.extend(rewards32)
        self.returns.append(float(total))
        self.terminated.append(bool(terminations[-1]))
        self.token_offsets.append(self.tokens.size)
        self.action_offsets.append(self.action_ixs.size)

    def __len__(self) -> int:
        return len(self.returns)

    def arrays(self) -> dict[str, np.ndarray]:
        """The packed arrays: tokens, token_offsets, action_ixs, action_offsets, rewards, returns, terminated."""
        return {"tokens": self.tokens.array(), "token_offsets": np.array(self.token_offsets, np.int64),
                "action_ixs": self.action_ixs.array(), "action_offsets": np.array(self.action_offsets, np.int64),
                "rewards": self.rewards.array(), "returns": np.array(self.returns, np.float32),
                "terminated": np.array(self.terminated, bool)}


def vocab_fingerprint(tokenizer: Any) -> str:
    """A short hash of a tokenizer's token -> id map, to tell two vocabularies of the same size apart."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def normalizer(returns: torch.Tensor, how: str) -> tuple[float, float]:
    """(shift, scale) that map returns R to (R - shift) / scale; a zero or NaN spread leaves scale at 1.

    "zscore" subtracts the mean and divides by the standard deviation (trlx's ILQL choice);
    "scale" only divides by the standard deviation; "none" leaves rewards as they are.
    """
    if how not in NORMALIZATIONS:
        raise ValueError(f"reward_normalization must be one of {', '.join(NORMALIZATIONS)}, got {how!r}")
    if how == "none" or len(returns) == 0:
        return 0.0, 1.0
    finite = returns[torch.isfinite(returns)].double()
    std = float(finite.std(unbiased=False)) if len(finite) else float("nan")
    scale = std if math.isfinite(std) and std > 1e-8 else 1.0
    mean = float(finite.mean()) if len(finite) else 0.0
    return (mean if how == "zscore" else 0.0), scale


class DamagedCacheError(ValueError):
    """A packed cache whose files are missing, resized or changed since it was written."""


def save_arrays(folder: Path, arrays: dict[str, np.ndarray]) -> dict[str, list]:
    """Write each array's raw bytes to `folder/tensors/<key>.bin`; return {key: [dtype, length]} for info.json.

    Plain writes, not a growing memory map: a full disk raises OSError (ENOSPC) here instead of
    killing the process with SIGBUS when a mapped page cannot be backed. The free space is checked first.
    """
    needed = sum(a.nbytes for a in arrays.values())
    full = (f"the disk is full: cannot write the packed cache in {folder.parent} (it needs {needed / 2**20:.1f} MiB); free "
            "some space or move the dataset to a larger disk, then run it again")
    if needed > shutil.disk_usage(folder).free:
        raise OSError(errno.ENOSPC, full)
    (folder / "tensors").mkdir()
    layout = {}
    for key, values in arrays.items():
        values = np.ascontiguousarray(values)
        try:
            with open(folder / "tensors" / f"{key}.bin", "wb") as f:
                f.write(memoryview(values).cast("B"))
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise OSError(errno.ENOSPC, full) from e
            raise
        layout[key] = [values.dtype.str, len(values)]
    return layout


def _map_arrays(folder: Path, layout: dict[str, list]) -> TensorDict:
    """The cache's arrays memory-mapped read-only (copy-on-write), opened in milliseconds whatever their size."""
    tensors = {}
    for key, (dtype, length) in layout.items():
        torch_dtype = torch.from_numpy(np.empty(0, np.dtype(dtype))).dtype
        path = folder / "tensors" / f"{key}.bin"
        tensors[key] = (torch.from_file(str(path), shared=False, size=int(length), dtype=torch_dtype) if length
                        else torch.empty(0, dtype=torch_dtype))
    return TensorDict(tensors, batch_size=[])


def file_checksums(folder: Path) -> dict[str, list]:
    """[size, sha256] of every file under `folder/tensors`, keyed by relative path (stored in info.json).

    sha256 reads over 1 GB/s on a CPU with SHA instructions, so 100k episodes (tens of MB) are checked in ms.
    """
    out = {}
    for path in sorted((folder / "tensors").rglob("*")):
        if path.is_file():
            out[path.relative_to(folder).as_posix()] = [path.stat().st_size, file_sha256(path)]
    return out


def verify_files(folder: Path, info: dict[str, Any]) -> None:
    """Raise `DamagedCacheError` naming the first file of a packed cache that is missing, resized or changed."""
    try:
        expected = {str(name): (int(size), str(digest)) for name, (size, digest) in info["checksums"].items()}
    except (KeyError, AttributeError, TypeError, ValueError):
        expected = {}
    if not expected:
        raise DamagedCacheError(f"the packed cache at {folder} records no checksums (written by an older textrl, "
                                "or damaged): delete the folder to repack")
    for name, (size, _) in expected.items():
        path = folder / name
        if not path.is_file():
            raise DamagedCacheError(f"the packed cache at {folder} lacks {name}: delete the folder to repack")
        if path.stat().st_size != size:
            raise DamagedCacheError(f"the packed cache file {path} has {path.stat().st_size} bytes, not the {size} "
                                    "it was written with (truncated or emptied): delete the folder to repack")
    actual = file_checksums(folder)
    for name, (_, digest) in expected.items():
        if actual[name][1] != digest:
            raise DamagedCacheError(f"the packed cache file {folder / name} does not match its checksum (its "
                                    "contents changed since it was written): delete the folder to repack")


def _gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values[index] for an index of any shape; `index_select` stays fast on memory-mapped storage,
    where plain advanced indexing was about 300x slower with 2 threads (torch 2.13, CPU)."""
    return values.index_select(0, index.reshape(-1)).view(index.shape)


class PackedDataset:
    """Episodes as memory-mapped flat tensors; `batch(rows)` pads the chosen rows into a training `Batch`.

    A `select`ed subset is a view over the same storage that keeps the parent's reward normalisation,
    so a filtered or held-out subset is scaled like the data it came from.
    """

    def __init__(self, td: TensorDict, info: dict[str, Any], reward_normalization: str = "none",
                 rows: torch.Tensor | None = None, stats: tuple[float, float] | None = None) -> None:
        self.td = td
        self.info = info
        self.vocab_size: int = int(info["vocab_size"])
        self.pad_token_id: int = int(info["pad_token_id"])
        self.env_id: str | None = info.get("env_id")
        self.reward_normalization = reward_normalization
        self.rows = torch.arange(int(info["num_episodes"])) if rows is None else rows
        self._lengths = td["token_offsets"].diff()
        self._num_actions = td["action_offsets"].diff()
        self._shift, self._scale = stats if stats is not None else normalizer(td["returns"], reward_normalization)

    @classmethod
    def load(cls, folder: str | Path, reward_normalization: str = "none") -> PackedDataset:
        """Open a packed cache folder (memory-mapped), after checking every file's size and checksum.

        A damaged cache raises `DamagedCacheError`; `pack` then rebuilds it from the dataset.
        """
        folder = Path(folder)
        try:
            info = json.loads((folder / "info.json").read_text())
        except (OSError, ValueError) as e:
            raise DamagedCacheError(f"the packed cache at {folder} is unreadable ({e}): delete the folder to "
                                    "repack") from e
        verify_files(folder, info)
        try:
            td = _map_arrays(folder, info["arrays"])
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
            raise DamagedCacheError(f"the packed cache at {folder} is unreadable ({e}): delete the folder to "
                                    "repack") from e
        return cls(td, info, reward_normalization)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def returns(self) -> torch.Tensor:
        """Undiscounted return of each selected episode (before normalisation), float32."""
        return _gather(self.td["returns"], self.rows)

    @property
    def mean_return(self) -> float:
        """Mean undiscounted return of the selected episodes."""
        return float(self.returns.double().mean()) if len(self) else float("nan")

    @property
    def lengths(self) -> torch.Tensor:
        """Tokens in each selected episode's final context."""
        return self._lengths[self.rows]

    @property
    def max_tokens(self) -> int:
        """The longest selected episode, in tokens."""
        return int(self.lengths.max()) if len(self) else 0

    @property
    def num_actions(self) -> int:
        """Agent actions over the selected episodes."""
        return int(self._num_actions[self.rows].sum())

    @property
    def num_tokens(self) -> int:
        """Tokens over the selected episodes' final contexts."""
        return int(self.lengths.sum())

    def select(self, rows: Any) -> PackedDataset:
        """A view of some rows (indices into this view, or a boolean mask), sharing storage and normalisation."""
        rows = torch.as_tensor(rows)
        if rows.dtype == torch.bool:
            if rows.shape != (len(self),):
                raise ValueError(f"a boolean row mask must have shape ({len(self)},), got {tuple(rows.shape)}")
            rows = rows.nonzero().flatten()
        return PackedDataset(self.td, self.info, self.reward_normalization, self.rows[self._check_rows(rows)],
                             (self._shift, self._scale))

    def _check_rows(self, rows: Any) -> torch.Tensor:
        """Rows as a long tensor, or a clear error if any is out of range."""
        rows = torch.as_tensor(rows)
        if rows.dtype.is_floating_point or rows.dtype == torch.bool or rows.dim() != 1:
            raise TypeError(f"rows must be a 1-d tensor of integer indices, got {rows.dtype} of shape {tuple(rows.shape)}")
        rows = rows.long()
        if len(rows) and (int(rows.min()) < -len(self) or int(rows.max()) >= len(self)):
            raise IndexError(f"row indices must lie in [0, {len(self)}), got {rows.min().item()}..{rows.max().item()}")
        return rows

    def batch(self, rows: Any) -> Batch:
        """The padded training batch of these rows (indices into this view), trimmed to its longest row."""
        rows = self._check_rows(rows)
        if len(rows) == 0:
            raise ValueError("a batch needs at least one row")
        ep = self.rows[rows]
        td = self.td
        n_tok, n_act = self._lengths[ep], self._num_actions[ep]  # every packed episode has >= 1 action
        T, A = int(n_tok.max()), int(n_act.max())
        tok_mask = torch.arange(T) < n_tok[:, None]
        tok_idx = (_gather(td["token_offsets"], ep)[:, None] + torch.arange(T)).clamp(max=len(td["tokens"]) - 1)
        input_ids = torch.where(tok_mask, _gather(td["tokens"], tok_idx).long(), self.pad_token_id)
        act_mask = torch.arange(A) < n_act[:, None]
        act_idx = (_gather(td["action_offsets"], ep)[:, None] + torch.arange(A)).clamp(max=len(td["rewards"]) - 1)
        action_ixs = torch.where(act_mask, _gather(td["action_ixs"], act_idx).long(), 0)
        rewards = torch.where(act_mask, _gather(td["rewards"], act_idx).float(), 0.0)
        rows_ix, last = torch.arange(len(ep)), n_act - 1
        if (self._shift, self._scale) != (0.0, 1.0):  # the return becomes (R - shift) / scale
            rewards = rewards / self._scale
            rewards[rows_ix, last] -= self._shift / self._scale
        notdone = act_mask.float()
        notdone[rows_ix, last] = (~_gather(td["terminated"], ep)).float()
        state_ixs = torch.cat([action_ixs, torch.zeros(len(ep), 1, dtype=torch.long)], dim=1)
        state_ixs[rows_ix, n_act] = n_tok - 1
        return Batch(
            {"input_ids": input_ids, "attention_mask": tok_mask.long(), "action_ixs": action_ixs,
             "state_ixs": state_ixs, "action_mask": act_mask, "rewards": rewards, "notdone": notdone,
             "returns": _gather(td["returns"], ep).float()},
            batch_size=[len(ep)],
        )

    def batches(self, batch_size: int, seed: int = 0, shuffle: bool = True, drop_last: bool = False) -> Iterator[Batch]:
        """One pass over the rows in batches (a seeded permutation when `shuffle`).

        With `drop_last=False` the last batch may be smaller, and a `batch_size` above the number of
        rows gives one batch of every row; with `drop_last=True` that case is an error, not an empty pass.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if len(self) == 0:
            raise ValueError("the packed dataset has no rows to batch")
        if drop_last and batch_size > len(self):
            raise ValueError(f"batch_size {batch_size} exceeds the {len(self)} rows and drop_last=True would yield "
                             "nothing: lower batch_size or pass drop_last=False")
        order = (torch.randperm(len(self), generator=torch.Generator().manual_seed(seed)) if shuffle
                 else torch.arange(len(self)))
        stop = len(self) - len(self) % batch_size if drop_last else len(self)
        for start in range(0, stop, batch_size):
            yield self.batch(order[start:start + batch_size])


def check_vocab(packed: PackedDataset, vocab: Any) -> None:
    """Raise a clear error unless the packed tokens fit a model vocabulary size or match a tokenizer.

    An int is a model's vocabulary size (it may be larger than the dataset's, e.g. padded embeddings);
    a tokenizer must have the dataset's size and, when the dataset carried one, the same tokens.
    """
    if isinstance(vocab, int):
        if vocab < packed.vocab_size:
            raise ValueError(f"the dataset's token ids go up to {packed.vocab_size - 1} but the model's vocabulary "
                             f"has {vocab} entries: build the model with vocab_size >= {packed.vocab_size}")
        return
    if not hasattr(vocab, "get_vocab"):
        raise TypeError(f"vocab must be a vocabulary size (int) or a tokenizer, got {type(vocab).__name__}")
    if len(vocab) != packed.vocab_size:
        raise ValueError(f"the tokenizer has {len(vocab)} tokens but the dataset's vocabulary has "
                         f"{packed.vocab_size}: use the dataset's own tokenizer (textrl.data.load_tokenizer)")
    expected = packed.info.get("vocab_fingerprint")
    if expected is not None and vocab_fingerprint(vocab) != expected:
        raise ValueError("the tokenizer has the dataset's vocabulary size but different tokens: use the dataset's "
                         "own tokenizer (textrl.data.load_tokenizer)")
