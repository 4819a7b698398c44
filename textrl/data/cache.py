"""Pack a Minari token dataset once into flat tensors, cached beside it and keyed by its content.

A dataset textrl writes gets its cache in the same pass as its hdf5 file (`write_cache`), so
`pack` only opens it. Any other dataset is packed once by streaming its hdf5 file episode by
episode with h5py's low-level reads (about 4x faster than the high-level API, yet only about
1,000 to 2,000 episodes/s: Minari's per-episode groups are the bottleneck); no episode is kept
as a Python object. The cache is raw arrays, memory-mapped as a TensorDict, under `<dataset>/packed/<key>/`, where the key
hashes the data files and the packing options, so a changed dataset is repacked and an
unchanged one is opened in milliseconds without touching Minari. `info.json` records the size and
sha256 checksum of every cache file; a cache that fails the check on opening is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import h5py
import minari
import numpy as np
import torch
from gymnasium import spaces
from h5py import h5d, h5g, h5s
from tqdm.auto import tqdm

from textrl.data.packed_dataset import (
    DamagedCacheError,
    PackBuilder,
    PackedDataset,
    file_checksums,
    normalizer,
    save_arrays,
    vocab_fingerprint,
)
from textrl.data.store import TOKENIZER_DIR, env_id_of, folder_of, load, load_tokenizer
from textrl.io import atomic_directory, atomic_write_text, file_sha256

PACK_VERSION = 4  # 3: token ids over 256 are int16/int32 (torch cannot gather uint16); 4: raw .bin arrays
CACHE_DIR = "packed"
DIGESTS = "digests.json"


def check_spaces(dataset: minari.MinariDataset) -> tuple[int, int]:
    """(vocab size, max length) of a token dataset, or a clear error naming the space that is wrong."""
    obs, act = dataset.observation_space, dataset.action_space
    if not isinstance(act, spaces.Discrete) or int(act.start) != 0:
        raise ValueError(f"the dataset's action space is {act}, not Discrete(vocab_size): not a token dataset")
    ids = obs.spaces.get("input_ids") if isinstance(obs, spaces.Dict) else None
    if (set(getattr(obs, "spaces", {})) != {"input_ids", "length"} or not isinstance(ids, spaces.Box)
            or len(ids.shape) != 1 or not np.issubdtype(ids.dtype, np.integer)):
        raise ValueError(f"the dataset's observation space is {obs}; a token dataset has Dict('input_ids': Box of "
                         "integer token ids of shape (max_length,), 'length': Box(())) as in docs/architecture.md")
    if int(ids.high.max()) >= int(act.n):
        raise ValueError(f"the observation token ids go up to {int(ids.high.max())} but the action space is {act}: "
                         "observations and actions must share one vocabulary")
    return int(act.n), int(ids.shape[0])


def _file_digest(path: Path, memo: dict[str, Any]) -> str:
    """sha256 of a file, remembered by (size, mtime, inode) so an unchanged file is hashed once."""
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    known = memo.get(path.name)
    if known and known["stamp"] == stamp:
        return known["sha256"]
    digest = file_sha256(path)
    memo[path.name] = {"stamp": stamp, "sha256": digest}
    return digest


def content_key(dataset: minari.MinariDataset, options: dict[str, Any]) -> str:
    """A key of the dataset's data files, its selected episodes and the packing options."""
    data_path = Path(dataset.storage.data_path)
    memo_path = folder_of(dataset) / CACHE_DIR / DIGESTS
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    before = json.dumps(memo, sort_keys=True)
    key = hashlib.sha256(json.dumps({"pack_version": PACK_VERSION, **options}, sort_keys=True).encode())
    for f in sorted(p for p in data_path.iterdir() if p.is_file()):
        key.update(f"{f.name}:{_file_digest(f, memo)}".encode())
    indices = np.asarray(dataset.episode_indices, dtype=np.int64)
    if not np.array_equal(indices, np.arange(dataset.storage.total_episodes)):
        key.update(indices.tobytes())
    if json.dumps(memo, sort_keys=True) != before:
        try:
            atomic_write_text(memo_path, json.dumps(memo))
        except OSError:
            pass  # a read-only dataset folder only costs a re-hash next time
    return key.hexdigest()[:24]


class _HDF5EpisodeReader:
    """Low-level reads of one Minari hdf5 file's episodes (h5py's high-level API costs ~4x more per read)."""

    def __init__(self, path: Path) -> None:
        self.file = h5py.File(path, "r")

    def group(self, episode: int) -> h5g.GroupID:
        return h5g.open(self.file.id, f"episode_{episode}".encode())

    @staticmethod
    def read(group: h5g.GroupID, name: bytes) -> np.ndarray:
        d = h5d.open(group, name)
        out = np.empty(d.shape, d.dtype)
        d.read(h5s.ALL, h5s.ALL, out)
        return out

    @staticmethod
    def last_row(group: h5g.GroupID, name: bytes) -> np.ndarray:
        d = h5d.open(group, name)
        space = d.get_space()
        rows, width = space.shape
        space.select_hyperslab((rows - 1, 0), (1, width))
        out = np.empty((1, width), d.dtype)
        d.read(h5s.create_simple((1, width)), space, out)
        return out[0]


