"""textrl: offline reinforcement learning for language models."""

from textrl.config import (
    BCConfig,
    ConfigError,
    CQLConfig,
    FilteredBCConfig,
    GenerationConfig,
    ILQLConfig,
    MCReturnsConfig,
    ModelConfig,
    OptimizerConfig,
    SchedulerConfig,
    TokenizerConfig,
    TrainConfig,
    TRLConfig,
    default_config,
    default_ilql_config,
    load_yaml,
    save_yaml,
)

__version__ = "0.1.0"

import textrl.registration  # noqa: E402,F401  (registers the gymnasium ids)
from textrl.data import PackedDataset, from_samples, load, load_tokenizer, make_dataset, pack  # noqa: E402
from textrl.env import TokenEnv, TokenVectorEnv  # noqa: E402
from textrl.presets import task_config, text_config  # noqa: E402
from textrl.rollout import EvalResult, collect_episodes, evaluate  # noqa: E402
from textrl.tasks import TASKS, get_task  # noqa: E402
from textrl.text_env import RewardFunctionError, TextEnv, TextTask  # noqa: E402
from textrl.trainer import NonFiniteLossError, Trainer  # noqa: E402

__all__ = [
    "BCConfig", "ConfigError", "CQLConfig", "FilteredBCConfig", "GenerationConfig", "ILQLConfig", "MCReturnsConfig",
    "ModelConfig", "OptimizerConfig", "SchedulerConfig", "TokenizerConfig", "TrainConfig", "TRLConfig",
    "default_config", "default_ilql_config", "load_yaml", "save_yaml",
    "PackedDataset", "from_samples", "load", "load_tokenizer", "make_dataset", "pack",
    "TokenEnv", "TokenVectorEnv", "task_config", "text_config", "EvalResult", "collect_episodes", "evaluate",
    "TASKS", "get_task", "NonFiniteLossError", "Trainer", "RewardFunctionError", "TextEnv", "TextTask",
]
