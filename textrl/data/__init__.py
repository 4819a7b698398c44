"""Offline datasets: build task datasets, import (samples, rewards), load, and pack for training."""

import textrl.registration  # noqa: F401  (env ids must exist before datasets name them)
from textrl.data.build import (
    DEFAULT_EPISODES,
    DEFAULT_SEED,
    make_dataset,
    parse_task_dataset_id,
    task_dataset_id,
    task_dataset_ids,
)
from textrl.data.cache import pack
from textrl.data.env_record import EnvUnavailableError, dataset_env
from textrl.data.packed_dataset import Batch, PackedDataset, check_vocab
from textrl.data.samples import from_samples
from textrl.data.store import build_info, episode_texts, load, load_tokenizer, local_dataset_ids

__all__ = [
    "DEFAULT_EPISODES",
    "DEFAULT_SEED",
    "Batch",
    "EnvUnavailableError",
    "PackedDataset",
    "build_info",
    "check_vocab",
    "dataset_env",
    "episode_texts",
    "from_samples",
    "load",
    "load_tokenizer",
    "local_dataset_ids",
    "make_dataset",
    "pack",
    "parse_task_dataset_id",
    "task_dataset_id",
    "task_dataset_ids",
]
