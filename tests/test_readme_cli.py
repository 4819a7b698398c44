"""The documented uses cannot drift: README's code runs, its commands exist, CI runs its test command."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from agents.benchmark import read_csv, run_benchmark
from textrl.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_python_examples_run(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
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
    assert namespace["dataset"].total_episodes == 32  # the last block imported its 32 samples


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
    out = subprocess.run([sys.executable, "-m", "textrl.cli", "config"], capture_output=True, text=True, check=True)
    assert "tau: 0.7" in out.stdout


def test_benchmark_harness_writes_csv_table_and_plot_and_resumes(tmp_path) -> None:
    results = run_benchmark(["bc", "ilql"], ["randomwalks"], 1, tmp_path, total_steps=6, eval_interval=3,
                            eval_episodes=16, progress=False)
    assert {(r.agent, r.seed) for r in results} == {("bc", 0), ("ilql", 0)}
    rows = read_csv(tmp_path / "runs.csv")
    assert {r["agent"] for r in rows} == {"bc", "ilql"} and {r["step"] for r in rows} == {"3", "6"}
    table = (tmp_path / "table.md").read_text()
    assert "| randomwalks | ilql | 1 |" in table and "±" in table
    assert (tmp_path / "scores.png").read_bytes()[:4] == b"\x89PNG"
    again = run_benchmark(["bc", "ilql"], ["randomwalks"], 1, tmp_path, total_steps=6, eval_interval=3,
                          eval_episodes=16, progress=False)
    assert [r.seconds for r in again] == [r.seconds for r in results]  # finished runs were not redone


def test_an_interrupted_benchmark_resumes_its_run_from_the_last_checkpoint(tmp_path, monkeypatch) -> None:
    from textrl.trainer import Trainer

    real_save, real_load = Trainer.save_checkpoint, Trainer.load_checkpoint
    loaded = []

    def save_then_interrupt(self):
        path = real_save(self)
        if self.state.step == 3:
            raise KeyboardInterrupt  # Ctrl-C right after the run's first checkpoint
        return path

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(["bc"], ["randomwalks"], 1, tmp_path, total_steps=6, eval_interval=3, eval_episodes=8,
                      progress=False)
    assert not (tmp_path / "runs" / "randomwalks__bc__0.json").exists()
    monkeypatch.setattr(Trainer, "save_checkpoint", real_save)
    monkeypatch.setattr(Trainer, "load_checkpoint", lambda self, path: loaded.append(path) or real_load(self, path))
    (result,) = run_benchmark(["bc"], ["randomwalks"], 1, tmp_path, total_steps=6, eval_interval=3, eval_episodes=8,
                              progress=False)
    run = tmp_path / "work" / "randomwalks_bc_0"
    assert [Path(p).name for p in loaded] == ["step_000003"]
    assert result.steps == [3, 6] and len(result.scores) == 2
    assert [p.name for p in run.glob("step_*")] == ["step_000006"]  # a finished run keeps its final checkpoint
    trained = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines() if "loss" in line]
    assert sorted(set(trained)) == [1, 2, 3, 4, 5, 6] and trained.count(4) == 1  # steps 1-3 were not trained again


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
                        f"--eval-episodes 256 --out {out}")


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0"], "seeds = 0: give at least one seed"),
    (["--seeds", "-2"], "seeds = -2: give at least one seed"),
    (["--steps", "0"], "--steps 0: the steps must be at least 1"),
    (["--eval-episodes", "0"], "--eval-episodes 0: the eval episodes must be at least 1"),
    (["--agents", "bc,nope"], "unknown agent 'nope'; choose from"),
    (["--tasks", "randomwalks,chess"], "unknown task 'chess'; choose from"),
])
def test_bad_bench_arguments_exit_2_with_one_error_line_and_write_nothing(argv, message, tmp_path, capsys) -> None:
    out = tmp_path / "bench"
    assert main(["bench", "--agents", "bc", "--tasks", "randomwalks", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("textrl bench: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert "checkpoint_interval" not in err and not out.exists()
