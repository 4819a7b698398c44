"""A run folder belongs to one run: its identity, a lock against a second process, its metrics log.

The identity of a run is what makes two runs' checkpoints interchangeable: the agent type, the
model's parameter shapes, a fingerprint of the training data, and the config. `run.json` in the
checkpoint folder (and every checkpoint) records it; a fresh run into a folder of another run is
refused, and a resume names what differs. `RunFolder` does all of this for the trainer, which
only trains, evaluates and checkpoints.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from safetensors import SafetensorError

from textrl.checkpoint_checks import check_identity
from textrl.io import atomic_write_text, clean_leftovers, open_no_follow

__all__ = ["RUN_FILE", "LOCK_FILE", "METRICS_FILE", "RunFolder", "ResumeWarning", "FolderBusyError", "run_identity",
           "identity_problems", "config_changes", "read_identity", "write_identity", "RunLock", "cut_log",
           "append_line"]

RUN_FILE = "run.json"
LOCK_FILE = ".lock"
METRICS_FILE = "metrics.jsonl"
STEP_DIR = re.compile(r"^step_(\d+)$")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a training run; the message is the one line that says where the last checkpoint is
    and how to resume. Raised instead of printed, so that a caller with its own way to resume (`textrl
    bench`) can say only that, and a script's traceback ends with the advice."""


class ResumeWarning(UserWarning):
    """A run that may not do what the user expects: a resume with changed settings or nothing left to
    train, or a fresh start over checkpoints it could have resumed from."""

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
        identity = json.loads(path.read_text())
    except ValueError:
        raise ValueError(f"{path} is damaged (not valid JSON): delete it to use the folder again") from None
    check_identity(identity, path)
    return identity


def write_identity(path: Path, identity: dict[str, Any]) -> None:
    """Record a run's identity at `path` (atomically)."""
    atomic_write_text(path, json.dumps(identity, indent=1))


class FolderBusyError(RuntimeError):
    """Another live process holds the folder; `pid` names it (as its lock file says)."""

    def __init__(self, message: str, pid: str) -> None:
        super().__init__(message)
        self.pid = pid


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
            fd = open_no_follow(self.path, os.O_RDWR | os.O_CREAT, "run folder's lock")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise FolderBusyError(
                    f"another process (pid {owner}) is training into {self.path.parent}: two runs in one "
                    "train.checkpoint_dir would mix their checkpoints and logs. Wait for it to end or choose "
                    "another train.checkpoint_dir", owner,
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
    with os.fdopen(open_no_follow(path, os.O_RDONLY, "metrics log"), encoding="utf-8", errors="replace") as f:
        text = f.read()
    for line in text.splitlines():
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
    fd = open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, "metrics log")
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
    finally:
        os.close(fd)


