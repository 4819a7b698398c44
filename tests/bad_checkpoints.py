"""Bad checkpoints, saved agents and run folders for tests/test_bad_input.py: each function takes a
temporary folder and raises the error README's table documents (warnings and Ctrl-C made errors)."""

import errno
import os
import shutil
import warnings
from pathlib import Path

import torch

from agents import BCAgent, ILQLAgent, MCReturnsAgent
from textrl import make_dataset, task_config
from textrl.models import ValueModel
from textrl.presets import tiny_model_config
from textrl.runs import RunLock, TrainingInterrupted
from textrl.tasks import get_task
from textrl.trainer import ResumeWarning

SMALL = "textrl/randomwalks/mixed-v1"


def _data():
    return make_dataset(SMALL, num_episodes=200, progress=False)


def _cfg(tmp, method="bc", **train):
    base = dict(total_steps=2, batch_size=16, progress_bar=False, checkpoint_dir=str(tmp / "run"), eval_interval=100)
    return task_config("randomwalks", method, **{**base, **train})


def _trained() -> Path:
    """A BC run folder (a checkpoint at step 2) and the saved agent, trained once per test module."""
    root = Path(os.environ["MINARI_DATASETS_PATH"]) / "_bc_run"
    if not (root / "saved" / "agent.json").is_file():
        agent = BCAgent(_cfg(root))
        agent.fit(_data())
        agent.save(root / "saved")
    return root


def _copy(tmp: Path, name: str) -> Path:
    shutil.copytree(_trained() / name, tmp / name)
    return tmp / name


def _resume(tmp: Path, method="bc", agent_cls=BCAgent, **train):
    _copy(tmp, "run")
    return agent_cls(_cfg(tmp, method, resume_from_checkpoint=str(tmp / "run"), **train)).fit(_data())


def fresh_run_into_another_run(tmp):
    _copy(tmp, "run")
    BCAgent(_cfg(tmp, seed=5)).fit(_data())


def fresh_run_into_unknown_checkpoints(tmp):
    (_copy(tmp, "run") / "run.json").unlink()
    BCAgent(_cfg(tmp)).fit(_data())


def resume_on_other_data(tmp):
    _resume(tmp, total_steps=4, reward_normalization="zscore")


def resume_with_other_model(tmp):
    tok = get_task("randomwalks").tokenizer
    _copy(tmp, "run")
    cfg = _cfg(tmp, resume_from_checkpoint=str(tmp / "run"), total_steps=4).evolve(
        model=dict(model_path=tiny_model_config(len(tok), 10, tok.pad_token_id, tok.eos_token_id, n_embd=64)))
    BCAgent(cfg).fit(_data())


def resume_with_other_agent(tmp):
    _resume(tmp, "mc_returns", MCReturnsAgent, total_steps=4)


def second_process(tmp):
    run = _copy(tmp, "run")
    lock = RunLock(run)
    lock.acquire()
    try:
        BCAgent(_cfg(tmp, resume_from_checkpoint=str(run), total_steps=4)).fit(_data())
    finally:
        lock.release()


def _warnings_as_errors(fn):
    def run(tmp):
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResumeWarning)
            fn(tmp)
    return run


def _changed_lr(tmp):
    _copy(tmp, "run")
    cfg = _cfg(tmp, resume_from_checkpoint=str(tmp / "run"), total_steps=4)
    BCAgent(cfg.evolve(optimizer=dict(kwargs=dict(lr=2e-3)))).fit(_data())


def _restart(tmp):
    _copy(tmp, "run")
    BCAgent(_cfg(tmp)).fit(_data())


resume_with_changed_lr = _warnings_as_errors(_changed_lr)
fresh_run_into_own_checkpoints = _warnings_as_errors(_restart)
resume_after_the_end = _warnings_as_errors(lambda tmp: _resume(tmp, total_steps=2))


def _step(tmp) -> Path:
    return _copy(tmp, "run") / "step_000002"


def damaged_checkpoint(tmp):
    path = _step(tmp) / "trainer_state.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    BCAgent(_cfg(tmp, resume_from_checkpoint=str(tmp / "run"), total_steps=4)).fit(_data())


def truncated_checkpoint_json(tmp):
    step = _step(tmp)
    (step / "manifest.json").unlink()
    _truncate(step / "trainer_state.json")
    BCAgent(_cfg(tmp, resume_from_checkpoint=str(tmp / "run"), total_steps=4)).fit(_data())


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def pickled_checkpoint(tmp):
    step = _step(tmp)
    for name in ("trainer_state.json", "trainer_state.safetensors", "manifest.json"):
        (step / name).unlink()
    torch.save({"step": _Payload(tmp / "pwned")}, step / "trainer_state.pt")
    try:
        BCAgent(_cfg(tmp, resume_from_checkpoint=str(tmp / "run"), total_steps=4)).fit(_data())
    finally:
        assert not (tmp / "pwned").exists(), "the pickle ran"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damaged_saved_agent(file: str, how: str = "truncate", manifest: bool = True):
    """Load a saved agent whose `file` is truncated or emptied, with or without its manifests."""
    def run(tmp):
        saved = _copy(tmp, "saved")
        if how == "empty":
            (saved / file).write_bytes(b"")
        else:
            _truncate(saved / file)
        if not manifest:
            (saved / "manifest.json").unlink()
            (saved / "model" / "manifest.json").unlink()
        BCAgent.load(saved)
    return run


