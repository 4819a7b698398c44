"""`textrl data build/list/show` through the real `textrl` command parser."""

import subprocess
import sys
from pathlib import Path

import pytest

from textrl.cli import main
from textrl.data.store import staging_prefix

RW = "textrl/randomwalks/medium-v1"
SIZED = "textrl/randomwalks/medium-n30-s2-v1"


@pytest.fixture(autouse=True)
def _fresh_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))


def test_build_list_show(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "no local datasets" in out and RW in out
    assert main(["data", "build", RW, "--episodes", "30", "--seed", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"{SIZED}: wrote 30 episodes (" in out and "episodes/s), " in out and " MiB at " in out
    assert main(["data", "build", SIZED, "--quiet"]) == 0
    assert f"{SIZED}: already built, 30 episodes" in capsys.readouterr().out
    assert main(["data", "list"]) == 0
    assert f"  {SIZED}  30 episodes" in capsys.readouterr().out
    assert main(["data", "show", SIZED, "--examples", "2"]) == 0
    out = capsys.readouterr().out
    for expected in ("episodes: 30", "return: mean", "reference scores: min", "normalised score of the data",
                     "episode 0 (return", "episode 1 (return", "epsilon 0.5"):
        assert expected in out
    assert "episode 2 (return" not in out
    folder = tmp_path / "datasets" / SIZED
    assert main(["data", "show", str(folder), "--examples", "0"]) == 0
    assert "episodes: 30" in capsys.readouterr().out


def test_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "show", "textrl/randomwalks/medium-v7"]) == 2
    assert "no local dataset" in capsys.readouterr().err
    assert main(["data", "build", "textrl/randomwalks/hard-v1"]) == 2
    assert "unknown tier 'hard'" in capsys.readouterr().err


def test_list_removes_staging_folders_of_killed_builds_and_names_others(capsys: pytest.CaptureFixture[str],
                                                                         tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    root = tmp_path / "datasets"
    killed = root / f".staging-{dead.pid}@{staging_prefix().split('@', 1)[1]}abc"
    old = root / ".staging-k2j3h4"
    for folder in (killed, old):
        folder.mkdir(parents=True)
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert f"removed {killed}" in out and not killed.exists()
    assert f"staging folder {old}: its builder cannot be checked" in out and old.exists()
