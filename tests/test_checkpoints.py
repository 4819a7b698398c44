"""Checkpoints and run folders: no pickles, one run per folder, a lock, clean logs, verified files, atomic
swaps, disk-full and Ctrl-C messages, umask-respecting permissions."""

import argparse
import errno
import json
import os
import random
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from test_trainer import Regressor, Rows, _config

import textrl.io
from textrl import cli
from textrl.io import DamagedFileError, atomic_directory, atomic_write_text, clean_leftovers
from textrl.runs import RunLock, TrainingInterrupted
from textrl.safe_state import load_state, save_state
from textrl.trainer import ResumeWarning, Trainer, find_checkpoint


class Payload:
    """Unpickling this creates a file: what a crafted checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _trained(tmp_path, **train) -> Path:
    """A run folder with checkpoints at steps 3 (and 6 when total_steps=6)."""
    Trainer(Regressor(), Rows(), _config(tmp_path, **{"total_steps": 3, **train})).train()
    return tmp_path / "run"


def _resume(tmp_path, learner=None, rows=None, **train):
    cfg = _config(tmp_path, resume_from_checkpoint=str(tmp_path / "run"), **train)
    return Trainer(learner or Regressor(), rows or Rows(), cfg).train()


def test_state_round_trips_exactly_without_pickle(tmp_path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    random.random()
    np.random.rand()
    state = {"optimizer": opt.state_dict(), "python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state(), "best": -float("inf")}
    save_state(state, tmp_path / "s.json", tmp_path / "s.safetensors")
    back = load_state(tmp_path / "s.json", tmp_path / "s.safetensors")
    assert back["python"] == state["python"] and back["best"] == -float("inf")
    assert back["numpy"][0] == "MT19937" and np.array_equal(back["numpy"][1], state["numpy"][1])
    assert back["numpy"][1].dtype == state["numpy"][1].dtype and back["numpy"][2:] == state["numpy"][2:]
    assert torch.equal(back["torch"], state["torch"])
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]  # betas stay a tuple
    for key, value in state["optimizer"]["state"][0].items():
        assert torch.equal(back["optimizer"]["state"][0][key], value)
    with pytest.raises(TypeError, match="cannot be stored without pickling"):
        save_state({"f": Payload(tmp_path)}, tmp_path / "x.json", tmp_path / "x.safetensors")


def test_a_crafted_pickle_checkpoint_is_never_unpickled(tmp_path) -> None:
    run = _trained(tmp_path)
    step = run / "step_000003"
    for name in os.listdir(step):
        if name.startswith("trainer_state") or name == "manifest.json":
            os.unlink(step / name)
    marker = tmp_path / "pwned"
    torch.save({"step": Payload(marker)}, step / "trainer_state.pt")
    with pytest.raises(FileNotFoundError, match=f"no checkpoint at {run}: expected a step_N folder holding "
                                                "trainer_state.json"):
        _resume(tmp_path, total_steps=6)
    assert not marker.exists()


def test_a_fresh_run_into_another_runs_folder_is_refused(tmp_path) -> None:
    _trained(tmp_path)
    with pytest.raises(ValueError, match=r"holds another run; differs in: train.seed \(3 -> 4\)"):
        Trainer(Regressor(), Rows(), _config(tmp_path, total_steps=3, seed=4)).train()
    with pytest.warns(ResumeWarning, match="already holds checkpoints of this run .up to step_000003.: starting"):
        Trainer(Regressor(), Rows(), _config(tmp_path, total_steps=3)).train()
    (tmp_path / "run" / "run.json").unlink()  # checkpoints of an unknown run
    with pytest.raises(ValueError, match="holds checkpoints .up to step_000003. of a run it has no run.json for"):
        Trainer(Regressor(), Rows(), _config(tmp_path, total_steps=3)).train()


def test_resume_names_what_differs(tmp_path) -> None:
    _trained(tmp_path)
    with pytest.raises(ValueError, match=r"checkpoint of another run; differs in: dataset data \(64 rows"):
        _resume(tmp_path, rows=Rows(seed=1), total_steps=6)
    wider = Regressor()
    wider.model[0] = torch.nn.Linear(3, 16)
    with pytest.raises(ValueError, match=r"differs in: model shape \(2 tensors differ, e.g. 0.bias \[8\] -> \[16\]"):
        _resume(tmp_path, learner=wider, total_steps=6)

    class Other(Regressor):
        pass

    with pytest.raises(ValueError, match="differs in: agent type Regressor -> Other"):
        _resume(tmp_path, learner=Other(), total_steps=6)


def test_a_second_process_is_locked_out_and_a_stale_lock_taken_over(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    holder = RunLock(run)
    holder.acquire()  # another open file description: flock treats it as another process
    try:
        with pytest.raises(RuntimeError, match=f"another process .pid {os.getpid()}. is training into"):
            Trainer(Regressor(), Rows(), _config(tmp_path, total_steps=3)).train()
    finally:
        holder.release()
    (run / ".lock").write_text("999999999\n")  # left by a killed run: no flock holds it
    Trainer(Regressor(), Rows(), _config(tmp_path, total_steps=3)).train()
    assert not (run / ".lock").exists()


def test_resume_with_changed_optimizer_settings_warns(tmp_path) -> None:
    _trained(tmp_path)
    cfg = _config(tmp_path, resume_from_checkpoint=str(tmp_path / "run"), total_steps=6, batch_size=32)
    cfg = cfg.evolve(optimizer=dict(kwargs=dict(lr=2e-2)))
    with pytest.warns(ResumeWarning, match=r"optimizer.kwargs.lr \(0.01 -> 0.02\), train.batch_size \(16 -> 32\)"
                                           r"\. optimizer.kwargs.lr is ignored"):
        Trainer(Regressor(), Rows(), cfg).train()


def test_resume_when_total_steps_is_reached_says_so(tmp_path) -> None:
    _trained(tmp_path)
    with pytest.warns(ResumeWarning, match="nothing to train: the checkpoint .*step_000003 is at step 3"):
        assert _resume(tmp_path, total_steps=3) == []


def test_metrics_are_cut_back_to_the_checkpoint_on_resume(tmp_path) -> None:
    run = _trained(tmp_path)
    with open(run / "metrics.jsonl", "a") as f:  # steps 4, 5 logged before a kill, then a torn line
        f.write(json.dumps({"step": 4, "loss": 1.0}) + "\n" + json.dumps({"step": 5, "loss": 1.0}) + "\n{\"step\": 6, \"lo")
    _resume(tmp_path, total_steps=6)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_a_damaged_checkpoint_file_is_named(tmp_path) -> None:
    run = _trained(tmp_path)
    tensors = run / "step_000003" / "trainer_state.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF
    tensors.write_bytes(bytes(data))
    with pytest.raises(DamagedFileError, match="trainer_state.safetensors is damaged: its sha256 does not match"):
        _resume(tmp_path, total_steps=6)
    (run / "step_000003" / "manifest.json").unlink()
    tensors.write_bytes(bytes(data[:100]))
    with pytest.raises(DamagedFileError, match="trainer_state.safetensors is damaged or truncated"):
        _resume(tmp_path, total_steps=6)


def test_replacing_a_folder_never_leaves_it_missing(tmp_path, monkeypatch) -> None:
    best = tmp_path / "best"
    with atomic_directory(best) as tmp:
        (tmp / "v").write_text("1")
    real_replace = os.replace

    def killed_after_rename(src, dst):
        real_replace(src, dst)
        raise KeyboardInterrupt("killed after the rename")

    monkeypatch.setattr(textrl.io.os, "replace", killed_after_rename)
    with atomic_directory(best) as tmp:  # the swap is one rename: no os.replace, no window
        (tmp / "v").write_text("2")
    assert (best / "v").read_text() == "2" and sorted(os.listdir(tmp_path)) == ["best"]

    monkeypatch.setattr(textrl.io, "_exchange", lambda a, b: False)  # a filesystem without RENAME_EXCHANGE
    with pytest.raises(KeyboardInterrupt, match="killed after the rename"), atomic_directory(best) as tmp:
        (tmp / "v").write_text("3")
    assert not best.exists()  # killed between moving the old folder aside and the new one in
    monkeypatch.setattr(textrl.io.os, "replace", real_replace)
    clean_leftovers(tmp_path)
    assert (best / "v").read_text() == "2" and sorted(os.listdir(tmp_path)) == ["best"]


def test_leftovers_of_a_killed_run_are_cleaned(tmp_path) -> None:
    run = tmp_path / "run"
    (run / ".step_000009.x1y2z3.tmp").mkdir(parents=True)
    (run / ".metrics.jsonl.abc.tmp").write_text("partial")
    Trainer(Regressor(), Rows(), _config(tmp_path, total_steps=3)).train()
    assert not [p for p in os.listdir(run) if p.startswith(".")]


def test_a_file_as_checkpoint_dir_names_the_setting(tmp_path) -> None:
    (tmp_path / "run").write_text("not a folder")
    with pytest.raises(ValueError, match=r"train.checkpoint_dir=.*run: .*run is a file, not a folder"):
        Trainer(Regressor(), Rows(), _config(tmp_path, total_steps=3)).train()


def test_disk_full_while_checkpointing_names_the_folder_and_keeps_the_last_one(tmp_path) -> None:
    learner = Regressor()
    saves = []

    def save(directory):
        saves.append(directory)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        Regressor.save_pretrained(learner, directory)

    learner.save_pretrained = save
    with pytest.raises(OSError, match=r"the disk is full: cannot write .*step_000006 .in train.checkpoint_dir "
                                      r".*; the last good checkpoint .*step_000003 is intact"):
        Trainer(learner, Rows(), _config(tmp_path)).train()
    run = tmp_path / "run"
    assert find_checkpoint(run).name == "step_000003" and not (run / "step_000006").exists()
    assert sorted(p for p in os.listdir(run) if p.startswith(".")) == []
    assert _resume(tmp_path, total_steps=6)[-1]["step"] == 6


def test_ctrl_c_says_where_the_last_checkpoint_is(tmp_path, capsys) -> None:
    learner = Regressor()

    def interrupt(model, step):
        if step == 5:
            raise KeyboardInterrupt("Ctrl-C at step 5")

    learner.after_optimizer_step = interrupt
    with pytest.raises(TrainingInterrupted) as raised:
        Trainer(learner, Rows(), _config(tmp_path)).train()
    run = tmp_path / "run"
    assert str(raised.value) == (f"textrl: interrupted at step 4; the last checkpoint is {run / 'step_000003'}. "
                                 f"Resume with train.resume_from_checkpoint={run}")
    assert str(raised.value.__cause__) == "Ctrl-C at step 5"
    assert capsys.readouterr().err == ""  # said by the exception, not printed: a caller may have its own advice
    assert not (run / ".lock").exists()


def test_the_cli_exits_130_without_traceback_on_ctrl_c(monkeypatch, capsys) -> None:
    def interrupted(args):
        raise KeyboardInterrupt

    parser = cli.build_parser()
    monkeypatch.setattr(parser, "parse_args", lambda argv: argparse.Namespace(func=interrupted, command="train"))
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main(["train"]) == 130
    assert "Traceback" not in capsys.readouterr().err


def test_the_cli_prints_a_training_runs_resume_line_once(monkeypatch, capsys) -> None:
    def interrupted(args):
        raise TrainingInterrupted("textrl: interrupted at step 4; resume with ...")

    parser = cli.build_parser()
    monkeypatch.setattr(parser, "parse_args", lambda argv: argparse.Namespace(func=interrupted, command="fit"))
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main(["fit"]) == 130
    assert capsys.readouterr().err == "textrl: interrupted at step 4; resume with ...\n"


def test_files_and_folders_follow_the_umask(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        Trainer(Regressor(), Rows(), _config(tmp_path, total_steps=3)).train()
        atomic_write_text(tmp_path / "table.csv", "a,b\n")
    finally:
        os.umask(old)
    run = tmp_path / "run"

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    assert mode(tmp_path / "table.csv") == 0o644
    assert mode(run / "step_000003") == 0o755 and mode(run / "step_000003" / "agent") == 0o755
    for name in ("trainer_state.json", "trainer_state.safetensors", "manifest.json"):
        assert mode(run / "step_000003" / name) == 0o644, name
    assert mode(run / "metrics.jsonl") == 0o644 and mode(run / "run.json") == 0o644


def test_a_step_builds_each_row_once(tmp_path) -> None:
    class Counted(Rows):
        rows_built = 0

        def batch(self, rows):
            Counted.rows_built += len(rows)
            return super().batch(rows)

    data = Counted()
    Trainer(Regressor(), data, _config(tmp_path, minibatch_size=4)).train()
    assert Counted.rows_built == 64 + 6 * 16  # the run's fingerprint reads each row once, then 16 rows a step


def test_a_copied_run_folder_resumes(tmp_path) -> None:
    _trained(tmp_path / "a")
    shutil.copytree(tmp_path / "a" / "run", tmp_path / "run")
    assert [r["step"] for r in _resume(tmp_path, total_steps=6) if "loss" in r] == [4, 5, 6]
