"""Every bad input documented in README.md's table raises an error whose message contains the documented text.

The table is the contract: a row without a case here, or a case whose message drifted, fails.
"""

import contextlib
import io
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import bad_checkpoints
import gymnasium
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import textrl
from agents import BCAgent, ILQLAgent
from textrl import (
    PackedDataset,
    default_config,
    default_ilql_config,
    from_samples,
    load,
    load_yaml,
    make_dataset,
    task_config,
)
from textrl.cli import main
from textrl.config import ModelConfig, TokenizerConfig
from textrl.data import pack
from textrl.data.store import datasets_root, folder_of
from textrl.models import load_backbone, load_tokenizer_from_path
from textrl.tasks import get_task

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
SMALL = "textrl/randomwalks/mixed-v1"


def _tok(words=("a", "b")) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<pad>", "<eos>", *words])}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")


def _small():
    return make_dataset(SMALL, num_episodes=200, progress=False)


def _cfg(tmp, **train):
    base = dict(total_steps=2, batch_size=16, progress_bar=False, checkpoint_dir=str(tmp / "run"), eval_interval=100)
    return task_config("randomwalks", "bc", **{**base, **train})


def _fitted(tmp):
    agent = BCAgent(_cfg(tmp))
    agent.fit(_small())
    return agent


def _yaml(tmp):
    (tmp / "c.yaml").write_text("train: [unclosed\n")
    load_yaml(tmp / "c.yaml")


def _corrupt(tmp):
    ds = from_samples(["a b", "a a"], [1.0, 0.0], _tok(), "bad/corrupt-v0")
    path = next(Path(ds.storage.data_path).glob("*.hdf5"))
    path.write_bytes(path.read_bytes()[:200])
    textrl.pack("bad/corrupt-v0")


def _foreign_checkpoint(tmp):
    agent = ILQLAgent(task_config("randomwalks", "ilql", total_steps=2, batch_size=16, progress_bar=False,
                                  checkpoint_dir=str(tmp / "run"), eval_interval=100))
    agent.fit(_small())
    agent.save(tmp / "ilql")
    BCAgent.load(tmp / "ilql")


def _env_step(action):
    def run(tmp):
        env = gymnasium.make("textrl/RandomWalks-v1")
        env.reset(seed=0)
        env.step(action)
    return run


def _step_after_end(tmp):
    env = gymnasium.make("textrl/RandomWalks-v1")
    env.reset(seed=0)
    env.step(0)  # the pad token: an invalid move, the episode terminates
    env.step(3)


def _with_root(tmp, call):
    """Run `call` with a datasets root of its own, so the case leaves nothing in the module's root."""
    previous = os.environ["MINARI_DATASETS_PATH"]
    os.environ["MINARI_DATASETS_PATH"] = str(tmp / "datasets")
    try:
        return call()
    finally:
        os.environ["MINARI_DATASETS_PATH"] = previous


def _small_build_under_the_standard_id(tmp):
    def run():
        small = make_dataset("textrl/maze/expert-v1", num_episodes=3, progress=False)
        standard = datasets_root() / "textrl/maze/expert-v1"
        folder_of(small).rename(standard)  # as an older textrl stored a small build under the plain id
        make_dataset("textrl/maze/expert-v1", progress=False)
    _with_root(tmp, run)


def _on_a_small_disk(tmp, call):
    """Run `call` with the datasets root on a real 256 KiB tmpfs (mounting needs root; skipped otherwise)."""
    disk = tmp / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    previous = os.environ["MINARI_DATASETS_PATH"]
    os.environ["MINARI_DATASETS_PATH"] = str(disk)
    try:
        return call(disk)
    finally:
        os.environ["MINARI_DATASETS_PATH"] = previous
        subprocess.run(["umount", "-l", str(disk)], check=True)


def _build_on_a_full_disk(tmp):
    _on_a_small_disk(tmp, lambda disk: make_dataset("textrl/randomwalks/random-v1", progress=False))


