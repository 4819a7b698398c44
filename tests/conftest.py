"""Test-wide settings: never touch the network, keep datasets in a temporary folder, one torch thread.

One torch thread per process (the CLI tests' subprocesses inherit it): with two threads OpenMP spins while it
waits, so on a machine whose cores are busy with other work the suite ran six times slower or more (two
benchmark workers beside it: tests/test_agents.py took 99 s with one thread, and had not finished in 600 s
with two). The tests' models are tiny, so one thread costs them little on an idle machine.
"""

import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # read when torch is first imported, which is after this

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


@pytest.fixture
def benchmark_script() -> Callable[[str], ModuleType]:
    """`benchmark_script("plot_curves")` imports benchmarks/plot_curves.py as a module (benchmarks/ is not a
    package: its scripts run from the command line)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" /
                                                      f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
