"""Test-wide settings: never touch the network, keep datasets in a temporary folder."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _minari_root(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Point MINARI_DATASETS_PATH at a temporary folder for the whole session."""
    os.environ["MINARI_DATASETS_PATH"] = str(tmp_path_factory.mktemp("minari"))
