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