def _pack_on_a_full_disk(tmp):
    def run(disk):
        ds = from_samples(["a b"] * 20, [1.0, 0.0] * 10, _tok(), "bad/full-v0")
        shutil.rmtree(folder_of(ds) / "packed")
        with contextlib.suppress(OSError), open(disk / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        pack(ds)
    _on_a_small_disk(tmp, run)


def _equal_rewards(tmp):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        from_samples(["a b", "b a"], [1.0, 1.0], _tok(), "bad/equal-v0")


def _damaged_cache(damage):
    def run(tmp):
        def build():
            ds = from_samples(["a b", "a a"], [1.0, 0.0], _tok(), "bad/cache-v0")
            pack(ds)
            cache = next((folder_of(ds) / "packed").glob("*/info.json")).parent
            tokens = next(p for p in (cache / "tensors").rglob("tokens*") if p.suffix != ".json")
            damage(tokens)
            PackedDataset.load(cache)
        _with_root(tmp, build)
    return run


def _rw_obs():
    env = gymnasium.make("textrl/RandomWalks-v1")
    return env.reset(seed=0)[0]


def _diverged(tmp):
    agent = _fitted(tmp)
    with torch.no_grad():
        for p in agent.model.parameters():
            p.fill_(float("nan"))
    agent.act(_rw_obs())


def _cli(*argv):
    def run(tmp):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main([*argv, "--out", str(tmp / "bench")])
        raise RuntimeError(f"exit {code}: {err.getvalue()}")
    return run


def _own_dataset(dataset_id: str, reward_fn=None) -> None:
    """A dataset of two samples; with `reward_fn`, its env registered (then forgotten, as in a fresh process)."""
    env_id = None
    if reward_fn is not None:
        env_id = "badinput/Text-v0"
        gymnasium.register(env_id, entry_point="textrl:TextEnv",
                           kwargs=dict(tokenizer=_tok(), prompts=[""], reward_fn=reward_fn, max_new_tokens=2))
    from_samples(["a", "b"], [1.0, 0.0], _tok(), dataset_id, env=env_id, overwrite=True, progress=False)
    gymnasium.registry.pop(env_id, None)


def _bench_own(dataset_id: str, reward_fn=None):
    def run(tmp):
        _own_dataset(dataset_id, reward_fn)
        _cli("bench", "--dataset", dataset_id, "--agents", "bc")(tmp)
    return run


CASES = {
    "unknown config key (top level)": lambda tmp: default_ilql_config().update({"trian": {}}),
    "unknown config key (nested)": lambda tmp: default_ilql_config().update({"method.gen_kwargs.max_tokens": 4}),
    "ill-typed config value": lambda tmp: default_ilql_config().update({"train.batch_size": "64"}),
    "negative learning rate": lambda tmp: default_ilql_config().update({"optimizer.kwargs.lr": -1e-4}),
    "tau outside (0, 1)": lambda tmp: default_ilql_config().update({"method.tau": 1.5}),
    "total_steps 0": lambda tmp: default_ilql_config().update({"train.total_steps": 0}),
    "Q head rank 0": lambda tmp: default_ilql_config().update({"model.q_head_rank": 0}),
    "unknown optimizer": lambda tmp: default_ilql_config().update({"optimizer.name": "adagrad_x"}),
    "YAML that does not parse": _yaml,
    "model path that does not exist": lambda tmp: load_backbone(ModelConfig(model_path=str(tmp / "nope"))),
    "tokenizer path that does not exist": lambda tmp: load_tokenizer_from_path(str(tmp / "nope"), TokenizerConfig()),
    "agent given another method's config": lambda tmp: ILQLAgent(default_config("bc")),
    "tokenizer vocabulary != dataset action space": lambda tmp: BCAgent(_cfg(tmp), tokenizer=_tok()).fit(_small()),
    "retired env id": lambda tmp: gymnasium.make("textrl/Maze-v0"),
    "malformed dataset id": lambda tmp: load("randomwalks-v0"),
    "absent dataset id": lambda tmp: load("textrl/nothing/here-v0"),
    "unknown dataset tier": lambda tmp: make_dataset("textrl/randomwalks/superb-v1"),
    "truncated or corrupted dataset file": _corrupt,
    "samples/rewards length mismatch": lambda tmp: from_samples(["a b"], [1.0, 2.0], _tok(), "bad/len-v0"),
    "NaN or infinite reward": lambda tmp: from_samples(["a b"], [float("nan")], _tok(), "bad/nan-v0"),
    "reward given as a string or a bool": lambda tmp: from_samples(["a b", "b"], [1.0, "2.5"], _tok(), "bad/str-v0"),
    "reference scores that are equal or crossed": lambda tmp: from_samples(
        ["a b"], [1.0], _tok(), "bad/refs-v0", ref_min_score=2.0, ref_max_score=2.0),
    "all rewards equal (a warning)": _equal_rewards,
    "text containing a NUL character": lambda tmp: from_samples(["a x\0y"], [1.0], _tok(("a", "x\0y")), "bad/nul-v0"),
    "dataset id with a dot or a trailing newline": lambda tmp: from_samples(["a b"], [1.0], _tok(), "ns/ok.name-v0"),
    "disk full while writing a dataset": _build_on_a_full_disk,
    "disk full while writing the packed cache": _pack_on_a_full_disk,
    "empty samples": lambda tmp: from_samples([], [], _tok(), "bad/empty-v0"),
    "sample longer than max_length": lambda tmp: from_samples(["a b a"], [1.0], _tok(), "bad/long-v0", max_length=2),
    "episodes longer than train.seq_length": lambda tmp: BCAgent(_cfg(tmp, seq_length=4)).fit(_small()),
    "batch_size larger than the dataset": lambda tmp: BCAgent(_cfg(tmp, batch_size=512)).fit(_small()),
    "env action out of range": _env_step(99),
    "env action of the wrong type": _env_step(3.0),
    "env action of the wrong shape": _env_step(np.array([3, 4])),
    "step after the episode ended": _step_after_end,
    "prompt with an unknown token": lambda tmp: gymnasium.make("textrl/Maze-v1").reset(options={"prompt": "goal xyz"}),
    "unknown task": lambda tmp: get_task("chess"),
    "act on an observation of the wrong shape": lambda tmp: _fitted(tmp).act(
        {"input_ids": np.zeros((2, 3, 4), np.uint8), "length": np.array([1, 1])}),
    "load from a folder that is not a checkpoint": lambda tmp: BCAgent.load(tmp),
    "checkpoint of another agent type": _foreign_checkpoint,
    "resume from a folder without checkpoints": lambda tmp: BCAgent(
        _cfg(tmp, resume_from_checkpoint=str(tmp))).fit(_small()),
    "fresh run into another run's checkpoint_dir": bad_checkpoints.fresh_run_into_another_run,
    "fresh run into a folder of checkpoints without run.json": bad_checkpoints.fresh_run_into_unknown_checkpoints,
    "resume on other data": bad_checkpoints.resume_on_other_data,
    "resume with another model shape": bad_checkpoints.resume_with_other_model,
    "resume with another agent type": bad_checkpoints.resume_with_other_agent,
    "second process on one checkpoint_dir": bad_checkpoints.second_process,
    "resume with a changed learning rate (a warning)": bad_checkpoints.resume_with_changed_lr,
    "resume when total_steps is already reached (a warning)": bad_checkpoints.resume_after_the_end,
    "checkpoint file altered after saving": bad_checkpoints.damaged_checkpoint,
    "truncated checkpoint state, no manifest": bad_checkpoints.truncated_checkpoint_json,
    "checkpoint holding a pickle (trainer_state.pt)": bad_checkpoints.pickled_checkpoint,
    "saved agent with truncated weights": bad_checkpoints.damaged_saved_agent("model/model.safetensors"),
    "saved agent with an emptied config.yaml": bad_checkpoints.damaged_saved_agent("config.yaml", "empty"),
    "saved config.yaml missing sections, no manifest": bad_checkpoints.config_without_sections,
    "truncated agent.json, no manifest": bad_checkpoints.damaged_saved_agent("agent.json", manifest=False),
    "truncated tokenizer.json, no manifest": bad_checkpoints.damaged_saved_agent("tokenizer/tokenizer.json", manifest=False),
    "truncated model weights, no manifest": bad_checkpoints.damaged_saved_agent("model/model.safetensors", manifest=False),
    "saved model without value_heads.json": bad_checkpoints.heads_without_settings,
    "a file where train.checkpoint_dir should be": bad_checkpoints.file_as_checkpoint_dir,
    "disk full while checkpointing": bad_checkpoints.disk_full,
    "Ctrl-C during fit": bad_checkpoints.ctrl_c,
    "fresh run over this run's own checkpoints (a warning)": bad_checkpoints.fresh_run_into_own_checkpoints,
    "dataset id that climbs out of the datasets root": lambda tmp: load("../../../escape/x-v0"),
    "absolute path as a dataset id": lambda tmp: textrl.pack("/no/such/folder/x-v0"),
    "backslashes in a dataset id": lambda tmp: load("textrl\\randomwalks\\random-v1"),
    "standard id already built with another size": _small_build_under_the_standard_id,
    "size in the id and num_episodes disagree": lambda tmp: make_dataset("textrl/randomwalks/random-n20-v1",
                                                                         num_episodes=25),
    "negative dataset seed": lambda tmp: make_dataset("textrl/randomwalks/random-v1", seed=-1),
    "packed cache file garbled": _damaged_cache(lambda f: f.write_bytes(bytes([255]) * f.stat().st_size)),
    "packed cache file truncated or emptied": _damaged_cache(lambda f: f.write_bytes(b"")),
    "generate with an empty prompt": lambda tmp: _fitted(tmp).generate([""]),
    "generate with words outside the vocabulary": lambda tmp: _fitted(tmp).generate(["2 xyz"]),
    "generate with a prompt that fills the model's positions": lambda tmp: _fitted(tmp).generate(["2 " * 10]),
    "generate with a prompt that is not a string": lambda tmp: _fitted(tmp).generate([3]),
    "act on an observation of another task": lambda tmp: _fitted(tmp).act(
        gymnasium.make("textrl/Maze-v1").reset(seed=0)[0]),
    "temperature that underflows": lambda tmp: default_ilql_config().update({"method.gen_kwargs.temperature": 1e-45}),
    "weights that diverged, at act or eval": _diverged,
    "scheduler kwarg of the wrong type": lambda tmp: default_ilql_config().update({"scheduler.kwargs.T_max": "ten"}),
    "scheduler kwarg out of range": lambda tmp: default_ilql_config().update({"scheduler.kwargs.T_max": 0}),
    "unknown scheduler kwarg": lambda tmp: default_ilql_config().update({"scheduler.kwargs": {"T_maxx": 10}}),
    "bench --seeds 0": _cli("bench", "--seeds", "0"),
    "bench with negative seeds": _cli("bench", "--seeds", "-1"),
    "bench --steps 0": _cli("bench", "--steps", "0"),
    "bench with an unknown agent": _cli("bench", "--agents", "bc,nope"),
    "bench with an unknown task": _cli("bench", "--tasks", "chess"),
    "bench --jobs 0": _cli("bench", "--jobs", "0"),
    "bench --report on a folder that holds no benchmark": _cli("bench", "--report"),
    "bench --report before any cell has all its runs": lambda tmp: (tmp / "bench" / "runs").mkdir(parents=True) or _cli(
        "bench", "--tasks", "maze", "--report")(tmp),
    "bench with a tier no chosen task is benchmarked on": _cli("bench", "--tasks", "maze", "--tiers", "expert"),
    "bench --dataset that is not a local dataset": _cli("bench", "--dataset", "badinput/missing-v0"),
    "bench --dataset made without env=": _bench_own("badinput/noenv-v0"),
    "bench --dataset whose reward function cannot be imported (a lambda, or a script's `__main__`)": _bench_own(
        "badinput/lambda-v0", lambda prompt, completion: 1.0),
    "a symbolic link planted in a run folder (`.lock`, `metrics.jsonl`)": bad_checkpoints.linked_lock,
    "manifest naming a file outside its folder": bad_checkpoints.manifest_out_of_folder,
    "symbolic link inside a checkpoint or saved agent": bad_checkpoints.link_in_checkpoint,
    "crafted optimizer state of the wrong shape, manifest rewritten": bad_checkpoints.crafted("moments"),
    "checkpoint step that is negative or not an integer": bad_checkpoints.crafted("step"),
    "checkpoint whose best metric is NaN": bad_checkpoints.crafted("best"),
    "checkpoint without a run identity": bad_checkpoints.crafted("identity"),
    "saved agent or tokenizer that ships its own code (auto_map)": bad_checkpoints.custom_code,
    "samples longer than the model's positions": bad_checkpoints.longer_than_positions,
    "act on an observation wider than the agent's env": lambda tmp: _fitted(tmp).act(
        gymnasium.make("textrl/Wordle-v0").reset(seed=0)[0]),
    "act naming another env than the agent's data": lambda tmp: _fitted(tmp).act(_rw_obs(), env="textrl/Brackets-v0"),
    "second bench into one --out": bad_checkpoints.second_bench,
    "damaged stored bench run (runs/*.json)": bad_checkpoints.damaged_bench_run,
}


def documented() -> list[tuple[str, str]]:
    """(case, message excerpt) rows of README's bad-input table."""
    section = README.split("### Bad input and the errors it gets", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (.+?) \| `(.+?)` \|$", section, flags=re.M)
    return [(case, excerpt) for case, excerpt in rows if case != "input"]


def test_the_table_covers_every_case_and_at_least_25() -> None:
    cases = [case for case, _ in documented()]
    assert len(cases) >= 25 and sorted(cases) == sorted(CASES)


@pytest.mark.parametrize("case,excerpt", documented())
def test_documented_message(case: str, excerpt: str, tmp_path) -> None:
    with pytest.raises(Exception) as err:
        CASES[case](tmp_path)
    assert excerpt in str(err.value), f"{case}: {err.value}"
