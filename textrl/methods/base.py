"""What every method shares: the method config base, its registry by name, and the decoding section
(`method.gen_kwargs`)."""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field
from typing import Union

from textrl.validation import ConfigError, Section, build_section

MIN_TEMPERATURE = 1e-6
"""The smallest sampling temperature accepted: below it 1/temperature nears float32's range and the
result is greedy decoding anyway, which temperature 0 says plainly."""


@dataclass(frozen=True)
class GenerationConfig(Section):
    """Decoding settings: how many tokens, top-k, temperature (0 = greedy) and the acting beta.

    `beta` weighs the advantage when acting (log pi + beta * (Q - V) for ILQL and MC returns); it is
    not `method.beta`, ILQL's AWAC temperature in training. A list evaluates every value on the same
    episodes.
    """

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
class MethodConfig(Section):
    """Base of the per-agent method configs; `name` selects the agent's method."""

    _path: typing.ClassVar[str] = "method"
    name: typing.ClassVar[str] = ""

    gen_kwargs: GenerationConfig = field(default_factory=GenerationConfig)

    def __post_init__(self) -> None:
        if isinstance(self.gen_kwargs, dict):
            object.__setattr__(self, "gen_kwargs", build_section(GenerationConfig, self.gen_kwargs))
        super().__post_init__()

    def _check_unit(self, name: str, low_open: bool, high_open: bool) -> None:
        v = getattr(self, name)
        ok = (0 < v if low_open else 0 <= v) and (v < 1 if high_open else v <= 1)
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        self._require(name, ok, f"must lie in {lo}0, 1{hi}")


