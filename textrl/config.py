"""Configuration: TRLConfig, its shared sections and the defaults (each method's config lives with its
losses in textrl/methods/ and is re-exported here).

Every section is a dataclass whose fields are type-checked on construction (textrl/validation.py).
`update` and `evolve` return new configs (deep merges that never mutate their input) and reject
unknown keys at any depth with the key's full dotted path.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import yaml

from textrl.methods import (
    METHODS,
    BCConfig,
    CQLConfig,
    FilteredBCConfig,
    GenerationConfig,
    ILQLConfig,
    MCReturnsConfig,
    MethodConfig,
    get_method,
    register_method,
)
from textrl.optim import OPTIMIZERS, SCHEDULERS, build_scheduler, check_class_kwargs
from textrl.validation import ConfigError, Section, build_section, merge, unknown_key

__all__ = [
    "TrainConfig",
    "ModelConfig",
    "TokenizerConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "GenerationConfig",
    "MethodConfig",
    "ILQLConfig",
    "BCConfig",
    "FilteredBCConfig",
    "MCReturnsConfig",
    "CQLConfig",
    "TRLConfig",
    "ConfigError",
    "register_method",
    "get_method",
    "METHODS",
    "default_ilql_config",
    "default_config",
    "load_yaml",
    "save_yaml",
]


# --------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig(Section):
    """How long and how to train: batch shape, steps, checkpoints, logging, precision, sharding.

    `minibatch_size` splits each batch into minibatches whose gradients accumulate to the whole batch's;
    the batch's episodes are sorted by length first, so a minibatch pads only to episodes like its own.
    `fsdp: true` shards the model, its gradients and the optimizer state over the processes of an
    `accelerate launch` (torch's FSDP2, `textrl.sharding`); with one process it changes nothing.
    """

    _path: typing.ClassVar[str] = "train"

    seq_length: int = 64
    batch_size: int = 128
    epochs: int = 100
    total_steps: int = 1000
    checkpoint_interval: int = 1000
    eval_interval: int = 100
    checkpoint_dir: str = "ckpts"
    seed: int = 1000
    tracker: Literal["none", "jsonl", "tensorboard"] = "jsonl"
    logging_dir: Optional[str] = None
    save_best: bool = True
    best_metric: str = "eval/score"
    resume_from_checkpoint: Optional[str] = None
    minibatch_size: Optional[int] = None
    max_grad_norm: Optional[float] = None
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    fsdp: bool = False
    eval_episodes: int = 256
    reward_normalization: Literal["none", "zscore", "scale"] = "none"
    progress_bar: bool = True

    def _check(self) -> None:
        for name in ("seq_length", "batch_size", "epochs", "checkpoint_interval", "eval_interval",
                     "eval_episodes"):
            self._require(name, getattr(self, name) >= 1, "must be at least 1")
        self._require("total_steps", self.total_steps >= 1,
                      "must be at least 1 (the number of optimizer steps to train)")
        if self.minibatch_size is not None:
            self._require("minibatch_size", 1 <= self.minibatch_size <= self.batch_size
                          and self.batch_size % self.minibatch_size == 0,
                          f"must divide train.batch_size ({self.batch_size})")
        if self.max_grad_norm is not None:
            self._require("max_grad_norm", self.max_grad_norm > 0, "must be positive (or None: no clipping)")

    @property
    def grad_accumulation_steps(self) -> int:
        """Minibatches per optimizer step."""
        return self.batch_size // (self.minibatch_size or self.batch_size)


def _is_transformers_config(value: Any) -> bool:
    from transformers import PretrainedConfig

    return isinstance(value, PretrainedConfig)


@dataclass(frozen=True)
class ModelConfig(Section):
    """Which transformer: a hub name, a local directory, or a transformers config (built from scratch);
    which of its layers train; and the rank of the Q heads' output layer (None: trlx's full layer)."""

    _path: typing.ClassVar[str] = "model"

    model_path: Any = "gpt2"
    model_arch_type: Literal["causal", "seq2seq"] = "causal"
    num_layers_unfrozen: int = -1
    peft_config: Optional[dict] = None
    dtype: Optional[Literal["float32", "float16", "bfloat16"]] = None
    q_head_rank: Optional[int] = None

    def _check(self) -> None:
        self._require("model_path", isinstance(self.model_path, str) and self.model_path != ""
                      or _is_transformers_config(self.model_path),
                      "must be a model name, a local directory, or a transformers config object")
        self._require("num_layers_unfrozen", self.num_layers_unfrozen >= -1,
                      "must be -1 (all layers train), 0 (heads only) or k > 0 (last k blocks)")
        if self.q_head_rank is not None:
            self._require("q_head_rank", self.q_head_rank >= 1,
                          "must be at least 1 (or null: the Q heads keep trlx's full output layer)")


@dataclass(frozen=True)
class TokenizerConfig(Section):
    """Which tokenizer (None: the dataset's own), and its padding and truncation sides."""

    _path: typing.ClassVar[str] = "tokenizer"

    tokenizer_path: Optional[str] = "gpt2"
    padding_side: Literal["left", "right"] = "left"
    truncation_side: Literal["left", "right"] = "right"



@dataclass(frozen=True)
class OptimizerConfig(Section):
    """The optimizer by name (adamw, adam, sgd) and its keyword arguments."""

    _path: typing.ClassVar[str] = "optimizer"

    name: str = "adamw"
    kwargs: dict = field(default_factory=lambda: dict(lr=5e-5, betas=[0.9, 0.95], eps=1e-8, weight_decay=1e-6))

    def _check(self) -> None:
        check_class_kwargs(self._path, "optimizer", self.name, OPTIMIZERS, self.kwargs, "torch.optim")
        lr = self.kwargs.get("lr", 1e-3)
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0 or not math.isfinite(lr):
            raise ConfigError(f"optimizer.kwargs.lr = {lr!r}: the learning rate must be a positive number")


@dataclass(frozen=True)
class SchedulerConfig(Section):
    """The learning-rate schedule by name (cosine_annealing, linear, constant) and its arguments."""

    _path: typing.ClassVar[str] = "scheduler"

    name: str = "cosine_annealing"
    kwargs: dict = field(default_factory=lambda: dict(T_max=1e12, eta_min=5e-5))

    def _check(self) -> None:
        check_class_kwargs(self._path, "scheduler", self.name, SCHEDULERS, self.kwargs, "torch.optim.lr_scheduler")
        _try_scheduler(self)


def _try_scheduler(config: SchedulerConfig) -> None:
    """Build the schedule over a throwaway optimizer and take two steps, so a value of the wrong type or
    range (T_max: 'ten', T_max: 0, ...) is reported when the config is made, not when fit starts."""
    import torch

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": a dry run
            scheduler = build_scheduler(optimizer, config)
            scheduler.step()
            scheduler.step()
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as e:
        raise ConfigError(f"scheduler.kwargs = {config.kwargs!r} do not make a {config.name} schedule: {e}") from e


# --------------------------------------------------------------------------------------
# The whole configuration
# --------------------------------------------------------------------------------------

_SECTIONS = {
    "train": TrainConfig,
    "model": ModelConfig,
    "tokenizer": TokenizerConfig,
    "optimizer": OptimizerConfig,
    "scheduler": SchedulerConfig,
}



def _to_plain(value: Any) -> Any:
    """A deep copy of `value` made of dicts, lists and scalars (transformers configs tagged)."""
    if _is_transformers_config(value):  # checked first: transformers configs are dataclasses too
        plain = value.to_dict()
        plain.pop("transformers_version", None)  # written by to_dict, absent from a fresh config
        return {"transformers_config": plain}
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def _model_path_from_plain(value: Any) -> Any:
    """Undo `_to_plain` for model.model_path: rebuild a tagged transformers config."""
    if isinstance(value, dict) and set(value) == {"transformers_config"}:
        from transformers import AutoConfig

        cfg = dict(value["transformers_config"])
        return AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    return value


@dataclass(frozen=True)
class TRLConfig:
    """The whole configuration: train, model, tokenizer, optimizer, scheduler and method sections."""

    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    method: MethodConfig = field(default_factory=ILQLConfig)

    def __post_init__(self) -> None:
        for name, cls in _SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"{name}: expected a {cls.__name__}, got {getattr(self, name)!r}")
        if not isinstance(self.method, MethodConfig):
            raise ConfigError(f"method: expected a method config (e.g. ILQLConfig), got {self.method!r}")

    def evolve(self, **sections: dict[str, Any]) -> "TRLConfig":
        """A new config with nested dicts merged into the named sections (`evolve(train=dict(seed=1))`)."""
        return self.update(sections)

    def update(self, changes: Optional[dict[str, Any]] = None, **kwargs: Any) -> "TRLConfig":
        """A new config with changes merged in: dotted keys (`{"method.tau": 0.8}`) and/or nested dicts."""
        nested: dict[str, Any] = {}
        for key, value in {**(changes or {}), **kwargs}.items():
            if not isinstance(key, str) or not key:
                raise ConfigError(f"config keys must be non-empty strings, got {key!r}")
            parts = key.split(".")
            target = nested
            for part in parts[:-1]:
                target = target.setdefault(part, {})
                if not isinstance(target, dict):
                    raise ConfigError(f"conflicting updates for '{key}'")
            last = parts[-1]
            if isinstance(value, dict) and isinstance(target.get(last), dict):
                target[last] = {**target[last], **value}
            else:
                target[last] = value
        return merge(self, nested, "")

    def to_dict(self) -> dict[str, Any]:
        """A plain nested dict (deep copy); `method.name` records the method."""
        out = _to_plain(self)
        out["method"] = {"name": self.method.name, **out["method"]}
        return out

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "TRLConfig":
        """Build a config from a nested dict as written by `to_dict` (missing keys take defaults)."""
        if not isinstance(config, dict):
            raise ConfigError(f"a config must be a mapping of sections, got {type(config).__name__}")
        valid = [*_SECTIONS, "method"]
        for key in config:
            if key not in valid:
                raise unknown_key("", key, valid)
        sections = {}
        for name, section_cls in _SECTIONS.items():
            values = copy.deepcopy(config.get(name, {}))
            if name == "model" and isinstance(values, dict) and "model_path" in values:
                values["model_path"] = _model_path_from_plain(values["model_path"])
            sections[name] = build_section(section_cls, values)
        method = copy.deepcopy(config.get("method", {}))
        if not isinstance(method, dict):
            raise ConfigError(f"method: expected a mapping, got {method!r}")
        method_cls = get_method(method.pop("name", ILQLConfig.name))
        return cls(**sections, method=build_section(method_cls, method))

    def __str__(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False).rstrip()


