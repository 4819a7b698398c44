"""Offline datasets: build task datasets, import (samples, rewards), load, and pack for training."""

import textrl.registration  # noqa: F401  (env ids must exist before datasets name them)
from textrl.data.build import make_dataset, parse_task_dataset_id
from textrl.data.pack import PackedDataset, pack
from textrl.data.samples import from_samples
from textrl.data.store import load, load_tokenizer, local_dataset_ids

__all__ = ["make_dataset", "parse_task_dataset_id", "from_samples", "load", "load_tokenizer",
           "local_dataset_ids", "pack", "PackedDataset"]
