"""Every `from_pretrained` textrl calls goes through here, so none runs code that a folder ships.

A model or tokenizer folder can name its own Python classes (`auto_map` in config.json or
tokenizer_config.json); transformers would then ask on the terminal whether to run them, and run
them on "y". textrl passes `trust_remote_code=False` to every load and refuses such a local
folder up front with a message that says why, so nothing prompts and no shipped code runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["refuse_custom_code", "load_pretrained"]

_CONFIGS = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "adapter_config.json")


def refuse_custom_code(path: str | os.PathLike) -> None:
    """Raise if the local folder `path` asks to run its own code (`auto_map`); a hub name is left to transformers."""
    folder = Path(path)
    if not folder.is_dir():
        return
    for name in _CONFIGS:
        try:
            settings = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # absent or damaged: the load itself names a damaged file
        if isinstance(settings, dict) and "auto_map" in settings:
            raise ValueError(f"{folder / name} names its own Python code (auto_map: {settings['auto_map']}): textrl "
                             "never runs code shipped with a model or tokenizer (trust_remote_code=False). Use a "
                             "folder saved with transformers' own classes, or remove auto_map from it")


def load_pretrained(loader: Any, path: str | os.PathLike, **kwargs: Any) -> Any:
    """`loader.from_pretrained(path, trust_remote_code=False, **kwargs)` after `refuse_custom_code(path)`."""
    refuse_custom_code(path)
    return loader.from_pretrained(str(path), trust_remote_code=False, **kwargs)
