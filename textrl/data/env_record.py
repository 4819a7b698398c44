"""The env a dataset evaluates in, recorded with the data so that another process can register it again.

`from_samples(..., env=ID)` stores the env's id and, when it can, how to make it: the entry point and
keyword arguments of its registration, with functions (a reward function, a prompt sampler) stored by
import path (`module:name`) and the tokenizer as the dataset's own. A function defined in a script
(`__main__`), a lambda or a nested function has no import path: then only the id is stored, with the
reason, and the process that evaluates must register that id itself (`gymnasium.register`).
"""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium

from textrl.data.store import build_info, env_id_of, load, load_tokenizer

IMPORT, TOKENIZER = "$import", "$tokenizer"
"""The keys of a recorded value that is a function or class (its import path) or the dataset's tokenizer."""


class EnvUnavailableError(ValueError):
    """A dataset names an env that is not registered in this process and cannot be made from its record."""


class _NotRecordable(ValueError):
    """A registration argument that cannot be stored as JSON or by import path."""


def import_path(obj: Any) -> str:
    """`module:qualname` of a function or class that another process can import, or _NotRecordable saying why."""
    module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not name:
        raise _NotRecordable(f"{obj!r} has no module and name to import it by")
    if module == "__main__":
        raise _NotRecordable(f"{name} is defined in a script (__main__), which another process cannot import")
    if "<" in name:
        raise _NotRecordable(f"{module}.{name} is a lambda or a nested function, which has no import path")
    path = f"{module}:{name}"
    try:
        found = resolve(path)
    except ImportError as e:
        raise _NotRecordable(f"{path} cannot be imported ({e})") from None
    if found is not obj:
        raise _NotRecordable(f"importing {path} gives another object than the one registered")
    return path


def resolve(path: str) -> Any:
    """The object a `module:qualname` path names (an ImportError naming the path when it does not import)."""
    module, _, name = path.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"cannot import {path}: {type(e).__name__}: {e}") from None
    return obj


def _encode(value: Any, name: str, tokenizer: Any) -> Any:
    """A registration argument as JSON: plain values as they are, the tokenizer as the dataset's, functions and
    classes by import path."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_encode(v, name, tokenizer) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _encode(v, f"{name}.{k}", tokenizer) for k, v in value.items()}
    if hasattr(value, "get_vocab") and hasattr(value, "convert_ids_to_tokens"):  # a transformers tokenizer
        if value is tokenizer or value.get_vocab() == tokenizer.get_vocab():
            return {TOKENIZER: "dataset"}
        raise _NotRecordable(f"its {name} is another tokenizer than the samples'")
    if callable(value):
        try:
            return {IMPORT: import_path(value)}
        except _NotRecordable as e:
            raise _NotRecordable(f"its {name}: {e}") from None
    raise _NotRecordable(f"its {name} is a {type(value).__name__}, which cannot be stored")


def record_env(env_id: str, tokenizer: Any) -> dict[str, Any]:
    """How to make the registered env `env_id` again: {"entry_point", "kwargs", "max_episode_steps"} with the
    tokenizer and functions encoded, or {"unrecorded": why} when an argument has no stored form."""
    spec = gymnasium.spec(env_id)
    try:
        entry = spec.entry_point
        if isinstance(entry, str):
            if entry.startswith("__main__:"):
                raise _NotRecordable(f"its entry point {entry} is defined in a script (__main__)")
        else:
            entry = import_path(entry)
        kwargs = {k: _encode(v, k, tokenizer) for k, v in (spec.kwargs or {}).items()}
    except _NotRecordable as e:
        return {"unrecorded": str(e)}
    return {"entry_point": entry, "kwargs": kwargs, "max_episode_steps": spec.max_episode_steps}


def _decode(value: Any, tokenizer: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v, tokenizer) for v in value]
    if isinstance(value, dict):
        if set(value) == {TOKENIZER}:
            return tokenizer()
        if set(value) == {IMPORT}:
            return resolve(value[IMPORT])
        return {k: _decode(v, tokenizer) for k, v in value.items()}
    return value


def dataset_env(dataset: Any) -> str | None:
    """The env id a dataset evaluates in (None without one), registered in this process from the dataset's
    record when it is not registered yet.

    Raises EnvUnavailableError naming the dataset, the env and what to do when the record cannot make it.
    """
    dataset = load(dataset)
    env_id = env_id_of(dataset)
    if env_id is None or env_id in gymnasium.registry:
        return env_id
    record = build_info(dataset).get("env_record")
    why = "it records only the env's id" if record is None else record.get("unrecorded")
    if why is None:
        try:
            resolve(record["entry_point"])
            kwargs = _decode(record["kwargs"], lambda: load_tokenizer(dataset))
        except ImportError as e:
            why = f"what it records does not import here: {e}"
    if why is not None:
        raise EnvUnavailableError(
            f"dataset {dataset.spec.dataset_id!r} names env {env_id!r}, which is not registered in this process, and "
            f"the dataset cannot make it ({why}). Register it first (gymnasium.register({env_id!r}, "
            "entry_point='textrl:TextEnv', kwargs=dict(tokenizer=..., prompts=..., reward_fn=...))), or put the "
            "reward function in a module that imports from here (not a script's __main__, not a lambda) and make "
            "the dataset again, so that it records how to make the env")
    gymnasium.register(env_id, entry_point=record["entry_point"], kwargs=kwargs,
                       max_episode_steps=record.get("max_episode_steps"))
    return env_id
