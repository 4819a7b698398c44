"""Nested state (optimizer and scheduler state dicts, RNG states) as safetensors plus JSON.

Loading a pickle can run any code its author chose, so trainer state is never pickled: tensors go
to a safetensors file and everything else to JSON, with tagged objects for what JSON lacks
(tuples, dicts with non-string keys, NumPy arrays, non-finite floats). Both formats only hold
data, and the round trip is exact (floats are written with their shortest exact repr).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from textrl.io import DamagedFileError

__all__ = ["save_state", "load_state"]

_TAGS = ("__tensor__", "__tuple__", "__items__", "__ndarray__")


def save_state(state: Any, json_path: str | os.PathLike, tensors_path: str | os.PathLike) -> None:
    """Write `state` (dicts, lists, tuples, scalars, strings, None, tensors, NumPy arrays) to two files."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors, "state")
    save_file(tensors, str(tensors_path))
    Path(json_path).write_text(json.dumps(tree, allow_nan=True), encoding="utf-8")


def load_state(json_path: str | os.PathLike, tensors_path: str | os.PathLike) -> Any:
    """Read what `save_state` wrote; a truncated or garbled file is a `DamagedFileError` naming it."""
    try:
        tensors = load_file(str(tensors_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise DamagedFileError(f"{tensors_path} is damaged or truncated ({e})") from None
    try:
        tree = json.loads(Path(json_path).read_text(encoding="utf-8"))
        return _decode(tree, tensors)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise DamagedFileError(f"{json_path} is damaged or truncated ({type(e).__name__}: {e})") from None


def _encode(value: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    """A JSON-able form of `value`; tensors are moved into `tensors` and referenced by key."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().to("cpu", copy=True).contiguous()  # a copy: shared storage is refused
        return {"__tensor__": key}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and k not in _TAGS for k in value):
            return {k: _encode(v, tensors, f"{where}.{k}") for k, v in value.items()}
        return {"__items__": [[_encode(k, tensors, where), _encode(v, tensors, f"{where}.{k}")]
                              for k, v in value.items()]}
    raise TypeError(f"{where}: a {type(value).__name__} cannot be stored without pickling; "
                    "state must hold only tensors, arrays, numbers, strings, lists, tuples and dicts")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Invert `_encode`."""
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {_hashable(_decode(k, tensors)): _decode(v, tensors) for k, v in value["__items__"]}
    if "__ndarray__" in value:
        return np.asarray(value["__ndarray__"], dtype=np.dtype(value["dtype"])).reshape(value["shape"])
    return {k: _decode(v, tensors) for k, v in value.items()}


def _hashable(key: Any) -> Any:
    """A decoded dict key (keys are scalars or tuples of them)."""
    if isinstance(key, (list, dict)):
        raise TypeError(f"a dict key must be a scalar or a tuple, got {type(key).__name__}")
    return key
