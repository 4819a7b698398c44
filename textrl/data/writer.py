"""Write episodes as a Minari dataset with its packed cache, atomically, at an explicit path.

The dataset is assembled in a staging folder under the datasets root and renamed into place
when complete, so an interrupted or failed write leaves nothing under its id. Minari's storage
is created at that explicit path (`MinariStorage.new`), never by pointing process-wide state
such as `MINARI_DATASETS_PATH` elsewhere, so threads writing at once and a sample generator
that opens another dataset meanwhile are safe.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import gymnasium
import minari
from gymnasium import spaces
from minari.dataset.minari_storage import MinariStorage

from textrl.data.cache import write_cache
from textrl.data.hdf5 import EpisodeFile
from textrl.data.packed_dataset import PackBuilder
from textrl.data.store import (
    BUILD_INFO,
    TOKENIZER_DIR,
    check_dataset_id,
    dataset_dir,
    datasets_root,
    open_dataset,
    staging_prefix,
)
from textrl.io import make_temp_dir
from textrl.rollout import Episode

DESCRIPTIVE_KEYS = ("algorithm_name", "code_permalink", "description", "requirements")


def _minari_metadata(dataset_id: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """The dataset metadata Minari's writer would store for these arguments (sets for authors, spec JSON)."""
    out: dict[str, Any] = {"dataset_id": dataset_id, "minari_version": minari.__version__}
    out.update({k: metadata[k] for k in DESCRIPTIVE_KEYS if metadata.get(k) is not None})
    for key in ("author", "author_email"):
        if metadata.get(key) is not None:
            out[key] = {metadata[key]} if isinstance(metadata[key], str) else set(metadata[key])
    if metadata.get("eval_env") is not None:
        out["eval_env_spec"] = gymnasium.spec(metadata["eval_env"]).to_json()
    # Minari keeps reference scores only when it has an eval env: store them for env-less data too.
    out.update({k: float(metadata[k]) for k in ("ref_min_score", "ref_max_score") if metadata.get(k) is not None})
    return out


def _is_disk_full(error: BaseException) -> bool:
    """Whether an error (an OSError, or HDF5's through h5py, which carries no errno) means the disk is full."""
    text = str(error)
    return (getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in text
            or "errno = 28" in text)


@contextlib.contextmanager
def _disk_full_message(dataset_id: str, root: Path) -> Iterator[None]:
    """Turn a full disk, wherever it strikes (hdf5 file, tokenizer, packed cache), into one clear error."""
    try:
        yield
    except Exception as e:
        if not _is_disk_full(e) and not any(_is_disk_full(c) for c in (e.__cause__, e.__context__) if c):
            raise
        free = shutil.disk_usage(root).free / 2**20
        raise OSError(errno.ENOSPC, f"the disk is full: cannot write dataset {dataset_id} under {root} ({free:.1f} "
                      "MiB free); nothing was kept. Free some space or set MINARI_DATASETS_PATH to a larger disk, "
                      "then run it again") from e


def _write_episodes(path: Path, chunks: Iterable[list[Episode]], builder: PackBuilder) -> EpisodeFile:
    """Stream the episodes into an hdf5 file and, in the same pass, the packed arrays."""
    episodes = EpisodeFile(path)
    try:
        for chunk in chunks:
            for ep in chunk:
                builder.add(f"episode {len(builder)}", ep.observations["length"], ep.observations["input_ids"][-1],
                            ep.actions, ep.rewards, ep.terminations)
                episodes.write(ep.observations, ep.actions, ep.rewards, ep.terminations, ep.truncations,
                               {"prompt": ep.prompt, "text": ep.text})
    finally:
        episodes.close()
    return episodes


def write_dataset(
    dataset_id: str,
    chunks: Iterable[list[Episode]],
    observation_space: spaces.Space,
    action_space: spaces.Space,
    tokenizer: Any,
    metadata: dict[str, Any],
    build_info: dict[str, Any],
    overwrite: bool = False,
) -> minari.MinariDataset:
    """Write episode chunks as a Minari dataset with its packed cache, atomically (staged, then renamed).

    Episodes go straight into Minari's hdf5 layout (`textrl.data.hdf5`) and, in the same pass,
    into the packed arrays that `pack` would read back, so the cost per episode is flat and
    packing costs nothing later. `metadata` (Minari's dataset metadata: `env`, `eval_env`,
    reference scores and the descriptive fields) is read after the last chunk, so a streaming
    caller may fill in what it learns on the way. `build_info` (how it was made) is saved as
    `textrl.json` beside the data. A full disk raises one OSError (ENOSPC) saying so. With
    `overwrite`, an existing dataset of that id is replaced once the new one is complete.
    """
    check_dataset_id(dataset_id)
    final = dataset_dir(dataset_id)
    if final.exists() and not overwrite:
        raise FileExistsError(f"dataset {dataset_id} already exists at {final}; delete it, bump the version, or "
                              "pass overwrite=True")
    root = datasets_root()
    root.mkdir(parents=True, exist_ok=True)
    staging = make_temp_dir(root, staging_prefix())
    try:
        with _disk_full_message(dataset_id, root):
            builder = PackBuilder(int(action_space.n), int(observation_space["input_ids"].shape[0]))
            episodes = _write_episodes(staging / "episodes.hdf5", chunks, builder)
            if episodes.episodes == 0:
                raise ValueError(f"dataset {dataset_id}: no episodes to write")
            folder = staging / dataset_id
            folder.mkdir(parents=True)
            env = metadata.get("env")
            storage = MinariStorage.new(folder / "data", observation_space=observation_space,
                                        action_space=action_space, env_spec=gymnasium.spec(env) if env else None,
                                        data_format="hdf5")
            os.replace(episodes.path, Path(storage.data_path) / "main_data.hdf5")
            storage.update_metadata({**_minari_metadata(dataset_id, metadata),
                                     "total_episodes": episodes.episodes, "total_steps": episodes.steps})
            storage.update_metadata({"dataset_size": storage.get_size()})
            tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))
            (folder / BUILD_INFO).write_text(json.dumps(build_info, indent=1))
            write_cache(open_dataset(folder), builder.arrays())
        final.parent.mkdir(parents=True, exist_ok=True)
        if overwrite and final.exists():
            os.replace(final, staging / "replaced")  # removed with the staging folder
        try:
            os.replace(folder, final)
        except OSError as e:
            if final.exists():
                raise FileExistsError(f"dataset {dataset_id} appeared at {final} while this one was written") from e
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return open_dataset(final)
