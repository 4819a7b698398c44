"""A run folder belongs to one run: its identity, a lock against a second process, its metrics log.

The identity of a run is what makes two runs' checkpoints interchangeable: the agent type, the
model's parameter shapes, a fingerprint of the training data, and the config. `run.json` in the
checkpoint folder (and every checkpoint) records it; a fresh run into a folder of another run is
refused, and a resume names what differs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

import torch

from textrl.io import atomic_write_text

__all__ = ["RUN_FILE", "LOCK_FILE", "run_identity", "identity_problems", "config_changes", "read_identity",
           "write_identity", "RunLock", "cut_log", "append_line"]

RUN_FILE = "run.json"
LOCK_FILE = ".lock"

#: train settings that may change between a run and its resumption without changing the run.
SESSION_KEYS = frozenset({
    "train.total_steps", "train.epochs", "train.checkpoint_interval", "train.eval_interval", "train.checkpoint_dir",
    "train.logging_dir", "train.resume_from_checkpoint", "train.progress_bar", "train.tracker", "train.save_best",
    "train.best_metric", "train.eval_episodes",
})


def run_identity(agent: str, model: torch.nn.Module, data: Any, config: Any) -> dict[str, Any]:
    """The identity of a run: agent type, model shapes, data fingerprint and config (JSON-able)."""
    shapes = {name: list(t.shape) for name, t in model.state_dict().items()}
    return {"agent": agent, "model": shapes, "dataset": data_fingerprint(data),
            "config": _flatten(config.to_dict())}


def data_fingerprint(data: Any) -> dict[str, Any]:
    """Row count, dataset id (when known) and a hash of up to 256 rows spread over the data."""
    n = len(data)
    rows = torch.linspace(0, n - 1, steps=min(n, 256)).round().long().unique()
    digest = hashlib.sha256(str(n).encode())
    batch = data.batch(rows)
    for key in sorted(batch.keys()):
        digest.update(key.encode())
        digest.update(batch[key].detach().cpu().contiguous().numpy().tobytes())
    info = getattr(data, "info", None)
    dataset_id = info.get("dataset_id") if isinstance(info, dict) else None
    return {"id": dataset_id, "rows": n, "sha256": digest.hexdigest()[:24]}


def identity_problems(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What makes two identities different runs: agent type, model shapes, dataset (empty if the same)."""
    problems = []
    if stored.get("agent") != current["agent"]:
        problems.append(f"agent type {stored.get('agent')} -> {current['agent']}")
    old_shapes, new_shapes = stored.get("model", {}), current["model"]
    if old_shapes != new_shapes:
        changed = [f"{k} {old_shapes.get(k)} -> {new_shapes.get(k)}"
                   for k in sorted(set(old_shapes) | set(new_shapes)) if old_shapes.get(k) != new_shapes.get(k)]
        problems.append(f"model shape ({len(changed)} tensors differ, e.g. {'; '.join(changed[:3])})")
    old_data, new_data = stored.get("dataset", {}), current["dataset"]
    if old_data != new_data:
        problems.append(f"dataset {_describe(old_data)} -> {_describe(new_data)}")
    return problems


def config_changes(stored: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Config keys (dotted) whose values differ, other than the per-session settings."""
    old, new = stored.get("config", {}), current["config"]
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and k not in SESSION_KEYS}


def _describe(data: dict[str, Any]) -> str:
    name = data.get("id") or "data"
    return f"{name} ({data.get('rows')} rows, content {data.get('sha256')})"


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; values are made JSON-plain (tuples become lists)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.loads(json.dumps(value, default=str))
    return out


def read_identity(path: Path) -> Optional[dict[str, Any]]:
    """The identity stored at `path`, or None when there is none."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise ValueError(f"{path} is damaged (not valid JSON): delete it to use the folder again") from None


def write_identity(path: Path, identity: dict[str, Any]) -> None:
    """Record a run's identity at `path` (atomically)."""
    atomic_write_text(path, json.dumps(identity, indent=1))


class RunLock:
    """An exclusive lock on a run folder: `.lock` holds the owner's pid, and `flock` guards it.

    The kernel drops a `flock` when its process dies, so a lock left by a killed run is free
    again and the next run takes it over; a live owner makes `acquire` fail with its pid.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self.fd: Optional[int] = None

    def acquire(self) -> None:
        """Take the lock, or raise naming the pid of the live process that holds it."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RuntimeError(
                    f"another process (pid {owner}) is training into {self.path.parent}: two runs in one "
                    "train.checkpoint_dir would mix their checkpoints and logs. Wait for it to end or choose "
                    "another train.checkpoint_dir"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break  # else the owner removed the file as we opened it: lock the new one
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        """Remove the lock file and give the lock back (the kernel drops it too when the process ends)."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)  # closing drops the flock
        self.fd = None


def cut_log(path: Path, last_step: int) -> None:
    """Keep the whole records of `path` (JSON lines) with step <= `last_step`; drop torn lines.

    A resumed run replays the steps after its checkpoint, so their old records are removed first.
    """
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line torn by a kill
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= last_step:
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))


def append_line(path: Path, line: str) -> None:
    """Append one whole line with a single write to an O_APPEND file (a kill cannot interleave records)."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
    finally:
        os.close(fd)