class RunFolder:
    """The folder a run trains into (`train.checkpoint_dir`) and the one it logs into: who holds it, which
    run it belongs to, where a resume starts, and the messages that name it (disk full, Ctrl-C).

    `open` claims the folder before training and `close` gives it back; with several processes
    (DDP) only the main one holds the lock and writes, and every rank stops when it is refused.
    """

    def __init__(self, run_dir: Path, log_dir: Path, accelerator: Any, tracker: str) -> None:
        self.run_dir, self.log_dir, self.accelerator, self.tracker = run_dir, log_dir, accelerator, tracker
        self.identity: Optional[dict[str, Any]] = None
        self.last_checkpoint: Optional[Path] = None
        self._lock: Optional[RunLock] = None
        self._recorded = False

    def open(self, identity: dict[str, Any], resume_from: Optional[str],
             load: Callable[[str], tuple[Path, int]]) -> None:
        """Claim the folder for the run of `identity`: the lock, leftovers, the identity of the run it holds,
        and the resume point (`load(resume_from)` restores a checkpoint and returns its folder and step).
        The metrics log is cut back to the step the run starts from."""
        acc = self.accelerator
        for setting, folder in (("train.checkpoint_dir", self.run_dir), ("train.logging_dir", self.log_dir)):
            blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
            if blocker is not None:
                raise ValueError(f"{setting}={folder}: {blocker} is a file, not a folder. Point {setting} at a "
                                 "folder (it is created if missing) or move the file away")
        refused = None
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            try:
                lock = RunLock(self.run_dir)
                lock.acquire()
                self._lock = lock
            except RuntimeError as e:
                refused = e
        if acc.num_processes > 1:  # every rank stops, not only the one that found the lock taken
            flag = acc.reduce(torch.tensor([float(refused is not None)], device=acc.device), reduction="sum")
            if flag.item() and refused is None:
                raise RuntimeError(f"the main process could not lock train.checkpoint_dir {self.run_dir}: "
                                   "another process is training into it (the main process names its pid)")
        if refused is not None:
            raise refused
        try:
            self.identity = identity
            if acc.is_main_process:
                clean_leftovers(self.run_dir)
            acc.wait_for_everyone()
            stored = read_identity(self.run_dir / RUN_FILE)
            step = 0
            if resume_from:
                path, step = load(resume_from)
                elsewhere = self.run_dir.resolve() not in path.resolve().parents
                if elsewhere and stored is not None and identity_problems(stored, identity):
                    raise ValueError(
                        f"train.checkpoint_dir {self.run_dir} holds another run; differs in: "
                        f"{'; '.join(identity_problems(stored, identity))}. Resume into that run's folder "
                        "or choose another train.checkpoint_dir"
                    )
            else:
                self._check_fresh(stored)
            acc.wait_for_everyone()
            if acc.is_main_process and self.tracker == "jsonl":
                cut_log(self.log_dir / METRICS_FILE, step)
        except BaseException:
            self.close()
            raise

    def started(self) -> None:
        """Record the run's identity in `run.json` once its first step is done: a run that fails before it
        (a bad setting found late) leaves no identity behind to refuse the corrected run."""
        if self.accelerator.is_main_process and not self._recorded:
            write_identity(self.run_dir / RUN_FILE, self.identity)
        self._recorded = True

    def close(self) -> None:
        """Give the folder back (the lock; the kernel frees it too if the process dies)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def check_checkpoint(self, path: Path, stored: Optional[dict[str, Any]], step: int) -> None:
        """Refuse a checkpoint of another run (agent type, model shape, dataset) with what differs; warn about
        settings that changed since it was written."""
        if self.identity is None or stored is None:
            return
        problems = identity_problems(stored, self.identity)
        if problems:
            raise ValueError(
                f"cannot resume from {path}: it is a checkpoint of another run; differs in: {'; '.join(problems)}. "
                "Point train.resume_from_checkpoint at a checkpoint of this run, or start afresh in another "
                "train.checkpoint_dir"
            )
        changes = config_changes(stored, self.identity)
        if not changes:
            return
        kept = [k for k in changes if k.split(".")[0] in ("optimizer", "scheduler")]
        listed = ", ".join(f"{k} ({old!r} -> {new!r})" for k, (old, new) in changes.items())
        what = (f"{', '.join(kept)} {'is' if len(kept) == 1 else 'are'} ignored: the optimizer and scheduler "
                "continue with the state stored in the checkpoint. " if kept else "")
        warnings.warn(f"resuming from {path} with settings that differ from the checkpoint's: {listed}. {what}"
                      f"Other changes apply from step {step + 1} on, so the run is not the one the checkpoint began",
                      ResumeWarning, stacklevel=4)

    def _check_fresh(self, stored: Optional[dict[str, Any]]) -> None:
        """Refuse a fresh run into a folder of another run (or of an unknown one, with checkpoints).

        The same run started again is allowed with a warning: its checkpoints are what it would
        write anyway, so they are overwritten as it goes (and a later one stays valid to resume).
        """
        steps = sorted(p.name for p in self.run_dir.glob("step_*") if STEP_DIR.match(p.name))
        differs = identity_problems(stored, self.identity) if stored is not None else []
        if stored is not None:
            differs += [f"{k} ({old!r} -> {new!r})" for k, (old, new) in config_changes(stored, self.identity).items()]
        if differs:
            raise ValueError(
                f"train.checkpoint_dir {self.run_dir} holds another run; differs in: {'; '.join(differs)}. "
                "A fresh run there would mix two runs: choose another train.checkpoint_dir, or delete that folder"
            )
        if steps and stored is None:
            raise ValueError(
                f"train.checkpoint_dir {self.run_dir} holds checkpoints (up to {steps[-1]}) of a run it has no "
                f"{RUN_FILE} for: a fresh run there could mix with it. Choose another train.checkpoint_dir, or "
                "delete that folder"
            )
        if steps:
            warnings.warn(f"train.checkpoint_dir {self.run_dir} already holds checkpoints of this run (up to "
                          f"{steps[-1]}): starting it over from step 0. To continue it instead, set "
                          f"train.resume_from_checkpoint={self.run_dir}", ResumeWarning, stacklevel=5)

    @contextlib.contextmanager
    def disk_full_names(self, path: Path) -> Iterator[None]:
        """Turn a full disk during a write of `path` into an error naming the folder and the last good checkpoint
        (safetensors reports it as a `SafetensorError` carrying the OS error, not as an OSError)."""
        try:
            yield
        except (OSError, SafetensorError) as e:
            full = e.errno == errno.ENOSPC if isinstance(e, OSError) else f"os error {errno.ENOSPC})" in str(e)
            if not full:
                raise
            kept = f"the last good checkpoint {self.last_checkpoint} is intact" if self.last_checkpoint else \
                "no earlier checkpoint exists"
            raise OSError(errno.ENOSPC, f"the disk is full: cannot write {path} (in train.checkpoint_dir "
                                        f"{self.run_dir}); {kept}. Free some space, then resume with "
                                        f"train.resume_from_checkpoint={self.run_dir}") from e

    def interrupted_line(self, step: int, checkpoint_interval: int) -> str:
        """The one line Ctrl-C prints: the step, the last checkpoint, and the setting that resumes."""
        if self.last_checkpoint is None:
            return (f"textrl: interrupted at step {step}, before the first checkpoint "
                    f"(train.checkpoint_interval={checkpoint_interval}): nothing to resume from")
        return (f"textrl: interrupted at step {step}; the last checkpoint is {self.last_checkpoint}. "
                f"Resume with train.resume_from_checkpoint={self.run_dir}")
