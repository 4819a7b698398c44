"""Faults an attacker or an accident can plant in a run folder, a checkpoint or a saved agent (issue 23):
links, paths out of the folder, crafted state, full disks. Each is refused with a message, nothing is lost."""

import json
import os
from pathlib import Path

import pytest
from test_trainer import Regressor, Rows, _config

from textrl.io import DamagedFileError, file_sha256, verify_manifest
from textrl.trainer import Trainer


def _train(tmp_path, **train):
    return Trainer(Regressor(), Rows(), _config(tmp_path, **{"total_steps": 3, **train})).train()


@pytest.mark.parametrize("name", [".lock", "metrics.jsonl"])
def test_a_link_planted_in_the_run_folder_is_never_written_through(tmp_path, name) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / name).symlink_to(victim)
    with pytest.raises(OSError, match=rf"{name} is a symbolic link .*never written through a link"):
        _train(tmp_path)
    assert victim.read_text() == "precious\n"


def test_a_manifest_naming_a_file_outside_its_folder_is_refused(tmp_path) -> None:
    _train(tmp_path)
    step = tmp_path / "run" / "step_000003"
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    manifest = json.loads((step / "manifest.json").read_text())
    manifest["sha256"]["../../outside.txt"] = file_sha256(outside)
    (step / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DamagedFileError, match=r"lists '../../outside.txt', a path that leaves the checkpoint"):
        verify_manifest(step, "checkpoint")
    manifest["sha256"].pop("../../outside.txt")
    manifest["sha256"][str(outside)] = file_sha256(outside)
    (step / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DamagedFileError, match="a path that leaves the checkpoint"):
        verify_manifest(step, "checkpoint")


def test_a_symlink_inside_a_checkpoint_is_refused_even_with_a_matching_manifest(tmp_path) -> None:
    _train(tmp_path)
    step = tmp_path / "run" / "step_000003"
    target = tmp_path / "elsewhere.json"
    target.write_text((step / "trainer_state.json").read_text())
    (step / "trainer_state.json").unlink()
    (step / "trainer_state.json").symlink_to(target)
    with pytest.raises(DamagedFileError, match=r"trainer_state.json is a symbolic link"):
        _train(tmp_path, resume_from_checkpoint=str(tmp_path / "run"), total_steps=6)
    assert os.path.islink(step / "trainer_state.json") and Path(target).is_file()
