"""Test-wide settings: never touch the network, keep datasets in a temporary folder."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _minari_root(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Give each test module its own MINARI_DATASETS_PATH, so modules never see each other's datasets."""
    os.environ["MINARI_DATASETS_PATH"] = str(tmp_path_factory.mktemp("minari"))
