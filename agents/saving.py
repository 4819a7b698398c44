"""Saved agents: a folder with `config.yaml`, `tokenizer/`, `model/` (plain transformers plus the value
heads), `agent.json` naming the agent, and `manifest.json` with each file's sha256."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeVar

from textrl.config import load_yaml, save_yaml
from textrl.io import (
    DamagedFileError,
    atomic_directory,
    atomic_write_text,
    read_json_mapping,
    verify_manifest,
    write_manifest,
)
from textrl.models import ValueModel
from textrl.pretrained import load_pretrained, refuse_custom_code

AGENT_FILE = "agent.json"
CONFIG_FILE = "config.yaml"
MODEL_DIR = "model"
TOKENIZER_DIR = "tokenizer"


AgentT = TypeVar("AgentT", bound="SavedAgent")


class SavedAgent:
    """`save`, `save_pretrained` and `load` of an `OfflineAgent` (mixed into it)."""

    def save(self, directory: str | os.PathLike) -> None:
        """Write config, tokenizer and model to `directory`, atomically."""
        with atomic_directory(directory) as tmp:
            self.save_pretrained(tmp)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config, tokenizer and model into an existing or new directory (used by checkpoints).

        `manifest.json`, written last, records each file's sha256 so `load` can name a damaged one.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model = self._require_model()
        save_yaml(self.config, directory / CONFIG_FILE)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
        model.save_pretrained(directory / MODEL_DIR)
        atomic_write_text(directory / AGENT_FILE, json.dumps({"agent": self.agent_name, "method": self.method_cls.name,
                                                                "env_id": self.env_id,
                                                                "prompt_prefix": self.prompt_prefix}))
        write_manifest(directory)

    @classmethod
    def load(cls: type[AgentT], directory: str | os.PathLike) -> AgentT:
        """Restore an agent written by `save` (or a checkpoint's `agent/` folder).

        Files are checked against the folder's manifest; a damaged one is named in the error.
        """
        directory = Path(directory)
        if (directory / "agent" / AGENT_FILE).is_file():
            directory = directory / "agent"
        if not (directory / AGENT_FILE).is_file():
            raise FileNotFoundError(
                f"{directory} is not a saved agent: it has no {AGENT_FILE}. Pass a folder written by agent.save() "
                "or a checkpoint's step_N folder"
            )
        verify_manifest(directory, "saved agent")
        info = read_agent_info(directory / AGENT_FILE)
        if info.get("agent") != cls.agent_name:
            raise ValueError(
                f"{directory} holds a '{info.get('agent')}' agent, not '{cls.agent_name}': load it with the "
                f"matching class (agents.load_agent picks it for you)"
            )
        from transformers import AutoTokenizer

        agent = cls(load_yaml(directory / CONFIG_FILE, complete=True))
        if (directory / TOKENIZER_DIR).is_dir():
            refuse_custom_code(directory / TOKENIZER_DIR)
            try:
                agent.tokenizer = load_pretrained(AutoTokenizer, directory / TOKENIZER_DIR)
            except Exception as e:  # tokenizers raises bare Exceptions on a garbled tokenizer.json
                raise DamagedFileError(f"the tokenizer files in {directory / TOKENIZER_DIR} are damaged "
                                       f"(tokenizer.json, tokenizer_config.json): {str(e)[:200]}") from e
        agent.model = ValueModel.from_pretrained(directory / MODEL_DIR)
        env_id = info.get("env_id")
        if env_id is not None and not isinstance(env_id, str):
            raise DamagedFileError(f"{directory / AGENT_FILE} names env {env_id!r}, not an env id: save the agent again")
        agent.env_id = env_id
        agent.prompt_prefix = [int(i) for i in info.get("prompt_prefix", [])]
        return agent


def read_agent_info(path: Path) -> dict[str, Any]:
    """The contents of a saved agent's agent.json; a truncated or garbled file is named as damaged."""
    return read_json_mapping(path, ": restore it or save the agent again")
