"""Minari datasets on disk: write episodes atomically, find and open datasets, their tokenizer and task.

A dataset is a Minari folder `<MINARI_DATASETS_PATH>/<id>/` (hdf5) plus `tokenizer/` beside its
`data/`, so a model can be fitted to it without knowing where it came from, and `textrl.json`
with how textrl built it. Each episode's prompt and decoded text are stored as its reset options
(Minari's per-episode metadata; `episode_texts` reads them): the prompt is exactly what
`env.reset(options=...)` accepts, and nothing is repeated at every step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import h5py
import minari

from textrl.pretrained import load_pretrained

TOKENIZER_DIR = "tokenizer"
BUILD_INFO = "textrl.json"
# Minari's own dataset-id rule (minari.dataset.minari_dataset.DATASET_ID_RE), with the namespace and the
# version required: word characters, '-', '_' and '/' only, so no id can hold '.', '..', an absolute path or
# a drive. Always used with `fullmatch` (a `$` would let a trailing newline through).
_ID = re.compile(r"(?P<namespace>[-_\w][-_\w/]*[-_\w]+)/(?P<name>[-_\w]+?)-v(?P<version>\d+)")
STAGING_PREFIX = ".staging-"


def datasets_root() -> Path:
    """Where datasets live: MINARI_DATASETS_PATH, or Minari's default folder."""
    from minari.storage.datasets_root_dir import get_dataset_path

    return Path(get_dataset_path())


def check_dataset_id(dataset_id: str) -> None:
    """Raise a clear error unless `dataset_id` is `namespace/name-vN`, a path that stays under the datasets root."""
    if isinstance(dataset_id, str) and not _ID.fullmatch(dataset_id):
        parts = re.split(r"[/\\]", dataset_id)
        if ".." in parts or "." in parts or dataset_id.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", dataset_id):
            raise ValueError(
                f"dataset id {dataset_id!r} is a path that leaves the datasets root ('..', '.', or an absolute path): "
                "a dataset id is 'namespace/name-vN'; to open a dataset folder elsewhere pass a pathlib.Path"
            )
        if "\\" in dataset_id:
            raise ValueError(f"dataset id {dataset_id!r} contains a backslash: a dataset id is 'namespace/name-vN' "
                             "with '/' between its parts")
    if not isinstance(dataset_id, str) or not _ID.fullmatch(dataset_id):
        raise ValueError(
            f"malformed dataset id {dataset_id!r}: expected 'namespace/name-vN' such as "
            "'textrl/randomwalks/random-v1' (Minari's rule: letters, digits, '_' and '-' with '/' between the "
            "parts, a namespace of 2+ characters, a version number at the end; no '.', spaces or newlines)"
        )


def dataset_dir(dataset_id: str) -> Path:
    """The folder of a dataset id under the datasets root (the id is checked first: it never leaves the root)."""
    check_dataset_id(dataset_id)
    return datasets_root() / dataset_id


