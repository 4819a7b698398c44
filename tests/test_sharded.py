"""ILQL under FSDP (train.fsdp) on 2 CPU processes: the losses of 1 process, target heads that follow the
Polyak average of the sharded online heads, SIGKILL then resume from sharded checkpoints, and a saved
agent that plain transformers opens in one process."""

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import psutil
import pytest
import torch
from launching import finish, needs_launcher, train_tiny

from agents import ILQLAgent
from textrl import make_dataset

pytestmark = needs_launcher

STEPS = 20


def _records(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _losses(out: Path) -> list[float]:
    return [r["loss"] for r in _records(out / "run") if "loss" in r]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process unsharded, 2 processes sharded for STEPS steps, and a sharded run killed with SIGKILL
    mid-training then resumed (the last two run side by side, the kill once the victim passed step 9)."""
    make_dataset("textrl/randomwalks/mixed-v1", num_episodes=64, progress=False)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    root = tmp_path_factory.mktemp("sharded")
    started = time.perf_counter()
    one = train_tiny(env, str(root / "one"), str(STEPS), "--check-sync")
    two = train_tiny(env, str(root / "two"), str(STEPS), "--fsdp", "--check-sync", processes=2)
    finish(one)
    victim = train_tiny(env, str(root / "killed"), str(STEPS), "--fsdp", processes=2)
    deadline = time.time() + 300
    while time.time() < deadline and len(_losses(root / "killed")) < 9 and victim.poll() is None:
        time.sleep(0.05)
    for process in psutil.Process(victim.pid).children(recursive=True):  # torchrun's workers: a session
        process.send_signal(signal.SIGKILL)                              # of their own, so one by one
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    finish(two)
    killed_at = len(_losses(root / "killed"))
    resumed = train_tiny(env, str(root / "killed"), str(STEPS), "resume", "--fsdp", processes=2)
    finish(resumed)
    print(f"sharded runs: {time.perf_counter() - started:.0f} s")
    return root, killed_at


def test_two_sharded_processes_give_the_losses_of_one(runs) -> None:
    root, _ = runs
    assert (root / "two" / "processes.txt").read_text() == "2"
    one, two = _losses(root / "one"), _losses(root / "two")
    assert len(one) == len(two) == STEPS
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), rtol=1e-4, atol=1e-5)
    a, b = torch.load(root / "one" / "final.pt"), torch.load(root / "two" / "final.pt")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4)


def test_target_heads_follow_the_polyak_average_of_the_sharded_online_heads(runs) -> None:
    root, _ = runs
    records = json.loads((root / "two" / "sync.json").read_text())
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert all(r["sharded"] for r in records)  # FSDP really ran: the parameters were DTensor shards
    synced = [r for r in records if r["synced"]]
    assert [r["step"] for r in synced] == [5, 10, 15, 20]
    for r in synced:  # targets that never move (trlx under ZeRO-3) fail here
        assert r["moved"] > 1e-5, r
        assert r["error"] < 1e-6, r
    assert all(r["moved"] == 0.0 for r in records if not r["synced"])


def test_sigkill_then_resume_from_sharded_checkpoints_ends_like_the_uninterrupted_run(runs) -> None:
    root, killed_at = runs
    assert 9 <= killed_at < STEPS, "the victim was not killed mid-training"
    assert (root / "killed" / "run" / f"step_{STEPS:06d}" / "shard_00001.safetensors").is_file()
    straight, resumed = torch.load(root / "two" / "final.pt"), torch.load(root / "killed" / "final.pt")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert [r["step"] for r in _records(root / "killed" / "run") if "loss" in r] == list(range(1, STEPS + 1))


def test_the_sharded_run_saves_an_agent_that_plain_transformers_opens(runs) -> None:
    from transformers import AutoModelForCausalLM

    root, _ = runs
    trained = torch.load(root / "two" / "final.pt")
    backbone = AutoModelForCausalLM.from_pretrained(str(root / "two" / "agent" / "model"))
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, trained[f"backbone.{key}"]), key
    agent = ILQLAgent.load(root / "two" / "agent")
    for key, value in agent.model.state_dict().items():
        assert torch.equal(value, trained[key]), key
    assert not any(p.requires_grad for p in agent.model.heads.target_q_heads.parameters())


def test_a_sharded_checkpoint_does_not_resume_unsharded(runs, tmp_path) -> None:
    root, _ = runs
    agent = ILQLAgent(ILQLAgent.load(root / "killed" / "agent").config.evolve(
        train=dict(fsdp=False, checkpoint_dir=str(tmp_path / "run"), total_steps=STEPS + 2,
                   resume_from_checkpoint=str(root / "killed" / "run"))))
    with pytest.raises(ValueError, match="written by 2 sharded processes and this run is unsharded"):
        agent.fit(make_dataset("textrl/randomwalks/mixed-v1", num_episodes=64, progress=False))


def test_a_shard_file_with_a_wrong_optimizer_tensor_is_refused_before_use(runs, tmp_path) -> None:
    """A process's shard file is checked against its live shards like an unsharded checkpoint (a moment of
    the wrong shape would otherwise reach the fused optimizer step)."""
    from textrl.io import write_manifest
    from textrl.safe_state import load_state, save_state

    root, _ = runs
    shutil.copytree(root / "killed" / "run", tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))
    step = tmp_path / "run" / f"step_{STEPS:06d}"
    files = step / "shard_00001.json", step / "shard_00001.safetensors"
    state = load_state(*files)
    entry = next(e for e in state["optimizer"]["state"].values() if e["exp_avg"].numel() > 1)
    entry["exp_avg"] = entry["exp_avg"].flatten()[:1].clone()
    save_state(state, *files)
    (step / "manifest.json").unlink()
    write_manifest(step)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    process = train_tiny(env, str(tmp_path), str(STEPS + 2), "resume", "--fsdp", processes=2)
    process.wait(timeout=600)
    log = Path(f"{tmp_path}.log").read_text(errors="replace")
    assert process.returncode != 0
    assert re.search(rf"{files[1]} holds optimizer state \d+\.exp_avg of \(1,\) torch.float32, where its "
                     r"parameter is \(\d+(, \d+)*\) torch.float32", log), log[-3000:]