def read_packed_arrays(dataset: minari.MinariDataset, vocab: int, max_length: int,
                       progress: bool = False) -> dict[str, np.ndarray]:
    """Stream the dataset's episodes into flat, compact arrays (checking each episode on the way)."""
    files = sorted(Path(dataset.storage.data_path).glob("*.hdf5"))
    if len(files) != 1:
        raise ValueError(f"{dataset.storage.data_path}: packing reads Minari's hdf5 format, one main_data.hdf5; "
                         f"found {[f.name for f in files]}")
    indices = np.asarray(dataset.episode_indices, dtype=np.int64)
    steps = int(dataset.total_steps)
    builder = PackBuilder(vocab, max_length)
    try:
        episodes = _HDF5EpisodeReader(files[0])
    except OSError as e:
        raise ValueError(f"cannot open {files[0]} ({e}): the file is damaged or truncated; rebuild the dataset") from e
    with episodes.file, tqdm(total=len(indices), desc="pack", unit="ep", disable=not progress) as bar:
        for i in indices:
            try:
                group = episodes.group(i)
                lengths = episodes.read(group, b"observations/length")
                acts = episodes.read(group, b"actions")
                rew = episodes.read(group, b"rewards")
                term = episodes.read(group, b"terminations")
                final_row = episodes.last_row(group, b"observations/input_ids")
            except (KeyError, OSError, ValueError) as e:
                raise ValueError(f"episode {i} of {files[0]} cannot be read ({e}): the file is damaged or truncated; "
                                 "rebuild the dataset") from e
            builder.add(f"episode {i}", lengths, final_row, acts, rew, term)
            if builder.action_offsets[-1] > steps:
                raise ValueError(f"the dataset holds more steps than its metadata's total_steps={steps}: it is damaged")
            bar.update()
    if builder.action_offsets[-1] != steps:
        raise ValueError(f"the episodes hold {builder.action_offsets[-1]} steps but the metadata says {steps}: the "
                         "dataset is damaged; rebuild it")
    return builder.arrays()


def _tokenizer_facts(dataset: minari.MinariDataset) -> tuple[int | None, str | None]:
    """(pad id, vocabulary fingerprint) of the tokenizer saved with the dataset, if there is one."""
    path = folder_of(dataset) / TOKENIZER_DIR
    if not path.is_dir():
        return None, None
    tok = load_tokenizer(dataset)
    return tok.pad_token_id, vocab_fingerprint(tok)


def _open_cache(cache: Path, reward_normalization: str) -> PackedDataset | None:
    """The cached packing if it exists and passes its size and checksum check; None (with a warning
    when a damaged one is found) means it must be built."""
    if not cache.exists():
        return None
    try:
        return PackedDataset.load(cache, reward_normalization)
    except DamagedCacheError as e:
        warnings.warn(f"{e}; repacking it from the dataset", stacklevel=3)
        return None


def pack(dataset: Any, reward_normalization: str = "none", pad_token_id: int | None = None,
         progress: bool = False) -> PackedDataset:
    """The packed form of a dataset (object, id or folder): opened from its cache, or built once and cached.

    `pad_token_id` defaults to the pad token of the dataset's tokenizer (0 if it has none).
    Reward normalisation ("none", "zscore", "scale") is applied when batches are made, so all
    three share one cache.
    """
    normalizer(torch.zeros(0), reward_normalization)  # reject a bad name before any work
    dataset = load(dataset)
    vocab, max_length = check_spaces(dataset)
    if pad_token_id is not None and not 0 <= int(pad_token_id) < vocab:
        raise ValueError(f"pad_token_id {pad_token_id} is outside the dataset's vocabulary [0, {vocab})")
    options = {"pad_token_id": pad_token_id}
    cache = folder_of(dataset) / CACHE_DIR / content_key(dataset, options)
    packed = _open_cache(cache, reward_normalization)
    if packed is None:
        write_cache(dataset, read_packed_arrays(dataset, vocab, max_length, progress), pad_token_id)
        packed = PackedDataset.load(cache, reward_normalization)
    return packed


def write_cache(dataset: minari.MinariDataset, arrays: dict[str, np.ndarray], pad_token_id: int | None = None) -> Path:
    """Store packed arrays as the dataset's cache under the key `pack(dataset, pad_token_id=...)` looks for."""
    vocab, max_length = check_spaces(dataset)
    cache = folder_of(dataset) / CACHE_DIR / content_key(dataset, {"pad_token_id": pad_token_id})
    tok_pad, fingerprint = _tokenizer_facts(dataset)
    pad = pad_token_id if pad_token_id is not None else (tok_pad if tok_pad is not None else 0)
    info = {"num_episodes": len(arrays["returns"]), "vocab_size": vocab, "max_length": max_length,
            "pad_token_id": int(pad), "vocab_fingerprint": fingerprint, "env_id": env_id_of(dataset),
            "dataset_id": dataset.spec.dataset_id, "pack_version": PACK_VERSION}
    with atomic_directory(cache) as tmp:
        layout = save_arrays(tmp, arrays)
        (tmp / "info.json").write_text(json.dumps({**info, "arrays": layout, "checksums": file_checksums(tmp)}))
    return cache