def _host() -> str:
    """This machine's name as it appears in staging folder names (no '-' or '@')."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def staging_prefix() -> str:
    """The name prefix of a build's staging folder: it records the building process (pid@host),
    so a later run can tell the leftovers of a killed build from a build still in progress."""
    return f"{STAGING_PREFIX}{os.getpid()}@{_host()}-"


def _owner_alive(name: str) -> bool | None:
    """Whether the process that made a staging folder still runs: None when that cannot be told
    (no pid recorded, or another host)."""
    m = re.match(rf"^{re.escape(STAGING_PREFIX)}(\d+)@([^-]+)-", name)
    if not m or m[2] != _host():
        return None
    try:
        os.kill(int(m[1]), 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: the pid exists under another user
        return True
    return True


def staging_leftovers() -> list[tuple[Path, bool | None]]:
    """The staging folders under the datasets root and whether their builder still runs (None: unknown)."""
    root = datasets_root()
    if not root.is_dir():
        return []
    return [(p, _owner_alive(p.name)) for p in sorted(root.glob(f"{STAGING_PREFIX}*")) if p.is_dir()]


def clean_staging_leftovers() -> list[Path]:
    """Remove the staging folders of builds whose process is gone (killed builds); return what was removed."""
    removed = []
    for path, alive in staging_leftovers():
        if alive is False:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def written_line(dataset: minari.MinariDataset, seconds: float, unit: str = "episodes") -> str:
    """One line saying what a write produced: count, steps, rate and size on disk."""
    folder = folder_of(dataset)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    n = dataset.total_episodes
    return (f"{dataset.spec.dataset_id}: wrote {n} {unit} ({dataset.total_steps} steps) in {seconds:.1f} s "
            f"({n / max(seconds, 1e-9):.0f} {unit}/s), {size / 2**20:.1f} MiB at {folder}")


def open_dataset(path: str | os.PathLike) -> minari.MinariDataset:
    """Open the Minari dataset in a folder (the one holding `data/`), with a clear error if it is not one."""
    path = Path(path)
    data = path / "data" if (path / "data").is_dir() else path
    if not (data / "metadata.json").is_file():
        raise FileNotFoundError(f"{path} is not a Minari dataset folder (no data/metadata.json)")
    try:
        dataset = minari.MinariDataset(data)
    except Exception as e:  # Minari raises several types for damaged metadata
        raise ValueError(f"cannot open the dataset at {path}: {e}. It may be damaged: rebuild it") from e
    _check_hdf5(dataset)
    return dataset


def _check_hdf5(dataset: minari.MinariDataset) -> None:
    """A cheap integrity check: the hdf5 file opens and holds the last episode the metadata promises."""
    files = list(Path(dataset.storage.data_path).glob("*.hdf5"))
    if not files:
        return  # another Minari format: its own reader reports damage
    last = f"episode_{dataset.storage.total_episodes - 1}"
    try:
        with h5py.File(files[0], "r") as f:
            complete = last in f
    except OSError as e:
        raise ValueError(f"the dataset file {files[0]} is damaged or truncated ({e}): rebuild the dataset") from e
    if not complete:
        raise ValueError(f"the dataset file {files[0]} lacks {last} that its metadata promises: it is incomplete; "
                         "rebuild the dataset")


def load(dataset: Any) -> minari.MinariDataset:
    """A Minari dataset from a `MinariDataset`, a local dataset id, or a dataset folder.

    A string shaped like an id (`namespace/name-vN`) always means a dataset under the datasets
    root; any other string naming an existing folder, or a `pathlib.Path`, is opened as a folder.
    """
    if isinstance(dataset, minari.MinariDataset):
        return dataset
    if isinstance(dataset, os.PathLike) or (isinstance(dataset, str) and not _ID.fullmatch(dataset)
                                             and os.path.isdir(dataset)):
        return open_dataset(dataset)
    if not isinstance(dataset, str):
        raise TypeError(f"expected a MinariDataset, a dataset id or a folder, got {type(dataset).__name__}")
    folder = dataset_dir(dataset)
    if not folder.is_dir():
        known = ", ".join(local_dataset_ids()) or "none"
        raise FileNotFoundError(
            f"no local dataset {dataset!r} under {datasets_root()} (local datasets: {known}); build a task "
            "dataset with textrl.make_dataset(id) or `textrl data build ID`"
        )
    return open_dataset(folder)


def local_dataset_ids() -> list[str]:
    """Ids of the datasets under the datasets root."""
    root = datasets_root()
    if not root.is_dir():
        return []
    return sorted(str(p.parent.parent.relative_to(root)) for p in root.glob("**/data/metadata.json")
                  if not any(part.startswith(".") for part in p.relative_to(root).parts))


def folder_of(dataset: minari.MinariDataset) -> Path:
    """The dataset's folder (the parent of its `data/`)."""
    return Path(dataset.storage.data_path).parent


def load_tokenizer(dataset: Any) -> Any:
    """The tokenizer saved with a dataset."""
    from transformers import AutoTokenizer

    path = folder_of(load(dataset)) / TOKENIZER_DIR
    if not path.is_dir():
        raise FileNotFoundError(f"the dataset at {path.parent} carries no tokenizer/ folder; pass a tokenizer")
    return load_pretrained(AutoTokenizer, path)


def env_id_of(dataset: minari.MinariDataset) -> str | None:
    """The registered env id the dataset evaluates on (its eval env, else the env it was collected in, else
    the env that `from_samples(..., env=...)` recorded in textrl.json), if any."""
    eval_spec = dataset.storage.metadata.get("eval_env_spec")  # Minari stores the EnvSpec as JSON
    if eval_spec is not None:
        return str(json.loads(eval_spec)["id"])
    if dataset.env_spec is not None:
        return dataset.env_spec.id
    return build_info(dataset).get("env_id")  # from_samples(..., env=...): a reward function is not serialisable


def build_info(dataset: Any) -> dict[str, Any]:
    """How textrl built a dataset (its `textrl.json`), or {} for a dataset made elsewhere."""
    path = folder_of(load(dataset)) / BUILD_INFO
    return json.loads(path.read_text()) if path.is_file() else {}


def episode_texts(dataset: Any, indices: Iterable[int]) -> Iterator[tuple[str, str]]:
    """(prompt, decoded text) of the chosen episodes, from their stored reset options."""
    dataset = load(dataset)
    for meta in dataset.storage.get_episode_metadata(list(indices)):
        options = meta.get("options", {})
        yield str(options.get("prompt", "")), str(options.get("text", ""))