def config_without_sections(tmp):
    saved = _copy(tmp, "saved")
    (saved / "manifest.json").unlink()
    (saved / "config.yaml").write_text("train:\n  seed: 1\n")
    BCAgent.load(saved)


def heads_without_settings(tmp):
    model = ILQLAgent(task_config("randomwalks", "ilql")).build_model(len(get_task("randomwalks").tokenizer))
    model.save_pretrained(tmp / "model")
    (tmp / "model" / "value_heads.json").unlink()
    ValueModel.from_pretrained(tmp / "model")


def file_as_checkpoint_dir(tmp):
    (tmp / "run").write_text("a file")
    BCAgent(_cfg(tmp)).fit(_data())


def disk_full(tmp):
    agent = BCAgent(_cfg(tmp))

    def full(directory):
        raise OSError(errno.ENOSPC, "No space left on device")

    agent.save_pretrained = full
    agent.fit(_data())


def ctrl_c(tmp):
    agent = BCAgent(_cfg(tmp, total_steps=3, checkpoint_interval=1))

    def interrupt(model, step):
        if step == 2:
            raise KeyboardInterrupt

    agent.after_optimizer_step = interrupt
    try:
        agent.fit(_data())
    except TrainingInterrupted as e:  # a KeyboardInterrupt, not an Exception: its message is the advice
        raise RuntimeError(str(e)) from None


# ---------------------------------------------------------------- issue 23: planted and crafted files


def _fault_tests():
    import test_bench_runs
    import test_run_faults
    return test_run_faults, test_bench_runs


def linked_lock(tmp):
    victim = tmp / "victim.txt"
    victim.write_text("precious")
    (tmp / "run").mkdir()
    (tmp / "run" / ".lock").symlink_to(victim)
    BCAgent(_cfg(tmp)).fit(_data())


def manifest_out_of_folder(tmp):
    import json

    from textrl.io import file_sha256
    step = _step(tmp)
    (tmp / "x").write_text("x")
    manifest = json.loads((step / "manifest.json").read_text())
    manifest["sha256"]["../../x"] = file_sha256(tmp / "x")
    (step / "manifest.json").write_text(json.dumps(manifest))
    BCAgent(_cfg(tmp, resume_from_checkpoint=str(tmp / "run"), total_steps=4)).fit(_data())


def link_in_checkpoint(tmp):
    step = _step(tmp)
    (tmp / "state.json").write_text((step / "trainer_state.json").read_text())
    (step / "trainer_state.json").unlink()
    (step / "trainer_state.json").symlink_to(tmp / "state.json")
    BCAgent(_cfg(tmp, resume_from_checkpoint=str(tmp / "run"), total_steps=4)).fit(_data())


def crafted(what):
    def run(tmp):
        faults = _fault_tests()[0]
        change = {"moments": faults._one_element_moments, "step": faults._set("step", -5),
                  "best": faults._set("best", float("nan")), "identity": faults._set("identity", None)}[what]
        faults._craft(tmp, change)
        faults._train(tmp, resume_from_checkpoint=str(tmp / "run"), total_steps=6)
    return run


def custom_code(tmp):
    from textrl.io import write_manifest
    saved = _copy(tmp, "saved")
    _fault_tests()[0]._plant_custom_code(saved / "tokenizer", "tokenizer_config.json", tmp / "ran")
    (saved / "manifest.json").unlink()
    write_manifest(saved)
    BCAgent.load(saved)


def longer_than_positions(tmp):
    from textrl import default_config, from_samples
    faults = _fault_tests()[0]
    tok = faults._words_tokenizer()
    dataset = from_samples([" ".join(["a", "b"] * 16)] * 8, [1.0] * 8, tok, "bad/positions-v0")
    config = default_config("bc").evolve(
        model=dict(model_path=faults._gpt2(tok, 16)), tokenizer=dict(tokenizer_path=None),
        train=dict(seq_length=64, batch_size=4, total_steps=2, progress_bar=False, checkpoint_dir=str(tmp / "run")))
    BCAgent(config).fit(dataset, rollout_eval=False)


def second_bench(tmp):
    from agents.benchmark import run_benchmark
    holder = RunLock(tmp)
    holder.acquire()
    try:
        run_benchmark(["bc"], ["randomwalks"], 1, tmp, total_steps=2, tiers=["mixed"], progress=False)
    finally:
        holder.release()


def damaged_bench_run(tmp):
    from agents.benchmark import run_benchmark
    (tmp / "runs").mkdir()
    (tmp / "runs" / "maze-mixed__bc__k0__s0__abc.json").write_text('{"task": "ma')
    run_benchmark(["bc"], ["randomwalks"], 1, tmp, total_steps=2, tiers=["mixed"], progress=False)
