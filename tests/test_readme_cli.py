"""The documented uses cannot drift: README's code runs, its commands exist, CI runs its test command."""

import os
import re
import shutil
import signal
import subprocess
import sysconfig
import time
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from textrl.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_python_examples_run(tmp_path, monkeypatch, built_dataset) -> None:
    monkeypatch.chdir(tmp_path)
    built_dataset("textrl/randomwalks/random-v1")  # the first example's dataset, built once per session
    core = Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1, "hi": 2, "there": 3}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    namespace = {  # what the import example assumes the user already has
        "samples": ["hi there", ["hi", "there there"]],
        "rewards": [1.0, 0.0],
        "tokenizer": PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>"),
    }
    blocks = _blocks("python")
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["history"] and namespace["terminated"] or namespace["truncated"]
    assert namespace["dataset"].total_episodes == 60  # the last block (your own text) imported its 60 samples


def test_quick_start_is_two_commands_and_ci_runs_the_test_one() -> None:
    quick = README.split("## Quick start", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(quick) == 2 and quick[0].startswith("pip install torch==2.13.0") and "textrl demo" in quick[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert quick[1] in ci.splitlines()


def test_cli_help_config_and_errors(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("config", "data", "bench", "demo"):
        assert command in out
    assert main(["config", "--method", "cql"]) == 0
    assert "name: cql" in capsys.readouterr().out
    assert main(["data", "show", "textrl/nothing/here-v0"]) == 2
    assert "no local dataset" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    script = shutil.which("textrl", path=sysconfig.get_path("scripts"))  # beside this interpreter, not elsewhere on PATH
    assert script is not None, f"no textrl console script in {sysconfig.get_path('scripts')}: pip install -e ."
    out = subprocess.run([script, "config"], capture_output=True, text=True, check=True)
    assert "tau: 0.7" in out.stdout


def test_bench_ctrl_c_prints_one_line_with_the_resume_command(tmp_path, monkeypatch, capsys) -> None:
    import agents.benchmark

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(agents.benchmark, "run_benchmark", interrupted)
    out = str(tmp_path / "b")
    assert main(["bench", "--tasks", "maze", "--agents", "bc,ilql", "--seeds", "2", "--steps", "6", "--out", out]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.endswith(f"run the same command: textrl bench --tasks maze --agents bc,ilql --seeds 2 --steps 6 "
                        f"--out {out}")


def test_sigterm_stops_a_bench_as_ctrl_c_does_and_the_handler_before_is_put_back(tmp_path, monkeypatch,
                                                                                  capsys) -> None:
    import agents.benchmark

    def killed(*args, **kwargs):  # `kill PID` or a job scheduler's preemption, while the benchmark trains
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        raise AssertionError("SIGTERM did not stop the benchmark")

    monkeypatch.setattr(agents.benchmark, "run_benchmark", killed)
    caught = []

    def guard(signum, frame):  # stands in for SIGTERM's default, which would end pytest
        caught.append(signum)

    before = signal.signal(signal.SIGTERM, guard)
    try:
        out = str(tmp_path / "b")
        assert main(["bench", "--tasks", "maze", "--seeds", "2", "--out", out]) == 130
        after = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert caught == [] and after is guard  # the command's own handler took it, then put the one before back
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.endswith(f"run the same command: textrl bench --tasks maze --seeds 2 --out {out}")


def test_bench_ctrl_c_in_a_run_prints_only_the_bench_resume_line(tmp_path, monkeypatch, capsys) -> None:
    """--jobs 1 trains in this process: the trainer's own advice (train.resume_from_checkpoint) is not
    how a bench resumes, so only the bench's line is printed."""
    from textrl.trainer import Trainer

    real_save = Trainer.save_checkpoint

    def save_then_interrupt(self):
        path = real_save(self)
        if self.state.step == 3:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_interrupt)
    out = str(tmp_path / "b")
    argv = ["bench", "--tasks", "randomwalks", "--tiers", "mixed", "--agents", "bc", "--seeds", "1", "--steps", "6",
            "--eval-interval", "3", "--val-episodes", "4", "--eval-episodes", "4", "--no-progress", "--out", out]
    assert main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.resume_from_checkpoint" not in err, err
    assert err.endswith(f"run the same command: textrl {' '.join(argv)}")


def test_bench_quick_fills_in_only_what_was_not_given() -> None:
    from agents.commands import _bench_settings
    from agents.protocol import QUICK
    from textrl.cli import build_parser

    def settings(*argv):
        args = build_parser().parse_args(["bench", *argv])
        return _bench_settings(args)  # every flag defaults to None: what was given is what is not None

    quick = settings("--quick")
    assert (quick["tasks"], quick["tiers"], quick["seeds"], quick["total_steps"]) == (
        QUICK["tasks"], QUICK["tiers"], QUICK["seeds"], QUICK["steps"])
    mine = settings("--quick", "--tasks", "brackets", "--seeds", "2")
    assert (mine["tasks"], mine["seeds"], mine["total_steps"]) == (["brackets"], 2, QUICK["steps"])
    full = settings()
    assert full["tiers"] is None and full["total_steps"] is None and full["seeds"] == 4 and full["jobs"] == 1


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0"], "seeds = 0: give at least one seed"),
    (["--seeds", "-2"], "seeds = -2: give at least one seed"),
    (["--steps", "0"], "--steps 0: the steps must be at least 1"),
    (["--eval-episodes", "0"], "--eval-episodes 0: the eval episodes must be at least 1"),
    (["--agents", "bc,nope"], "unknown agent 'nope'; choose from"),
    (["--jobs", "0"], "--jobs 0: give at least 1 worker process"),
    (["--tiers", "expert"], "tiers expert: none is benchmarked on these tasks"),
    (["--tasks", "randomwalks,chess"], "unknown task 'chess'; choose from"),
])
def test_bad_bench_arguments_exit_2_with_one_error_line_and_write_nothing(argv, message, tmp_path, capsys) -> None:
    out = tmp_path / "bench"
    assert main(["bench", "--agents", "bc", "--tasks", "randomwalks", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("textrl bench: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert "checkpoint_interval" not in err and not out.exists()
