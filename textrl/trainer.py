"""The one offline training loop every agent shares.

An agent hands the trainer a `Learner` (its model, its loss, what to do after each optimizer
step, how to save itself) and a `BatchSource` of packed episodes. The trainer owns the rest:
accelerate (devices, mixed precision, DDP), sharding (`train.fsdp`, textrl/sharding.py), seeded batch order, gradient accumulation,
clipping, logging, evaluation, atomic checkpoints and exact resumption.

A checkpoint holds no pickle: tensors are in safetensors and the rest in JSON, each file's
sha256 in a manifest. A run folder belongs to one run (textrl/runs.py): a fresh run into a
folder of another is refused, a resume checks that the checkpoint is of the same run, and a
second process on the folder is locked out.

Every loss must be a mean over the valid actions of its batch: the trainer weights each
minibatch (and each process's share) by its count of valid actions, so accumulation and
DDP reproduce the full-batch gradient.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Protocol

import numpy as np
import torch
from tensordict import TensorDict
from tqdm.auto import tqdm

from textrl.checkpoint_checks import check_trainer_tensors, check_trainer_values
from textrl.config import TRLConfig
from textrl.io import (
    DamagedFileError,
    atomic_directory,
    atomic_write_text,
    verify_manifest,
    write_manifest,
)
from textrl.optim import build_optimizer, build_scheduler
from textrl.runs import (
    METRICS_FILE,
    STEP_DIR,
    ResumeWarning,
    RunFolder,
    TrainingInterrupted,
    append_line,
    run_identity,
)
from textrl.safe_state import load_state, save_state

if TYPE_CHECKING:
    from textrl.sharding import ShardedModel

__all__ = [
    "Learner",
    "BatchSource",
    "Trainer",
    "NonFiniteLossError",
    "find_checkpoint",
    "split_by_length",
    "seed_everything",
    "TRAINER_STATE",
    "ResumeWarning",
]

TRAINER_STATE = "trainer_state.json"
TRAINER_TENSORS = "trainer_state.safetensors"
SHARD_STATE = "shard_{rank:05d}.json"  # one process's shards of model and optimizer (train.fsdp)
SHARD_TENSORS = "shard_{rank:05d}.safetensors"


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the message names the step and the stats."""


class Learner(Protocol):
    """What an agent gives the trainer."""

    model: torch.nn.Module

    def loss(self, model: torch.nn.Module, batch: TensorDict) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss (a mean over valid actions) and float stats of one batch."""

    def after_optimizer_step(self, model: torch.nn.Module, step: int) -> None:
        """Work after optimizer step `step` (1-based), e.g. target-network sync."""

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the agent (model, heads, tokenizer, config) to a directory."""


class BatchSource(Protocol):
    """Packed episodes addressable by row.

    A source that also has `lengths` (a tensor of each row's tokens, as `PackedDataset` has) gets each
    step's rows sorted by length before they are split into `train.minibatch_size` minibatches, so
    each minibatch pads to rows of similar length; the step's rows, and so its gradient, are unchanged.
    """

    def __len__(self) -> int: ...

    def batch(self, rows: torch.Tensor) -> TensorDict:
        """The padded training batch of these rows (the contract in docs/architecture.md)."""


EvalFn = Callable[[int, int], dict[str, np.ndarray]]
"""`eval_fn(num_episodes, seed)` runs rollouts and returns per-episode arrays, e.g. {"score": ...}, or
scalars (numbers that are no per-episode values, such as a `metric_fn`'s)."""


@dataclass
class _State:
    """What a checkpoint must restore besides the model and optimizer."""

    step: int = 0
    best: float = -math.inf


