"""`textrl fit CONFIG DATASET [--set k=v]` and `textrl generate AGENT PROMPT...`, and their entry points."""

import argparse
import sys
from pathlib import Path

import pytest

from agents.commands import add_fit_command, add_generate_command
from textrl import make_dataset, save_yaml, task_config

ROOT = Path(__file__).resolve().parents[1]


def run(*argv: str) -> int:
    """The two commands as the `textrl` CLI runs them (the installed entry points may predate them)."""
    parser = argparse.ArgumentParser(prog="textrl")
    sub = parser.add_subparsers()
    add_fit_command(sub)
    add_generate_command(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_the_commands_are_declared_as_entry_points() -> None:
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["textrl.commands"]
    assert declared["fit"] == "agents.commands:add_fit_command"
    assert declared["generate"] == "agents.commands:add_generate_command"


def test_fit_trains_saves_and_resumes_and_generate_writes_with_the_saved_agent(tmp_path, capsys) -> None:
    make_dataset("textrl/randomwalks/random-v1", num_episodes=64, progress=False)
    config = task_config("randomwalks", "bc", batch_size=16, total_steps=4, eval_interval=4, checkpoint_interval=2,
                         eval_episodes=8, progress_bar=False, checkpoint_dir=str(tmp_path / "run"))
    save_yaml(config, tmp_path / "bc.yaml")
    assert run("fit", str(tmp_path / "bc.yaml"), "textrl/randomwalks/random-n64-v1", "--set", "train.total_steps=2") == 0
    out = capsys.readouterr().out
    saved = tmp_path / "run" / "final"
    assert f"saved the trained agent to {saved}" in out and (saved / "agent.json").is_file()
    assert (tmp_path / "run" / "step_000002").is_dir() and not (tmp_path / "run" / "step_000004").exists()
    assert run("fit", str(tmp_path / "bc.yaml"), "textrl/randomwalks/random-n64-v1", "--resume") == 0
    assert (tmp_path / "run" / "step_000004").is_dir()
    capsys.readouterr()
    assert run("generate", str(saved), "1", "5", "--num", "2", "--temperature", "0") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[0] == lines[1]  # greedy: the same text twice for one prompt


def test_bad_set_values_are_named(tmp_path) -> None:
    save_yaml(task_config("randomwalks", "bc"), tmp_path / "bc.yaml")
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        run("fit", str(tmp_path / "bc.yaml"), "x/y-v0", "--set", "train.total_steps")
    with pytest.raises(Exception, match="unknown config key 'train.total_stepz'"):
        run("fit", str(tmp_path / "bc.yaml"), "x/y-v0", "--set", "train.total_stepz=3")


def test_help_does_not_import_torch() -> None:
    import subprocess

    code = ("import sys\nfrom textrl.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
