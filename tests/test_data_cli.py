"""`textrl data build/list/show` through the real `textrl` command parser."""

from pathlib import Path

import pytest

from textrl.cli import main

RW = "textrl/randomwalks/medium-v0"


@pytest.fixture(autouse=True)
def _fresh_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))


def test_build_list_show(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "no local datasets" in out and RW in out
    assert main(["data", "build", RW, "--episodes", "30", "--seed", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"{RW}: wrote 30 episodes (" in out and "episodes/s), " in out and " MiB at " in out
    assert main(["data", "build", RW, "--quiet"]) == 0
    assert f"{RW}: already built, 30 episodes" in capsys.readouterr().out
    assert main(["data", "list"]) == 0
    assert f"  {RW}  30 episodes" in capsys.readouterr().out
    assert main(["data", "show", RW, "--examples", "2"]) == 0
    out = capsys.readouterr().out
    for expected in ("episodes: 30", "return: mean", "reference scores: min", "normalised score of the data",
                     "episode 0 (return", "episode 1 (return", "epsilon 0.5"):
        assert expected in out
    assert "episode 2 (return" not in out
    folder = tmp_path / "datasets" / RW
    assert main(["data", "show", str(folder), "--examples", "0"]) == 0
    assert "episodes: 30" in capsys.readouterr().out


def test_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "show", "textrl/randomwalks/medium-v7"]) == 2
    assert "no local dataset" in capsys.readouterr().err
    assert main(["data", "build", "textrl/randomwalks/hard-v0"]) == 2
    assert "unknown tier 'hard'" in capsys.readouterr().err
