"""Test-wide settings: never touch the network, keep datasets in a temporary folder."""

import os
import shutil
from collections.abc import Callable
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _minari_root(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Give each test module its own MINARI_DATASETS_PATH, so modules never see each other's datasets."""
    os.environ["MINARI_DATASETS_PATH"] = str(tmp_path_factory.mktemp("minari"))


@pytest.fixture(scope="session")
def _built_datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide datasets folder where `built_dataset` builds each task dataset once."""
    return tmp_path_factory.mktemp("built-datasets")


@pytest.fixture
def built_dataset(_built_datasets: Path) -> Callable[[str], None]:
    """`built_dataset(dataset_id)` puts the task dataset `dataset_id` into this module's datasets folder, as
    `make_dataset(dataset_id)` would build it there, but built once per session and copied (the 1000-episode
    datasets take half a minute each on a busy machine). `make_dataset` then loads and checks the copy."""
    from textrl.data import make_dataset

    def provide(dataset_id: str) -> None:
        module_root = os.environ["MINARI_DATASETS_PATH"]
        if (Path(module_root) / dataset_id).exists():
            return
        os.environ["MINARI_DATASETS_PATH"] = str(_built_datasets)
        try:
            make_dataset(dataset_id, progress=False)
        finally:
            os.environ["MINARI_DATASETS_PATH"] = module_root
        shutil.copytree(_built_datasets / dataset_id, Path(module_root) / dataset_id)

    return provide
