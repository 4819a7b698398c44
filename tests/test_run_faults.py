"""Faults an attacker or an accident can plant in a run folder, a checkpoint or a saved agent (issue 23):
links, paths out of the folder, crafted state, full disks. Each is refused with a message, nothing is lost."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
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


def _craft(tmp_path, change) -> Path:
    """A checkpoint at step 3 whose state `change` edits, saved again with a matching manifest."""
    from textrl.io import write_manifest
    from textrl.safe_state import load_state, save_state

    _train(tmp_path)
    step = tmp_path / "run" / "step_000003"
    state = load_state(step / "trainer_state.json", step / "trainer_state.safetensors")
    change(state)
    save_state(state, step / "trainer_state.json", step / "trainer_state.safetensors")
    (step / "manifest.json").unlink()
    write_manifest(step)
    return step


def _set(key, value):
    def change(state):
        state[key] = value
    return change


def _one_element_moments(state):
    for entry in state["optimizer"]["state"].values():
        entry["exp_avg"] = entry["exp_avg"].flatten()[:1].clone()
        entry["exp_avg_sq"] = entry["exp_avg_sq"].flatten()[:1].clone()


def _half_model(state):
    state["model"] = {k: v.half() for k, v in state["model"].items()}


@pytest.mark.parametrize("change,message", [
    (_one_element_moments, r"optimizer state 0.exp_avg of \(1,\) torch.float32, where its parameter is \(8, 3\)"),
    (_set("step", -5), "step -5, not a count of optimizer steps"),
    (_set("step", float("nan")), "step nan, not a count of optimizer steps"),
    (_set("step", 5), "step 5 in a folder named step_000003"),
    (_set("best", float("nan")), "best metric nan"),
    (_half_model, r"model tensor 0.weight of \(8, 3\) torch.float16, where this run has \(8, 3\) torch.float32"),
    (_set("identity", None), "no run identity"),
    (_set("identity", {"agent": "Regressor"}), "an identity whose model shapes are not lists"),
])
def test_a_crafted_trainer_state_with_a_matching_manifest_is_refused(tmp_path, change, message) -> None:
    _craft(tmp_path, change)
    with pytest.raises(DamagedFileError, match=message):
        _train(tmp_path, resume_from_checkpoint=str(tmp_path / "run"), total_steps=6)


def test_a_crafted_state_without_identity_and_no_manifest_is_refused(tmp_path) -> None:
    step = _craft(tmp_path, _set("identity", None))
    (step / "manifest.json").unlink()
    (tmp_path / "run" / "run.json").unlink()
    with pytest.raises(DamagedFileError, match="no run identity"):
        _train(tmp_path, resume_from_checkpoint=str(tmp_path / "run"), total_steps=6)


def test_a_run_json_with_hostile_values_is_named(tmp_path) -> None:
    _train(tmp_path)
    run_json = tmp_path / "run" / "run.json"
    identity = json.loads(run_json.read_text())
    run_json.write_text(json.dumps({**identity, "agent": 5}))
    with pytest.raises(DamagedFileError, match=r"run.json holds an identity whose agent type is 5"):
        _train(tmp_path, resume_from_checkpoint=str(tmp_path / "run"), total_steps=6)


def _plant_custom_code(folder: Path, config: str, marker: Path) -> None:
    """Give a saved folder an `auto_map` to code that would leave `marker` behind if it ran."""
    settings = json.loads((folder / config).read_text())
    settings["auto_map"] = {"AutoTokenizer": ["evil.Evil", "evil.Evil"], "AutoConfig": "evil.Evil",
                            "AutoModelForCausalLM": "evil.Evil"}
    (folder / config).write_text(json.dumps(settings))
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                    "from transformers import PreTrainedTokenizerFast as Evil\n")


@pytest.mark.parametrize("where", ["tokenizer", "model"])
def test_a_saved_agent_that_ships_code_never_prompts_nor_runs_it(tmp_path, where, monkeypatch, capsys) -> None:
    import io

    from bad_checkpoints import _trained

    from agents import BCAgent
    from textrl.io import write_manifest

    saved = tmp_path / "saved"
    shutil.copytree(_trained() / "saved", saved)
    _plant_custom_code(saved / where, "tokenizer_config.json" if where == "tokenizer" else "config.json",
                       tmp_path / "ran")
    for folder in (saved / where, saved):
        if (folder / "manifest.json").exists():
            (folder / "manifest.json").unlink()
            write_manifest(folder)
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n" * 4))  # a user who answers yes to any prompt
    with pytest.raises(ValueError, match=r"names its own Python code .*never runs code shipped with a model"):
        BCAgent.load(saved)
    assert "Do you wish to run the custom code" not in capsys.readouterr().out
    assert not (tmp_path / "ran").exists()


def test_textrl_data_show_never_runs_code_a_dataset_tokenizer_ships(tmp_path, monkeypatch, capsys) -> None:
    import io

    from textrl.cli import main
    from textrl.data import make_dataset
    from textrl.data.store import folder_of

    def show():
        dataset = make_dataset("textrl/randomwalks/mixed-v1", num_episodes=40, progress=False)
        _plant_custom_code(folder_of(dataset) / "tokenizer", "tokenizer_config.json", tmp_path / "ran")
        shutil.rmtree(folder_of(dataset) / "packed")  # packed again from the hdf5 file: its tokenizer is read
        monkeypatch.setattr("sys.stdin", io.StringIO("y\n" * 4))
        return main(["data", "show", str(folder_of(dataset))])

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    assert show() != 0
    out = capsys.readouterr()
    assert "names its own Python code" in out.err and "never runs code" in out.err
    assert "Do you wish" not in out.out and not (tmp_path / "ran").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MiB filesystem (tmpfs), so a full disk is the kernel's ENOSPC, not a simulated error."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or 'mount failed'}): the test needs "
                    "root or CAP_SYS_ADMIN")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


class _Wide(Regressor):
    """A learner whose trainer state is about 0.8 MB (safetensors) while its own save is a few bytes."""

    def __init__(self, fill=None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(3, 256), torch.nn.Linear(256, 256), torch.nn.Linear(256, 1))
        self.fill = fill

    def after_optimizer_step(self, model, step):
        if step == 6 and self.fill is not None:
            self.fill()

    def save_pretrained(self, directory):
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "weights.txt").write_text("small")


def test_a_really_full_disk_while_checkpointing_is_named_and_the_last_checkpoint_kept(small_disk) -> None:
    def fill():  # leave about 100 KB: room for a log line and the learner's files, not for the trainer state
        free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        (small_disk / "ballast").write_bytes(b"\0" * (free - 100_000))

    cfg = _config(small_disk, total_steps=6, checkpoint_interval=3)
    with pytest.raises(OSError, match=r"the disk is full: cannot write .*step_000006 .in train.checkpoint_dir .*; "
                                      r"the last good checkpoint .*step_000003 is intact") as err:
        Trainer(_Wide(fill), Rows(), cfg).train()
    assert "SafetensorError" in type(err.value.__cause__).__name__  # safetensors' own error, turned into this one
    run = small_disk / "run"
    assert sorted(os.listdir(run)) == ["metrics.jsonl", "run.json", "step_000003"]  # no partial step_000006
    (small_disk / "ballast").unlink()
    resumed = Trainer(_Wide(), Rows(), _config(small_disk, total_steps=6, checkpoint_interval=3,
                                               resume_from_checkpoint=str(run))).train()
    assert [r["step"] for r in resumed if "loss" in r] == [4, 5, 6]


def _words_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<eos>", "a", "b"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")


def _gpt2(tok, positions):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=len(tok), n_positions=positions, n_layer=1, n_embd=16, n_head=2,
                      bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def test_samples_longer_than_the_models_positions_are_refused_before_anything_is_written(tmp_path, monkeypatch) -> None:
    from agents import BCAgent
    from textrl import default_config, from_samples

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    tok = _words_tokenizer()
    dataset = from_samples([" ".join(["a", "b"] * 16)] * 8, [1.0] * 8, tok, "mine/long-v0")  # 34 tokens each
    run = tmp_path / "run"

    def config(positions, seq_length):
        return default_config("bc").evolve(
            model=dict(model_path=_gpt2(tok, positions)), tokenizer=dict(tokenizer_path=None),
            train=dict(seq_length=seq_length, batch_size=4, total_steps=2, progress_bar=False,
                       checkpoint_dir=str(run), eval_interval=100))

    with pytest.raises(ValueError, match="the dataset's episodes are up to 34 tokens but the model has 16 positions"):
        BCAgent(config(16, 64)).fit(dataset, rollout_eval=False)
    with pytest.raises(ValueError, match="train.seq_length = 64 is more than the model's 40 positions"):
        BCAgent(config(40, 64)).fit(dataset, rollout_eval=False)
    assert not (run / "run.json").exists()
    assert BCAgent(config(64, 64)).fit(dataset, rollout_eval=False)[-1]["step"] == 2  # the corrected run


def test_a_run_that_fails_before_its_first_step_leaves_no_identity(tmp_path) -> None:
    class Broken(Regressor):
        def loss(self, model, batch):
            raise IndexError("index out of range in self")

    with pytest.raises(IndexError):
        Trainer(Broken(), Rows(), _config(tmp_path, total_steps=3)).train()
    assert not (tmp_path / "run" / "run.json").exists()
    wider = Regressor()
    wider.model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Linear(16, 1))  # another model shape
    assert Trainer(wider, Rows(), _config(tmp_path, total_steps=3)).train()[-1]["step"] == 3


@pytest.mark.parametrize("other", ["textrl/Brackets-v0", "textrl/Wordle-v0", "textrl/Maze-v1"])
def test_a_randomwalks_agent_refuses_observations_of_other_tasks(other) -> None:
    import gymnasium
    from bad_checkpoints import _trained

    from agents import BCAgent

    agent = BCAgent.load(_trained() / "saved")  # trained on RandomWalks data, then saved and loaded
    assert agent.env_id == "textrl/RandomWalks-v1"
    with pytest.raises(ValueError, match="observation of another task's env|vocabulary has"):
        agent.act(gymnasium.make(other).reset(seed=0)[0])
    env = gymnasium.make("textrl/RandomWalks-v1")
    obs = env.reset(seed=0)[0]
    assert 0 <= agent.act(obs, env=env) < len(agent.tokenizer)
    with pytest.raises(ValueError, match="trained on data of textrl/RandomWalks-v1, not textrl/Brackets-v0"):
        agent.act(obs, env="textrl/Brackets-v0")
