"""What a checkpoint's trainer state may hold, checked against the live run before any of it is used.

A checkpoint can be altered and its manifest rewritten to match, so a matching digest proves
nothing about the values. A tensor of the wrong shape or dtype in an optimizer state would reach
a fused kernel unchecked (out-of-bounds reads, NaN losses), and a negative step or a NaN best
metric would silently change what the run does. Every value is checked here: types, ranges,
finiteness, shapes and dtypes against the live model and optimizer, and an identity that must be
present.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
from torch.distributed.tensor import DTensor

from textrl.io import DamagedFileError

__all__ = ["check_trainer_values", "check_trainer_tensors", "check_identity"]

_KEYS = {"step", "best", "identity", "optimizer", "scheduler", "model", "rng"}
_SHARDED_KEYS = {"step", "best", "identity", "scheduler", "rng", "shards"}  # train.fsdp: tensors in shard files


def _refuse(where: Path, problem: str) -> DamagedFileError:
    return DamagedFileError(f"{where} holds {problem}: the checkpoint was altered or written by another program. "
                            "Resume from another checkpoint of this run, or train afresh")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_identity(identity: Any, where: Path) -> None:
    """A run identity (run.json, or the one in a checkpoint): agent type, model shapes, data fingerprint, config."""
    if not isinstance(identity, dict):
        raise _refuse(where, f"no run identity (got {type(identity).__name__}), so it cannot be matched to this run")
    if not isinstance(identity.get("agent"), str):
        raise _refuse(where, f"an identity whose agent type is {identity.get('agent')!r}, not a name")
    shapes = identity.get("model")
    if not isinstance(shapes, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(_is_int(d) and d >= 0 for d in v)
            for k, v in shapes.items()):
        raise _refuse(where, "an identity whose model shapes are not lists of sizes per tensor name")
    data = identity.get("dataset")
    if not isinstance(data, dict) or not _is_int(data.get("rows")) or not isinstance(data.get("sha256"), str):
        raise _refuse(where, "an identity without a dataset fingerprint (rows and sha256)")
    if not isinstance(identity.get("config"), dict):
        raise _refuse(where, "an identity without its config")


def _check_tensors(where: Path, what: str, stored: Any, live: dict[str, torch.Tensor]) -> None:
    """`stored` has the same tensor names, shapes and dtypes as `live` (nothing cast or broadcast silently)."""
    if not isinstance(stored, dict) or set(stored) != set(live):
        missing = sorted(set(live) - set(stored)) if isinstance(stored, dict) else []
        raise _refuse(where, f"a {what} state with other tensors than this model's (missing e.g. {missing[:3]})")
    for name, tensor in live.items():
        value = stored[name]
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape or value.dtype != tensor.dtype:
            got = f"{tuple(value.shape)} {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__
            raise _refuse(where, f"{what} tensor {name} of {got}, where this run has {tuple(tensor.shape)} "
                                 f"{tensor.dtype}")


def _check_optimizer(where: Path, stored: Any, optimizer: torch.optim.Optimizer) -> None:
    """Groups, parameter indices, hyperparameters and every per-parameter tensor against the live optimizer."""
    live = optimizer.state_dict()
    if not isinstance(stored, dict) or not isinstance(stored.get("state"), dict) or \
            not isinstance(stored.get("param_groups"), list):
        raise _refuse(where, "an optimizer state without 'state' and 'param_groups'")
    groups = stored["param_groups"]
    if len(groups) != len(live["param_groups"]):
        raise _refuse(where, f"{len(groups)} optimizer parameter groups, where this run has {len(live['param_groups'])}")
    params = {}
    for group, live_group, torch_group in zip(groups, live["param_groups"], optimizer.param_groups):
        if not isinstance(group, dict) or group.get("params") != live_group["params"]:
            raise _refuse(where, "an optimizer parameter group over other parameters than this run's")
        for key, value in group.items():
            if key != "params" and _is_number(value) and not math.isfinite(value):
                raise _refuse(where, f"optimizer setting {key} = {value}")
        if not (_is_number(group.get("lr")) and group["lr"] >= 0):
            raise _refuse(where, f"optimizer learning rate {group.get('lr')!r}")
        params.update(zip(live_group["params"], torch_group["params"]))
    for index, entry in stored["state"].items():
        if index not in params or not isinstance(entry, dict):
            raise _refuse(where, f"optimizer state for parameter {index!r}, which this run does not have")
        param = _local(params[index])
        for key, value in entry.items():
            if value is None or (_is_number(value) and math.isfinite(value)):
                continue
            if not isinstance(value, torch.Tensor):
                raise _refuse(where, f"optimizer state {index}.{key} of type {type(value).__name__}")
            scalar = value.ndim == 0 and value.dtype.is_floating_point
            if not scalar and (value.shape != param.shape or value.dtype != param.dtype):
                raise _refuse(where, f"optimizer state {index}.{key} of {tuple(value.shape)} {value.dtype}, where its "
                                     f"parameter is {tuple(param.shape)} {param.dtype}")
            if not bool(torch.isfinite(value).all()):
                raise _refuse(where, f"optimizer state {index}.{key} with NaN or infinite values")


def check_trainer_values(state: Any, path: Path) -> None:
    """Refuse a trainer state (from checkpoint folder `path`) whose entries, step, best metric, identity,
    scheduler or RNG states are not what a run of textrl writes, naming the value."""
    where = path / "trainer_state.json"
    if not isinstance(state, dict) or set(state) not in (_KEYS, _SHARDED_KEYS):
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise _refuse(where, f"other entries than a trainer state's ({keys})")
    step, best = state["step"], state["best"]
    if not _is_int(step) or step < 0:
        raise _refuse(where, f"step {step!r}, not a count of optimizer steps")
    named = re.fullmatch(r"step_(\d+)", path.name)
    if named and int(named.group(1)) != step:
        raise _refuse(where, f"step {step} in a folder named {path.name}")
    if not _is_number(best) or math.isnan(best) or best == math.inf:
        raise _refuse(where, f"best metric {best!r} (a number, or -inf before the first evaluation)")
    check_identity(state["identity"], where)
    if "shards" in state and not (_is_int(state["shards"]) and state["shards"] >= 1):
        raise _refuse(where, f"shards {state['shards']!r}, not a count of processes")
    sched = state["scheduler"]
    if not isinstance(sched, dict) or sched.get("last_epoch") != step or not all(
            _is_number(v) and math.isfinite(v) for v in sched.get("base_lrs", [None])):
        raise _refuse(where, f"a scheduler state that is not at step {step} with finite base learning rates")
    rng = state["rng"]
    torch_rng = rng.get("torch") if isinstance(rng, dict) else None
    now = torch.get_rng_state()
    if not isinstance(torch_rng, torch.Tensor) or torch_rng.shape != now.shape or torch_rng.dtype != now.dtype or \
            not {"python", "numpy"} <= set(rng):
        raise _refuse(where, "RNG states that are not Python's, NumPy's and torch's")


def check_trainer_tensors(state: dict[str, Any], where: Path, model: torch.nn.Module,
                          optimizer: torch.optim.Optimizer) -> None:
    """Refuse model and optimizer tensors (from the file `where`) whose names, shapes or dtypes differ from
    the live run's; under `train.fsdp` a process's file holds its own shards, checked against its shards."""
    _check_tensors(where, "model", state["model"], {name: _local(t) for name, t in model.state_dict().items()})
    _check_optimizer(where, state["optimizer"], optimizer)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's shard of a sharded tensor (what its checkpoint file stores); any other tensor as is."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor
