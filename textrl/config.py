"""Configuration: TRLConfig and its sections, the method registry, and the default configs.

Every section is a dataclass whose fields are type-checked on construction. `update` and
`evolve` return new configs (deep merges that never mutate their input) and reject unknown
keys at any depth with the key's full dotted path.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import math
import os
import types
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

import yaml

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
    "build_optimizer",
    "build_scheduler",
    "load_yaml",
    "save_yaml",
]


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names its dotted path."""


# --------------------------------------------------------------------------------------
# Type checking of dataclass fields
# --------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    """A short human name for a type annotation."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is not None:
        return getattr(origin, "__name__", str(tp))
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Return `value` checked against annotation `tp` (ints widen to float, lists to tuples)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{path}: expected None, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin in (tuple, list):
        if isinstance(value, (tuple, list)):
            (item_tp, *_rest) = typing.get_args(tp) or (Any,)
            items = [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
    elif origin is dict or tp is dict:
        if isinstance(value, dict):
            return copy.deepcopy(value)
    elif isinstance(tp, type):
        if isinstance(value, tp):
            return value
    else:  # pragma: no cover - an annotation this checker does not know is a bug here
        raise TypeError(f"unsupported annotation {tp!r} at {path}")
    raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _unknown_key(path: str, key: str, valid: list[str]) -> ConfigError:
    """The error for a key that a section does not have, with close matches and the valid keys."""
    full = f"{path}.{key}" if path else key
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{full}'.{hint} Valid keys here: {', '.join(sorted(valid))}")


class _Section:
    """Mixin for config dataclasses: field type checks, range checks, dotted paths in errors."""

    _path: typing.ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            value = _coerce(getattr(self, f.name), hints[f.name], self._dotted(f.name))
            object.__setattr__(self, f.name, value)
        self._check()

    def _dotted(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def _check(self) -> None:
        """Range checks of a section; raise ConfigError naming the dotted key."""

    def _require(self, name: str, ok: bool, what: str) -> None:
        if not ok:
            raise ConfigError(f"{self._dotted(name)} = {getattr(self, name)!r}: {what}")


def _merge(section: Any, changes: dict[str, Any], path: str) -> Any:
    """A new dataclass (or dict) equal to `section` with `changes` merged in, depth first."""
    if not isinstance(changes, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {changes!r}")
    if dataclasses.is_dataclass(section):
        names = [f.name for f in dataclasses.fields(section) if f.init]
        values = {}
        if "kwargs" in names and changes.get("name", section.name) != section.name:
            # A new optimizer/scheduler class: the old keyword arguments belonged to the old one.
            values["kwargs"] = {}
            section = dataclasses.replace(section, name=changes["name"], kwargs={})
        for key, value in changes.items():
            if key not in names:
                raise _unknown_key(path, key, names)
            current = getattr(section, key)
            sub = f"{path}.{key}" if path else key
            if isinstance(value, dict) and (dataclasses.is_dataclass(current) or isinstance(current, dict)):
                value = _merge(current, value, sub)
            values[key] = value
        return dataclasses.replace(section, **values)
    merged = copy.deepcopy(section)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = _merge(merged[key], value, f"{path}.{key}")
        merged[key] = copy.deepcopy(value)
    return merged


# --------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig(_Section):
    """How long and how to train: batch shape, steps, checkpoints, logging, precision."""

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
class ModelConfig(_Section):
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
class TokenizerConfig(_Section):
    """Which tokenizer (None: the dataset's own), and its padding and truncation sides."""

    _path: typing.ClassVar[str] = "tokenizer"

    tokenizer_path: Optional[str] = "gpt2"
    padding_side: Literal["left", "right"] = "left"
    truncation_side: Literal["left", "right"] = "right"


_OPTIMIZERS = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD"}
_SCHEDULERS = {"cosine_annealing": "CosineAnnealingLR", "linear": "LinearLR", "constant": "ConstantLR"}


def _check_kwargs(path: str, kind: str, name: str, table: dict[str, str], kwargs: dict,
                  module: str) -> None:
    """Reject an unknown optimizer/scheduler name or a keyword its torch class does not take."""
    if name not in table:
        raise ConfigError(f"{path}.name = {name!r}: unknown {kind}; choose one of {', '.join(table)}")
    import importlib

    cls = getattr(importlib.import_module(module), table[name])
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params", "optimizer")]
    for key in kwargs:
        if key not in params:
            raise _unknown_key(f"{path}.kwargs", key, params)


@dataclass(frozen=True)
class OptimizerConfig(_Section):
    """The optimizer by name (adamw, adam, sgd) and its keyword arguments."""

    _path: typing.ClassVar[str] = "optimizer"

    name: str = "adamw"
    kwargs: dict = field(default_factory=lambda: dict(lr=5e-5, betas=[0.9, 0.95], eps=1e-8, weight_decay=1e-6))

    def _check(self) -> None:
        _check_kwargs(self._path, "optimizer", self.name, _OPTIMIZERS, self.kwargs, "torch.optim")
        lr = self.kwargs.get("lr", 1e-3)
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0 or not math.isfinite(lr):
            raise ConfigError(f"optimizer.kwargs.lr = {lr!r}: the learning rate must be a positive number")


@dataclass(frozen=True)
class SchedulerConfig(_Section):
    """The learning-rate schedule by name (cosine_annealing, linear, constant) and its arguments."""

    _path: typing.ClassVar[str] = "scheduler"

    name: str = "cosine_annealing"
    kwargs: dict = field(default_factory=lambda: dict(T_max=1e12, eta_min=5e-5))

    def _check(self) -> None:
        _check_kwargs(self._path, "scheduler", self.name, _SCHEDULERS, self.kwargs, "torch.optim.lr_scheduler")
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


MIN_TEMPERATURE = 1e-6
"""The smallest sampling temperature accepted: below it 1/temperature nears float32's range and the
result is greedy decoding anyway, which temperature 0 says plainly."""


@dataclass(frozen=True)
class GenerationConfig(_Section):
    """Decoding settings: how many tokens, top-k, the advantage weight beta, temperature (0 = greedy)."""

    _path: typing.ClassVar[str] = "method.gen_kwargs"

    max_new_tokens: int = 56
    top_k: int = 20
    beta: Union[float, list[float]] = 1.0
    temperature: float = 1.0

    def _check(self) -> None:
        self._require("max_new_tokens", self.max_new_tokens >= 1, "must be at least 1")
        self._require("top_k", self.top_k >= 0, "must be 0 (no top-k filter) or positive")
        self._require("temperature", self.temperature == 0 or (MIN_TEMPERATURE <= self.temperature < math.inf),
                      f"must be 0 (greedy) or at least {MIN_TEMPERATURE:g}; a smaller one only underflows to greedy "
                      "decoding: use 0")
        betas = self.beta if isinstance(self.beta, list) else [self.beta]
        self._require("beta", len(betas) > 0 and all(math.isfinite(b) for b in betas),
                      "must be a finite number or a non-empty list of them")


# --------------------------------------------------------------------------------------
# Methods (one per agent) and their registry
# --------------------------------------------------------------------------------------

METHODS: dict[str, type["MethodConfig"]] = {}


def register_method(cls: type["MethodConfig"]) -> type["MethodConfig"]:
    """Class decorator: make a method config findable by its `name` (used by from_dict)."""
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type["MethodConfig"]:
    """The method config class registered under `name`."""
    if name not in METHODS:
        raise ConfigError(f"method.name = {name!r}: unknown method; registered: {', '.join(sorted(METHODS))}")
    return METHODS[name]


@dataclass(frozen=True)
class MethodConfig(_Section):
    """Base of the per-agent method configs; `name` selects the agent's method."""

    _path: typing.ClassVar[str] = "method"
    name: typing.ClassVar[str] = ""

    gen_kwargs: GenerationConfig = field(default_factory=GenerationConfig)

    def __post_init__(self) -> None:
        if isinstance(self.gen_kwargs, dict):
            object.__setattr__(self, "gen_kwargs", _build(GenerationConfig, self.gen_kwargs))
        super().__post_init__()

    def _check_unit(self, name: str, low_open: bool, high_open: bool) -> None:
        v = getattr(self, name)
        ok = (0 < v if low_open else 0 <= v) and (v < 1 if high_open else v <= 1)
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        self._require(name, ok, f"must lie in {lo}0, 1{hi}")


@register_method
@dataclass(frozen=True)
class ILQLConfig(MethodConfig):
    """ILQL: expectile tau, discount gamma, loss weights, Polyak alpha, AWAC beta, target sync period."""

    name: typing.ClassVar[str] = "ilql"

    tau: float = 0.7
    gamma: float = 0.99
    cql_scale: float = 0.1
    awac_scale: float = 1.0
    alpha: float = 0.001
    beta: float = 0.0
    steps_for_target_q_sync: int = 5
    two_qs: bool = True

    def _check(self) -> None:
        self._check_unit("tau", True, True)
        self._check_unit("gamma", False, False)
        self._check_unit("alpha", False, False)
        self._require("cql_scale", self.cql_scale >= 0, "must be >= 0")
        self._require("awac_scale", self.awac_scale >= 0, "must be >= 0")
        self._require("steps_for_target_q_sync", self.steps_for_target_q_sync >= 1, "must be at least 1")


@register_method
@dataclass(frozen=True)
class BCConfig(MethodConfig):
    """Behaviour cloning: next-token cross-entropy on the agent's tokens."""

    name: typing.ClassVar[str] = "bc"


@register_method
@dataclass(frozen=True)
class FilteredBCConfig(MethodConfig):
    """%BC: behaviour cloning on the top `fraction` of episodes by return."""

    name: typing.ClassVar[str] = "filtered_bc"

    fraction: float = 0.1

    def _check(self) -> None:
        self._check_unit("fraction", True, False)


@register_method
@dataclass(frozen=True)
class MCReturnsConfig(MethodConfig):
    """Monte-Carlo returns: Q/V heads regressed on discounted returns-to-go, acting like ILQL."""

    name: typing.ClassVar[str] = "mc_returns"

    gamma: float = 0.99
    bc_scale: float = 1.0
    two_qs: bool = False

    def _check(self) -> None:
        self._check_unit("gamma", False, False)
        self._require("bc_scale", self.bc_scale >= 0, "must be >= 0")


@register_method
@dataclass(frozen=True)
class CQLConfig(MethodConfig):
    """Token-level CQL: max backup over the next state's Q, a Polyak target, the CQL regulariser."""

    name: typing.ClassVar[str] = "cql"

    gamma: float = 0.99
    cql_scale: float = 1.0
    alpha: float = 0.005
    steps_for_target_q_sync: int = 1

    def _check(self) -> None:
        self._check_unit("gamma", False, False)
        self._check_unit("alpha", False, False)
        self._require("cql_scale", self.cql_scale >= 0, "must be >= 0")
        self._require("steps_for_target_q_sync", self.steps_for_target_q_sync >= 1, "must be at least 1")


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


def _build(cls: type, values: dict[str, Any]) -> Any:
    """Construct a section from a mapping, rejecting unknown keys with their dotted path."""
    if not isinstance(values, dict):
        raise ConfigError(f"{cls._path}: expected a mapping, got {values!r}")
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in values:
        if key not in names:
            raise _unknown_key(cls._path, key, names)
    return cls(**copy.deepcopy(values))


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
        return _merge(self, nested, "")

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
                raise _unknown_key("", key, valid)
        sections = {}
        for name, section_cls in _SECTIONS.items():
            values = copy.deepcopy(config.get(name, {}))
            if name == "model" and isinstance(values, dict) and "model_path" in values:
                values["model_path"] = _model_path_from_plain(values["model_path"])
            sections[name] = _build(section_cls, values)
        method = copy.deepcopy(config.get("method", {}))
        if not isinstance(method, dict):
            raise ConfigError(f"method: expected a mapping, got {method!r}")
        method_cls = get_method(method.pop("name", ILQLConfig.name))
        return cls(**sections, method=_build(method_cls, method))

    def __str__(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False).rstrip()


def load_yaml(path: str | os.PathLike) -> TRLConfig:
    """Read a config from a YAML file; a parse error names the file and the line."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    return TRLConfig.from_dict(data or {})


def save_yaml(config: TRLConfig, path: str | os.PathLike) -> None:
    """Write a config as YAML, atomically (a temp file renamed into place)."""
    from textrl.io import atomic_write_text

    atomic_write_text(path, str(config) + "\n")


# --------------------------------------------------------------------------------------
# Defaults and builders
# --------------------------------------------------------------------------------------


def default_ilql_config() -> TRLConfig:
    """The seed's ILQL configuration (trlx's `default_ilql_config` values) for GPT-2."""
    return TRLConfig(method=ILQLConfig())


def default_config(method: str = "ilql") -> TRLConfig:
    """The default configuration with the named method's defaults (ilql, bc, filtered_bc, ...)."""
    return TRLConfig(method=get_method(method)())


def build_optimizer(params: Any, config: OptimizerConfig) -> "Any":
    """The torch optimizer named by `config` over `params` (tensors or param-group dicts).

    Adam and AdamW take torch's fused kernel when every parameter is a float on the CPU or a CUDA
    GPU, unless `kwargs` chooses `fused`, `foreach` or `differentiable`: one pass per parameter
    instead of several full-size temporaries, which on a CPU made the step of a GPT-2-small with
    ILQL heads about a fifth faster (benchmarks/RESULTS.md).
    """
    import torch

    _check_kwargs("optimizer", "optimizer", config.name, _OPTIMIZERS, config.kwargs, "torch.optim")
    params = list(params)
    kwargs = dict(config.kwargs)
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    if config.name in ("adam", "adamw") and not {"fused", "foreach", "differentiable"} & kwargs.keys():
        tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
        kwargs["fused"] = all(t.is_floating_point() and t.device.type in ("cpu", "cuda") for t in tensors)
    return getattr(torch.optim, _OPTIMIZERS[config.name])(params, **kwargs)


def build_scheduler(optimizer: Any, config: SchedulerConfig) -> "Any":
    """The torch learning-rate scheduler named by `config` over `optimizer`."""
    import torch

    _check_kwargs("scheduler", "scheduler", config.name, _SCHEDULERS, config.kwargs, "torch.optim.lr_scheduler")
    kwargs = dict(config.kwargs)
    if config.name == "constant":
        kwargs.setdefault("factor", 1.0)
    return getattr(torch.optim.lr_scheduler, _SCHEDULERS[config.name])(optimizer, **kwargs)
