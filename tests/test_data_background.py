"""The hdf5 writer thread: its errors reach the caller, and no failure leaves a thread or a dataset behind."""

import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from textrl.data import background, make_dataset
from textrl.data.background import BackgroundEpisodeFile
from textrl.data.hdf5 import EpisodeFile
from textrl.data.store import datasets_root, local_dataset_ids


@pytest.fixture(autouse=True)
def _fresh_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))


def _writers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "textrl-hdf5-writer"]


def _episode(i: int) -> tuple:
    obs = {"input_ids": np.array([[1, 0], [1, 2]], np.uint8), "length": np.array([1, 2], np.int32)}
    return obs, np.array([2]), np.array([float(i)]), np.array([True]), np.array([False]), {"prompt": "p", "text": "t"}


def test_all_queued_episodes_are_written_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(background, "BATCH", 7)  # several batches and a partial one
    writer = BackgroundEpisodeFile(tmp_path / "x.hdf5")
    for i in range(30):
        writer.write(*_episode(i))
    writer.close()
    assert writer.file.episodes == 30 and not _writers()
    with h5py.File(tmp_path / "x.hdf5") as f:
        assert [f[f"episode_{i}/rewards"][0] for i in range(30)] == list(range(30))


def test_a_writer_error_reaches_the_build_and_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    real = EpisodeFile.write

    def failing(self: EpisodeFile, *args: object) -> None:
        if self.episodes == 12:
            raise OSError("simulated disk full")
        real(self, *args)

    monkeypatch.setattr(background, "BATCH", 5)
    monkeypatch.setattr(EpisodeFile, "write", failing)
    with pytest.raises(RuntimeError, match="hdf5") as info:
        make_dataset("textrl/randomwalks/random-v1", num_episodes=40, progress=False)
    assert "simulated disk full" in str(info.value.__cause__)
    assert not _writers() and local_dataset_ids() == []
    assert not any(p.name.startswith(".") for p in datasets_root().rglob("*")), "staging folders were left behind"


def test_an_abandoned_write_stops_the_thread(tmp_path: Path) -> None:
    writer = BackgroundEpisodeFile(tmp_path / "x.hdf5")
    for i in range(600):
        writer.write(*_episode(i))
    writer.close(finish=False)
    assert not _writers() and writer.file.episodes <= 600
