"""The optimizer and learning-rate scheduler the trainer builds from their config sections."""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Protocol

from textrl.validation import ConfigError, unknown_key

__all__ = ["OPTIMIZERS", "SCHEDULERS", "build_optimizer", "build_scheduler", "check_class_kwargs"]


OPTIMIZERS = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD"}
SCHEDULERS = {"cosine_annealing": "CosineAnnealingLR", "linear": "LinearLR", "constant": "ConstantLR"}


class ClassChoice(Protocol):
    """A config section naming a torch class and its keyword arguments (`OptimizerConfig`, `SchedulerConfig`)."""

    name: str
    kwargs: dict[str, Any]


def check_class_kwargs(path: str, kind: str, name: str, table: dict[str, str], kwargs: dict,
                       module: str) -> None:
    """Reject an unknown optimizer/scheduler name or a keyword its torch class does not take."""
    if name not in table:
        raise ConfigError(f"{path}.name = {name!r}: unknown {kind}; choose one of {', '.join(table)}")
    cls = getattr(importlib.import_module(module), table[name])
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params", "optimizer")]
    for key in kwargs:
        if key not in params:
            raise unknown_key(f"{path}.kwargs", key, params)


def build_optimizer(params: Any, config: ClassChoice) -> Any:
    """The torch optimizer named by `config` over `params` (tensors or param-group dicts).

    Adam and AdamW take torch's fused kernel when every parameter is a float on the CPU or a CUDA
    GPU, unless `kwargs` chooses `fused`, `foreach` or `differentiable`: one pass per parameter
    instead of several full-size temporaries, which on a CPU made the step of a GPT-2-small with
    ILQL heads about a fifth faster (benchmarks/RESULTS.md).
    """
    import torch

    check_class_kwargs("optimizer", "optimizer", config.name, OPTIMIZERS, config.kwargs, "torch.optim")
    params = list(params)
    kwargs = dict(config.kwargs)
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    if config.name in ("adam", "adamw") and not {"fused", "foreach", "differentiable"} & kwargs.keys():
        tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
        kwargs["fused"] = all(t.is_floating_point() and t.device.type in ("cpu", "cuda") for t in tensors)
    return getattr(torch.optim, OPTIMIZERS[config.name])(params, **kwargs)


def build_scheduler(optimizer: Any, config: ClassChoice) -> Any:
    """The torch learning-rate scheduler named by `config` over `optimizer`."""
    import torch

    check_class_kwargs("scheduler", "scheduler", config.name, SCHEDULERS, config.kwargs, "torch.optim.lr_scheduler")
    kwargs = dict(config.kwargs)
    if config.name == "constant":
        kwargs.setdefault("factor", 1.0)
    return getattr(torch.optim.lr_scheduler, SCHEDULERS[config.name])(optimizer, **kwargs)