def split_by_length(rows: torch.Tensor, splits: int, lengths: Optional[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """`rows` in `splits` minibatches, sorted by `lengths` (tokens per row of the source; None: as they are)
    first: a batch is trimmed to its longest row, so rows of similar length pad less."""
    if splits > 1 and lengths is not None:
        rows = rows[torch.argsort(lengths[rows], stable=True)]
    return rows.chunk(splits)


def find_checkpoint(path: str | os.PathLike) -> Path:
    """Resolve a checkpoint: a `step_N` folder itself, or the newest complete one under a run folder."""
    path = Path(path)
    if (path / TRAINER_STATE).is_file():
        return path
    steps = sorted(
        (int(m.group(1)), p) for p in path.glob("step_*") if (m := STEP_DIR.match(p.name)) and (p / TRAINER_STATE).is_file()
    ) if path.is_dir() else []
    if not steps:
        raise FileNotFoundError(
            f"no checkpoint at {path}: expected a step_N folder holding {TRAINER_STATE}, or a run folder "
            "containing such folders (train.checkpoint_dir of an earlier run)"
        )
    return steps[-1][1]


class Trainer:
    """Runs `config.train.total_steps` optimizer steps of a learner over a batch source."""

    def __init__(
        self,
        learner: Learner,
        data: BatchSource,
        config: TRLConfig,
        eval_fn: Optional[EvalFn] = None,
    ) -> None:
        from accelerate import Accelerator

        self.learner, self.data, self.config, self.eval_fn = learner, data, config, eval_fn
        self.lengths: Optional[torch.Tensor] = getattr(data, "lengths", None)  # tokens per row, if the source knows
        self.train_cfg = config.train
        self.accelerator = Accelerator(mixed_precision=self.train_cfg.mixed_precision, cpu=not torch.cuda.is_available())
        world = self.accelerator.num_processes
        if len(data) < self.train_cfg.batch_size:
            raise ValueError(
                f"train.batch_size ({self.train_cfg.batch_size}) is larger than the dataset ({len(data)} episodes): "
                "lower train.batch_size or use a larger dataset"
            )
        if self.train_cfg.batch_size % (world * self.train_cfg.grad_accumulation_steps):
            raise ValueError(
                f"train.batch_size ({self.train_cfg.batch_size}) must split evenly over {world} processes "
                f"x {self.train_cfg.grad_accumulation_steps} minibatches"
            )
        trainable = [p for p in learner.model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("the model has no trainable parameters: check model.num_layers_unfrozen / peft_config")
        learner.model.to(self.accelerator.device)  # first, so the optimizer sees where its parameters train
        self.shards = self._shard(learner.model)
        if self.shards is not None:  # the optimizer holds the sharded parameters; no DDP wrapper
            trainable = [p for p in learner.model.parameters() if p.requires_grad]
        optimizer = build_optimizer(trainable, config.optimizer)
        self.scheduler = build_scheduler(optimizer, config.scheduler)
        if self.shards is None:
            self.model, self.optimizer = self.accelerator.prepare(learner.model, optimizer)
        else:
            self.model, self.optimizer = learner.model, self.accelerator.prepare(optimizer)
        self.run_dir = Path(self.train_cfg.checkpoint_dir)
        self.log_dir = Path(self.train_cfg.logging_dir or self.train_cfg.checkpoint_dir)
        self.folder = RunFolder(self.run_dir, self.log_dir, self.accelerator, self.train_cfg.tracker)
        self.state = _State()
        self.history: list[dict[str, Any]] = []
        self._tb = None
        self._warned_best = False

    # ------------------------------------------------------------------ sharding

    def _shard(self, model: torch.nn.Module) -> Optional[ShardedModel]:
        """Shard the model over the processes when `train.fsdp` asks for it (None: not sharded)."""
        from accelerate.utils import DistributedType

        acc = self.accelerator
        if acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            raise ValueError(
                f"accelerate was launched with its own {acc.distributed_type.value} engine, which textrl does not "
                "drive: it would wrap the model without the target-head sync, sharded checkpoints and whole saved "
                "agent that textrl keeps. Launch with a multi-process config (examples/accelerate/fsdp.yaml) and "
                "set train.fsdp: true"
            )
        if not self.train_cfg.fsdp or acc.num_processes == 1:
            return None
        from textrl.sharding import ShardedModel  # here: textrl.models imports this module

        return ShardedModel(model, acc.device, acc.num_processes)

    @contextmanager
    def _whole_model(self) -> Iterator[None]:
        """Give the learner an unsharded copy of the current weights for evaluation or saving (a collective
        under `train.fsdp`: every process enters it); the sharded model is back afterwards."""
        if self.shards is None:
            yield
            return
        sharded, self.learner.model = self.learner.model, self.shards.plain_copy()
        try:
            yield
        finally:
            self.learner.model = sharded

    # ------------------------------------------------------------------ batches

    @property
    def batches_per_epoch(self) -> int:
        """Full batches in one pass over the data (the last partial batch is dropped)."""
        return len(self.data) // self.train_cfg.batch_size

    def _rows(self, step: int) -> torch.Tensor:
        """This process's rows for optimizer step `step` (0-based): a seeded per-epoch permutation."""
        epoch, index = divmod(step, self.batches_per_epoch)
        generator = torch.Generator().manual_seed(self.train_cfg.seed * 100_003 + epoch)
        order = torch.randperm(len(self.data), generator=generator)
        size = self.train_cfg.batch_size
        rows = order[index * size:(index + 1) * size]
        acc = self.accelerator
        return rows[acc.process_index::acc.num_processes]

    def _minibatch_rows(self, step: int) -> tuple[torch.Tensor, ...]:
        """This process's rows for step `step`, split into its minibatches (`split_by_length`)."""
        return split_by_length(self._rows(step), self.train_cfg.grad_accumulation_steps, self.lengths)

    # ------------------------------------------------------------------ one step

    def _optimizer_step(self, step: int) -> dict[str, float]:
        """Forward/backward over this step's minibatches, then clip, step and schedule."""
        acc = self.accelerator
        batches = [self.data.batch(chunk) for chunk in self._minibatch_rows(step)]
        n_local = sum(b["action_mask"].sum() for b in batches).to(acc.device, torch.float32)
        n_global = acc.reduce(n_local.clone(), reduction="sum") if acc.num_processes > 1 else n_local
        if n_global.item() == 0:
            raise ValueError(f"step {step + 1}: the batch holds no actions; the dataset has episodes without actions")
        totals: dict[str, float] = {}
        self.model.train()
        for i, batch in enumerate(batches):
            batch = batch.to(acc.device)
            weight = batch["action_mask"].sum() / n_global * acc.num_processes
            sync = i == len(batches) - 1
            with (acc.no_sync(self.model) if not sync and acc.num_processes > 1 else nullcontext()), acc.autocast():
                loss, stats = self.learner.loss(self.model, batch)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"the loss is {loss.item()} at step {step + 1}; stats: {stats}. Training stopped; "
                        f"the last good checkpoint is kept under {self.run_dir}. Lower optimizer.kwargs.lr, "
                        "enable train.max_grad_norm, or check the dataset's rewards."
                    )
                acc.backward(loss * weight)
            share = float(weight) / acc.num_processes
            for key, value in {"loss": loss.item(), **stats}.items():
                totals[key] = totals.get(key, 0.0) + share * float(value)
        if self.train_cfg.max_grad_norm is not None:
            totals["grad_norm"] = float(acc.clip_grad_norm_(self.model.parameters(), self.train_cfg.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.learner.after_optimizer_step(acc.unwrap_model(self.model), step + 1)
        if acc.num_processes > 1:
            keys = sorted(totals)
            summed = acc.reduce(torch.tensor([totals[k] for k in keys], device=acc.device), reduction="sum")
            totals = dict(zip(keys, summed.tolist()))
        totals["lr"] = self.scheduler.get_last_lr()[0]
        return totals

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, step: int) -> dict[str, float]:
        """Run `eval_fn` with the episodes split over processes; the means of every key, gathered."""
        acc = self.accelerator
        n = math.ceil(self.train_cfg.eval_episodes / acc.num_processes)
        self.model.eval()
        with torch.no_grad():
            local = self.eval_fn(n, self.train_cfg.seed + 7919 * acc.process_index)
        out = {}
        for key in sorted(local):
            array = np.asarray(local[key], dtype=np.float64)
            values = torch.as_tensor(array.reshape(-1), device=acc.device)
            gathered = acc.gather(values) if acc.num_processes > 1 else values
            out[f"eval/{key}"] = float(gathered.mean())
            out[f"eval/{key}_std"] = float(gathered.std(unbiased=False))
            if array.ndim:  # per-episode values; a scalar (a metric_fn's number) counts no episodes
                out["eval/episodes"] = int(gathered.numel())
        out["step"] = step
        return out

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> Path:
        """Write `step_N` atomically: the learner's own directory plus optimizer, scheduler and RNG state."""
        acc = self.accelerator
        path = self.run_dir / f"step_{self.state.step:06d}"
        acc.wait_for_everyone()
        with self._whole_model(), self._checkpoint_folder(path) as tmp:
            if self.shards is not None:  # every process writes its own shards
                rank = acc.process_index
                save_state(self.shards.local_state(self.optimizer), tmp / SHARD_STATE.format(rank=rank),
                           tmp / SHARD_TENSORS.format(rank=rank))
            if acc.is_main_process:
                self.learner.save_pretrained(tmp / "agent")
                state = {
                    "step": self.state.step,
                    "best": self.state.best,
                    "identity": self.folder.identity,
                    "scheduler": self.scheduler.state_dict(),
                    "rng": _rng_state(),
                }
                if self.shards is None:
                    state["optimizer"] = self.optimizer.state_dict()
                    state["model"] = acc.unwrap_model(self.model).state_dict()
                else:
                    state["shards"] = acc.num_processes
                save_state(state, tmp / TRAINER_STATE, tmp / TRAINER_TENSORS)
            acc.wait_for_everyone()
            if acc.is_main_process:
                write_manifest(tmp)
        acc.wait_for_everyone()
        self.folder.last_checkpoint = path
        return path

    @contextmanager
    def _checkpoint_folder(self, path: Path) -> Iterator[Path]:
        """The temporary folder every process writes `path` into; the main process renames it into place."""
        acc = self.accelerator
        if acc.num_processes == 1 or self.shards is None:
            if not acc.is_main_process:
                yield Path(os.devnull)  # nothing is written on other processes
                return
            with self.folder.disk_full_names(path), atomic_directory(path) as tmp:
                yield tmp
            return
        from accelerate.utils import broadcast_object_list

        if acc.is_main_process:
            with self.folder.disk_full_names(path), atomic_directory(path) as tmp:
                broadcast_object_list([str(tmp)])
                yield tmp
        else:
            shared = broadcast_object_list([None])
            yield Path(shared[0])

    def load_checkpoint(self, path: str | os.PathLike) -> Path:
        """Restore model, optimizer, scheduler, step, best metric and RNG states from a checkpoint.

        Nothing in a checkpoint is unpickled; its files are checked against its manifest first, and a
        checkpoint of another run (agent type, model shape, dataset) is refused with what differs.
        """
        path = find_checkpoint(path)
        verify_manifest(path, "checkpoint")
        state = load_state(path / TRAINER_STATE, path / TRAINER_TENSORS)
        check_trainer_values(state, path)
        self.folder.check_checkpoint(path, state["identity"], state["step"])
        if "shards" not in state:  # a sharded run's tensors are in its shard files, checked as they load
            check_trainer_tensors(state, path / TRAINER_TENSORS, self.accelerator.unwrap_model(self.model),
                                  self.optimizer)
        try:
            self._load_weights(path, state)
            self.scheduler.load_state_dict(state["scheduler"])
        except DamagedFileError:  # says itself which file holds what
            raise
        except (RuntimeError, KeyError, ValueError, TypeError) as e:
            raise ValueError(
                f"cannot resume from {path}: its model or optimizer state does not fit this run ({str(e)[:300]}). "
                "Point train.resume_from_checkpoint at a checkpoint of this agent type and model"
            ) from e
        self.state = _State(step=state["step"], best=float(state["best"]))
        _set_rng_state(state["rng"])
        self.folder.last_checkpoint = path
        return path

    def _load_weights(self, path: Path, state: dict[str, Any]) -> None:
        """Model and optimizer state: from the checkpoint's main state, or this process's shard file."""
        shards = int(state.get("shards", 0))
        world = self.accelerator.num_processes if self.shards is not None else 0
        if shards != world:
            wrote = f"{shards} sharded processes" if shards else "an unsharded run"
            runs = f"{world} sharded processes" if world else "unsharded (train.fsdp false or one process)"
            raise ValueError(f"it was written by {wrote} and this run is {runs}: resume with the same "
                             "train.fsdp and number of processes")
        if self.shards is None:
            self.accelerator.unwrap_model(self.model).load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            return
        rank = self.accelerator.process_index
        local = load_state(path / SHARD_STATE.format(rank=rank), path / SHARD_TENSORS.format(rank=rank))
        check_trainer_tensors(local, path / SHARD_TENSORS.format(rank=rank), self.shards.model, self.optimizer)
        self.shards.load_local_state(local, self.optimizer)

    def _save_best(self, metrics: dict[str, float]) -> None:
        """Keep the best agent so far (by `train.best_metric`) in `best/`."""
        value = metrics.get(self.train_cfg.best_metric)
        if value is None and not self._warned_best:
            self._warned_best = True
            known = sorted((k for k in metrics if k.startswith("eval/") and not k.endswith("_std")
                            and k != "eval/episodes"), key=lambda k: ("score" not in k, k))
            warnings.warn(f"train.best_metric {self.train_cfg.best_metric!r} is not among the evaluation metrics "
                          f"{known}: no best checkpoint is kept. Set train.best_metric to one of them"
                          + (f" (e.g. {known[0]!r})" if known else ""), stacklevel=2)
        if value is None or not value > self.state.best:
            return
        self.state.best = value
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            best = self.run_dir / "best"
            with self.folder.disk_full_names(best), atomic_directory(best) as tmp:
                self.learner.save_pretrained(tmp)
                atomic_write_text(tmp / "best.json", json.dumps({"step": self.state.step, "value": value}))

    # ------------------------------------------------------------------ logging

    def _log(self, record: dict[str, Any]) -> None:
        """Append a record to the history, the JSONL log and TensorBoard (main process only)."""
        self.history.append(record)
        if not self.accelerator.is_main_process or self.train_cfg.tracker == "none":
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.train_cfg.tracker == "jsonl":
            with self.folder.disk_full_names(self.log_dir / METRICS_FILE):
                append_line(self.log_dir / METRICS_FILE, json.dumps(record))
        else:
            if self._tb is None:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError as e:
                    raise ImportError("train.tracker='tensorboard' needs the tensorboard package: "
                                      "pip install tensorboard") from e
                self._tb = SummaryWriter(str(self.log_dir))
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, record["step"])

    # ------------------------------------------------------------------ the loop

    def train(self) -> list[dict[str, Any]]:
        """Train to `total_steps` (or `epochs` passes, whichever ends first); return the logged history.

        Ctrl-C raises `TrainingInterrupted` (a KeyboardInterrupt) whose message says where the last checkpoint is
        and how to resume.
        """
        cfg = self.train_cfg
        seed_everything(cfg.seed)
        identity = run_identity(type(self.learner).__name__, self.accelerator.unwrap_model(self.model), self.data,
                                self.config)
        self.folder.open(identity, cfg.resume_from_checkpoint, self._resume)
        try:
            last = min(cfg.total_steps, cfg.epochs * self.batches_per_epoch)
            if self.state.step >= last:
                warnings.warn(f"nothing to train: the checkpoint {self.folder.last_checkpoint} is at step {self.state.step} "
                              f"and this run ends at step {last} (train.total_steps={cfg.total_steps}, "
                              f"train.epochs={cfg.epochs}). Raise train.total_steps to train further",
                              ResumeWarning, stacklevel=2)
                return self._finish()
            try:
                self._loop(last)
            except KeyboardInterrupt as interrupt:
                if isinstance(interrupt, TrainingInterrupted) or not self.accelerator.is_main_process:
                    raise
                raise TrainingInterrupted(self.folder.interrupted_line(self.state.step, cfg.checkpoint_interval)) \
                    from interrupt
        finally:
            self.folder.close()
        return self._finish()

    def _finish(self) -> list[dict[str, Any]]:
        """The logged history; under `train.fsdp` the learner gets its model back whole, on every process."""
        if self.shards is not None:
            self.learner.model = self.shards.plain_copy()
        return self.history

    def _resume(self, path: str) -> tuple[Path, int]:
        """Restore a checkpoint for `RunFolder.open`: its folder and step."""
        return self.load_checkpoint(path), self.state.step

    def _loop(self, last: int) -> None:
        """Optimizer steps, logging, evaluation and checkpoints from the current step to `last`."""
        cfg = self.train_cfg
        bar = tqdm(total=last, initial=self.state.step, desc="train", unit="step",
                   disable=not (cfg.progress_bar and self.accelerator.is_main_process), dynamic_ncols=True)
        started = time.perf_counter()
        try:
            while self.state.step < last:
                stats = self._optimizer_step(self.state.step)
                self.folder.started()
                self.state.step += 1
                step = self.state.step
                self._log({"step": step, **stats, "time": time.perf_counter() - started})
                bar.set_postfix(loss=f"{stats['loss']:.4f}")
                bar.update()
                if self.eval_fn is not None and (step % cfg.eval_interval == 0 or step == last):
                    with self._whole_model():
                        metrics = self.evaluate(step)
                        self._log(metrics)
                        bar.write(" ".join(f"{k}={v:.4g}" for k, v in metrics.items() if not k.endswith("_std")))
                        if cfg.save_best:
                            self._save_best(metrics)
                if step % cfg.checkpoint_interval == 0 or step == last:
                    self.save_checkpoint()
        finally:
            bar.close()
            if self._tb is not None:
                self._tb.close()
                self._tb = None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    """Every RNG state a resumed run needs to continue bit for bit."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states saved by `_rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
