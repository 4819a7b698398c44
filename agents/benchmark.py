"""The benchmark harness: agents x tasks x seeds, evaluated by env rollouts, written as CSV, table and plot.

Each run (task, agent, seed) is stored as its own JSON file once finished, so a finished run is
never redone; a run checkpoints at every evaluation into `work/<task>_<agent>_<seed>/`, so an
interrupted run resumes from its last checkpoint (`train.resume_from_checkpoint`) when the same
benchmark is started again. A finished run keeps only its final checkpoint.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from agents.registry import AGENTS
from textrl.data import make_dataset
from textrl.io import atomic_write_text
from textrl.presets import task_config
from textrl.trainer import find_checkpoint

# The dataset tier each task is benchmarked on: random-walk data for RandomWalks, a mixed tier for the maze.
BENCH_DATASETS = {
    "randomwalks": "textrl/randomwalks/random-v1",
    "maze": "textrl/maze/mixed-v1",
    "wordle": "textrl/wordle/mixed-v1",
    "endgames": "textrl/endgames/mixed-v1",
}


@dataclass(frozen=True)
class RunResult:
    """One (task, agent, seed) run: the evaluation curve and the final and best scores."""

    task: str
    agent: str
    seed: int
    steps: list[int]
    scores: list[float]
    seconds: float

    @property
    def final(self) -> float:
        return self.scores[-1]

    @property
    def best(self) -> float:
        return max(self.scores)


def check_plan(agents: Sequence[str], tasks: Sequence[str], seeds: int | Sequence[int], total_steps: Optional[int],
               eval_interval: Optional[int], eval_episodes: int) -> list[int]:
    """The seeds to run, after refusing every bad argument up front (before any folder is made or run started)."""
    for name in agents:
        if name not in AGENTS:
            raise ValueError(f"unknown agent '{name}'; choose from {', '.join(AGENTS)}")
    for name in tasks:
        if name not in BENCH_DATASETS:
            raise ValueError(f"unknown task '{name}'; choose from {', '.join(BENCH_DATASETS)}")
    if not agents or not tasks:
        raise ValueError("give at least one agent and one task (--agents, --tasks)")
    if isinstance(seeds, bool) or (isinstance(seeds, int) and seeds < 1):
        raise ValueError(f"seeds = {seeds}: give at least one seed (--seeds N runs seeds 0..N-1)")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list or any(not isinstance(s, int) or s < 0 for s in seed_list):
        raise ValueError(f"seeds = {seeds!r}: give a positive number of seeds or a list of seeds >= 0")
    for name, value in (("steps", total_steps), ("eval interval", eval_interval), ("eval episodes", eval_episodes)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"--{name.replace(' ', '-')} {value}: the {name} must be at least 1")
    return seed_list


def _latest_checkpoint(run_dir: Path) -> Optional[Path]:
    """The newest checkpoint of an interrupted run, or None."""
    try:
        return find_checkpoint(run_dir)
    except FileNotFoundError:
        return None


def _eval_curve(run_dir: Path) -> tuple[list[int], list[float]]:
    """(steps, scores) of a run's evaluations from its metrics.jsonl, the last record of a step winning
    (a resumed run may log a step twice; a torn last line is skipped)."""
    scores: dict[int, float] = {}
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "eval/score" in record:
            scores[int(record["step"])] = float(record["eval/score"])
    steps = sorted(scores)
    return steps, [scores[s] for s in steps]


def run_one(task: str, agent: str, seed: int, total_steps: Optional[int], eval_interval: Optional[int],
            eval_episodes: int, work_dir: Path, progress: bool) -> RunResult:
    """Train one agent on one task's benchmark dataset with one seed; evaluate (and checkpoint) along the way.

    A run folder holding a checkpoint is resumed from it; one without is started afresh.
    """
    check_plan([agent], [task], [seed], total_steps, eval_interval, eval_episodes)
    run_dir = work_dir / f"{task}_{agent}_{seed}"
    train: dict[str, Any] = dict(seed=seed, eval_episodes=eval_episodes, progress_bar=progress, save_best=False,
                                 checkpoint_dir=str(run_dir), tracker="jsonl")
    if total_steps is not None:
        train["total_steps"] = total_steps
    if eval_interval is not None:
        train["eval_interval"] = eval_interval
    config = task_config(task, agent, **train)
    config = config.evolve(train=dict(checkpoint_interval=min(config.train.eval_interval, config.train.total_steps)))
    last = _latest_checkpoint(run_dir)
    if last is None:
        shutil.rmtree(run_dir, ignore_errors=True)  # only logs of an attempt killed before its first checkpoint
    started = time.perf_counter()
    if last is None or int(last.name.split("_")[1]) < config.train.total_steps:
        config = config.evolve(train=dict(resume_from_checkpoint=None if last is None else str(last)))
        AGENTS[agent](config).fit(make_dataset(BENCH_DATASETS[task]))
    for old in sorted(run_dir.glob("step_*"))[:-1]:  # a finished run keeps its final checkpoint only
        shutil.rmtree(old, ignore_errors=True)
    steps, scores = _eval_curve(run_dir)
    return RunResult(task, agent, seed, steps, scores, time.perf_counter() - started)


def run_benchmark(
    agents: Sequence[str],
    tasks: Sequence[str],
    seeds: int | Sequence[int],
    out_dir: str | Path,
    total_steps: Optional[int] = None,
    eval_interval: Optional[int] = None,
    eval_episodes: int = 256,
    progress: bool = True,
) -> list[RunResult]:
    """Run every (task, agent, seed) not already finished in `out_dir`; write runs.csv, table.md, scores.png.

    Bad arguments are refused before anything is written; an interrupted run resumes from its checkpoint.
    """
    seed_list = check_plan(agents, tasks, seeds, total_steps, eval_interval, eval_episodes)
    out = Path(out_dir)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    plan = [(t, a, s) for t in tasks for a in agents for s in seed_list]
    results = []
    for task, agent, seed in tqdm(plan, desc="benchmark", unit="run", disable=not progress):
        path = runs_dir / f"{task}__{agent}__{seed}.json"
        if path.is_file():
            results.append(RunResult(**json.loads(path.read_text())))
            continue
        result = run_one(task, agent, seed, total_steps, eval_interval, eval_episodes, out / "work", progress)
        atomic_write_text(path, json.dumps(result.__dict__))
        results.append(result)
    write_reports(results, out)
    return results


def summarize(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """Mean and std over seeds of the final and best normalised scores, per (task, agent)."""
    rows = []
    keys = sorted({(r.task, r.agent) for r in results}, key=lambda k: (k[0], list(AGENTS).index(k[1])))
    for task, agent in keys:
        group = [r for r in results if (r.task, r.agent) == (task, agent)]
        final = np.array([r.final for r in group])
        best = np.array([r.best for r in group])
        rows.append(dict(task=task, agent=agent, seeds=len(group), final_mean=final.mean(), final_std=final.std(),
                         best_mean=best.mean(), best_std=best.std()))
    return rows


def write_reports(results: Sequence[RunResult], out_dir: str | Path) -> None:
    """Write runs.csv (every evaluation of every run), table.md and scores.png."""
    out = Path(out_dir)
    lines = ["task,agent,seed,step,score"]
    for r in results:
        lines += [f"{r.task},{r.agent},{r.seed},{s},{v:.4f}" for s, v in zip(r.steps, r.scores)]
    atomic_write_text(out / "runs.csv", "\n".join(lines) + "\n")
    atomic_write_text(out / "table.md", format_table(summarize(results)))
    plot_scores(results, out / "scores.png")


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of normalised scores, mean +- std over seeds."""
    head = "| task | agent | seeds | final score | best score |\n| --- | --- | --- | --- | --- |\n"
    body = "".join(
        f"| {r['task']} | {r['agent']} | {r['seeds']} | {r['final_mean']:.1f} ± {r['final_std']:.1f} "
        f"| {r['best_mean']:.1f} ± {r['best_std']:.1f} |\n"
        for r in rows
    )
    return head + body


def plot_scores(results: Sequence[RunResult], path: str | Path) -> None:
    """Score against training step, one panel per task, mean over seeds per agent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r.task for r in results})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for agent in [a for a in AGENTS if any(r.agent == a and r.task == task for r in results)]:
            group = [r for r in results if r.task == task and r.agent == agent]
            steps = group[0].steps
            curves = np.array([r.scores for r in group if r.steps == steps])
            ax.plot(steps, curves.mean(0), marker="o", label=agent)
            ax.fill_between(steps, curves.mean(0) - curves.std(0), curves.mean(0) + curves.std(0), alpha=0.15)
        ax.set(title=task, xlabel="training step", ylabel="normalised score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a runs.csv (for reports and tests)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
