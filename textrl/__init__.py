"""textrl: offline reinforcement learning for language models."""

import textrl.registration  # noqa: F401  (registers the gymnasium ids)
from textrl.env import TokenEnv, TokenVectorEnv
from textrl.rollout import EvalResult, collect_episodes, evaluate
from textrl.tasks import TASKS, get_task
from textrl.text_env import RewardFunctionError, TextEnv, TextTask

__version__ = "0.1.0"

# Imported on first use: these need torch (the configs through their methods' losses), which
# `import textrl` (and `textrl --help`) does without.
_LAZY = {name: "textrl.config" for name in ("BCConfig", "ConfigError", "CQLConfig", "FilteredBCConfig",
                                            "GenerationConfig", "ILQLConfig", "MCReturnsConfig", "ModelConfig",
                                            "OptimizerConfig", "SchedulerConfig", "TokenizerConfig", "TrainConfig",
                                            "TRLConfig", "default_config", "default_ilql_config", "load_yaml",
                                            "save_yaml")}
_LAZY.update({name: "textrl.presets" for name in ("task_config", "text_config")})
_LAZY.update({name: "textrl.data" for name in ("PackedDataset", "from_samples", "load", "load_tokenizer",
                                                "make_dataset", "pack", "dataset_env", "EnvUnavailableError")})
_LAZY.update(NonFiniteLossError="textrl.trainer", Trainer="textrl.trainer", TrainingInterrupted="textrl.runs")


def __getattr__(name: str) -> object:
    """The torch-backed names of the public API, imported when first asked for."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'textrl' has no attribute {name!r}")


__all__ = [
    "BCConfig", "ConfigError", "CQLConfig", "FilteredBCConfig", "GenerationConfig", "ILQLConfig", "MCReturnsConfig",
    "ModelConfig", "OptimizerConfig", "SchedulerConfig", "TokenizerConfig", "TrainConfig", "TRLConfig",
    "default_config", "default_ilql_config", "load_yaml", "save_yaml",
    "PackedDataset", "from_samples", "load", "load_tokenizer", "make_dataset", "pack", "dataset_env",
    "EnvUnavailableError",
    "TokenEnv", "TokenVectorEnv", "task_config", "text_config", "EvalResult", "collect_episodes", "evaluate",
    "TASKS", "get_task", "NonFiniteLossError", "Trainer", "TrainingInterrupted", "RewardFunctionError", "TextEnv", "TextTask",
]
