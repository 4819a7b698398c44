"""Faults and processes: SIGKILL then resume ends bit for bit like an uninterrupted run and logs each step
once; a live process locks its run folder, a killed one does not; 2-process DDP matches 1 process; only
rank 0 writes; evaluation gathers episodes from every rank."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from launching import finish, needs_launcher, train_tiny
from test_trainer import Regressor, Rows, _config

from textrl import make_dataset
from textrl.trainer import Trainer


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Subprocess environment sharing this session's dataset folder (the dataset is built once here)."""
    make_dataset("textrl/randomwalks/mixed-v1", num_episodes=64, progress=False)
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parents[1])}


def _steps_logged(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip() and "loss" in line]


def test_sigkill_mid_training_then_resume_is_bit_exact(env, tmp_path) -> None:
    """The uninterrupted run and the victim run side by side (2 cores: the launches overlap)."""
    steps = 20
    straight = train_tiny(env, str(tmp_path / "straight"), str(steps))
    victim = train_tiny(env, str(tmp_path / "killed"), str(steps))
    deadline = time.time() + 300
    while time.time() < deadline and max(_steps_logged(tmp_path / "killed" / "run"), default=0) < 9:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert not (tmp_path / "killed" / "final.pt").exists(), "the run finished before it could be killed"
    finish(train_tiny(env, str(tmp_path / "killed"), str(steps), "resume"))
    finish(straight)
    straight = torch.load(tmp_path / "straight" / "final.pt")
    resumed = torch.load(tmp_path / "killed" / "final.pt")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert _steps_logged(tmp_path / "killed" / "run") == list(range(1, steps + 1))  # replayed steps logged once


def test_a_live_process_holds_the_run_folder_and_a_killed_one_does_not(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from textrl.runs import RunLock; "
         f"RunLock(Path({str(run)!r})).acquire(); print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match=f"another process .pid {holder.pid}. is training into {run}"):
            Trainer(Regressor(), Rows(), _config(tmp_path, total_steps=3)).train()
    finally:
        holder.kill()
        holder.wait()
    assert (run / ".lock").read_text().strip() == str(holder.pid)  # the dead owner's lock file is left
    Trainer(Regressor(), Rows(), _config(tmp_path, total_steps=3)).train()  # and taken over
    assert (run / "step_000003").is_dir() and not (run / ".lock").exists()


@needs_launcher
def test_two_process_ddp_matches_one_process(env, tmp_path) -> None:
    steps = 6
    one = train_tiny(env, str(tmp_path / "one"), str(steps))
    two = train_tiny(env, str(tmp_path / "two"), str(steps), processes=2)
    finish(one)
    finish(two)
    assert (tmp_path / "two" / "processes.txt").read_text() == "2"  # `--cpu` would have started one
    one, two = torch.load(tmp_path / "one" / "final.pt"), torch.load(tmp_path / "two" / "final.pt")
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=1e-3, atol=1e-4)
    records = [json.loads(line) for line in (tmp_path / "two" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, steps + 1))  # rank 0 alone logs
    evals = [r for r in records if "eval/score" in r]
    assert len(evals) == 1 and evals[0]["eval/episodes"] == 8  # 4 episodes from each of the 2 ranks
    assert sorted(p.name for p in (tmp_path / "two" / "run").glob("step_*")) == ["step_000002", "step_000004",
                                                                                  "step_000006"]