def load_yaml(path: str | os.PathLike, *, complete: bool = False) -> TRLConfig:
    """Read a config from a YAML file; a parse error names the file and the line.

    With `complete`, every section must be present (a saved agent's config is written whole, so a
    missing section means a damaged file, which must not load as defaults).
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if complete:
        missing = [name for name in (*_SECTIONS, "method") if not isinstance(data, dict) or name not in data]
        if missing:
            raise ConfigError(f"{path} is damaged: it lacks the sections {', '.join(missing)} that a saved "
                              "config always holds, and is not loaded with defaults. Restore it or save again")
    return TRLConfig.from_dict(data or {})


def save_yaml(config: TRLConfig, path: str | os.PathLike) -> None:
    """Write a config as YAML, atomically (a temp file renamed into place)."""
    from textrl.io import atomic_write_text

    atomic_write_text(path, str(config) + "\n")


# --------------------------------------------------------------------------------------
# Defaults
# --------------------------------------------------------------------------------------


def default_ilql_config() -> TRLConfig:
    """trlx's ILQL configuration for GPT-2, its z-scored returns included (`train.reward_normalization`).

    It needs `gpt2` from the Hugging Face hub (or its cache); for a task dataset use
    `textrl.task_config(task, "ilql")`, for your own model `default_ilql_config().evolve(model=dict(model_path=DIR),
    tokenizer=dict(tokenizer_path=DIR))`.
    """
    return TRLConfig(train=TrainConfig(reward_normalization="zscore"), method=ILQLConfig())


def default_config(method: str = "ilql") -> TRLConfig:
    """The default configuration with the named method's defaults (ilql, bc, filtered_bc, ...);
    for "ilql" it is `default_ilql_config()`."""
    if method == ILQLConfig.name:
        return default_ilql_config()
    return TRLConfig(method=get_method(method)())

