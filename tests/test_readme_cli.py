"""The documented uses cannot drift: README's code runs, its commands exist, CI runs its test command."""

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
