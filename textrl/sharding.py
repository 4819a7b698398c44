"""Fully sharded training (`train.fsdp`): the model's parameters, gradients and optimizer state split over
the processes with torch's FSDP2 (`torch.distributed.fsdp.fully_shard`).

Every transformer block (the backbone's `_no_split_modules` classes) and every value head is its own
unit, gathered only while it computes; the rest (embeddings, final norm, LM head) sits in the root
unit. A head's `at` (Q at the taken actions only) is registered as a forward method, so its weights
are gathered for it too. Gradients are averaged over the processes like DDP's, so the trainer's
weighting by valid actions gives the single-process gradient.

The trainer needs the whole model at three moments: evaluation (each process rolls out its own
episodes, with no collectives to keep in step), saving the agent, and handing the trained agent
back. `ShardedModel.plain_copy` gathers the full weights into an unsharded copy made from a
parameter-free skeleton kept at sharding time. Checkpoints store each process's own shards
(`local_state`) as safetensors + JSON, so resuming needs the same number of processes.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor

from textrl.models.heads import MLPHead
from textrl.models.value_model import transformers_model

__all__ = ["ShardedModel"]


class ShardedModel:
    """Shards `model` in place over `world` processes and keeps what is needed to rebuild it whole."""

    def __init__(self, model: nn.Module, device: torch.device, world: int) -> None:
        self.model = model
        self._skeleton = _skeleton(model)
        self._ties = _tied_names(model)
        mesh = init_device_mesh(device.type, (world,))
        for unit in _units(model):
            fully_shard(unit, mesh=mesh)
            if isinstance(unit, MLPHead):
                register_fsdp_forward_method(unit, "at")
        fully_shard(model, mesh=mesh)

    def full_state(self) -> dict[str, torch.Tensor]:
        """The whole state dict on every process (a collective: every process must call it)."""
        return {name: (t.full_tensor() if isinstance(t, DTensor) else t).detach()
                for name, t in self.model.state_dict().items()}

    def plain_copy(self) -> nn.Module:
        """An unsharded copy of the model with the current weights (a collective), in training mode."""
        plain = copy.deepcopy(self._skeleton)
        plain.load_state_dict(self.full_state(), assign=True)
        for names in self._ties:  # `assign` gives each name its own tensor: tie them again
            shared = _get(plain, names[0])
            for name in names[1:]:
                module, _, attr = name.rpartition(".")
                setattr(plain.get_submodule(module) if module else plain, attr, shared)
        return plain.train(self.model.training)

    def local_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """This process's shards of the model and of the optimizer state, as plain tensors."""
        params = _flat_params(optimizer)
        sharded_state = []
        opt = optimizer.state_dict()  # its per-parameter dicts are the live state: copied before changing
        opt["state"] = {index: dict(entry) for index, entry in opt["state"].items()}
        for index, entry in opt["state"].items():
            for key, value in entry.items():
                if isinstance(value, DTensor):
                    entry[key] = value.to_local()
                    sharded_state.append([index, key])
        model = {name: t.to_local() if isinstance(t, DTensor) else t for name, t in self.model.state_dict().items()}
        return {"model": model, "optimizer": opt, "sharded_optimizer_state": sharded_state,
                "num_params": len(params)}

    def load_local_state(self, state: dict[str, Any], optimizer: torch.optim.Optimizer) -> None:
        """Restore what `local_state` returned (in the same process layout)."""
        current = self.model.state_dict()
        self.model.load_state_dict({name: _like(t, current[name]) for name, t in state["model"].items()})
        params = _flat_params(optimizer)
        if int(state["num_params"]) != len(params):
            raise ValueError(f"the checkpoint's optimizer holds {state['num_params']} parameters, this run's "
                             f"{len(params)}")
        opt = state["optimizer"]
        for index, key in state["sharded_optimizer_state"]:
            opt["state"][index][key] = _like(opt["state"][index][key], params[index])
        optimizer.load_state_dict(opt)


def _units(model: nn.Module) -> list[nn.Module]:
    """The modules sharded as units of their own: transformer blocks and value heads, innermost first."""
    backbone = getattr(model, "backbone", None)
    blocks = set(getattr(transformers_model(backbone), "_no_split_modules", None) or []) if backbone is not None \
        else set()
    return [m for m in model.modules() if m is not model and (type(m).__name__ in blocks or isinstance(m, MLPHead))]


def _skeleton(model: nn.Module) -> nn.Module:
    """A copy of `model` whose parameters are on the meta device (no memory); buffers are real copies."""
    memo: dict[int, Any] = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
                            for p in model.parameters()}
    return copy.deepcopy(model, memo)


def _tied_names(model: nn.Module) -> list[list[str]]:
    """Groups of parameter names that share one tensor (e.g. a tied LM head and input embedding)."""
    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def _get(model: nn.Module, name: str) -> nn.Parameter:
    module, _, attr = name.rpartition(".")
    return getattr(model.get_submodule(module) if module else model, attr)


def _flat_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The optimizer's parameters in the order its state dict numbers them."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def _like(local: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """`local` as a shard laid out like `reference` (a DTensor), or as is when `reference` is not sharded."""
    if not isinstance(reference, DTensor):
        return local
    if tuple(local.shape) != tuple(reference.to_local().shape):
        raise ValueError(f"a stored shard has shape {tuple(local.shape)}, this process's has "
                         f"{tuple(reference.to_local().shape)}")
    return DTensor.from_local(local.to(reference.device), reference.device_mesh, reference.placements,
                              run_check=False, shape=reference.shape, stride=reference.stride())
