"""The benchmark harness: agents x tasks x seeds, evaluated by env rollouts, written as CSV, table and plot.

Each run (task, agent, seed) is stored as its own JSON file once finished, so an interrupted
benchmark resumes where it stopped and a finished run is never redone.
"""

from __future__ import annotations

import csv
import json
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

# The dataset tier each task is benchmarked on (DESIGN.md: random-walk data; a mixed maze tier).
BENCH_DATASETS = {
    "randomwalks": "textrl/randomwalks/random-v0",
    "maze": "textrl/maze/mixed-v0",
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


def run_one(task: str, agent: str, seed: int, total_steps: Optional[int], eval_interval: Optional[int],
            eval_episodes: int, work_dir: Path, progress: bool) -> RunResult:
    """Train one agent on one task's benchmark dataset with one seed; evaluate along the way."""
    if agent not in AGENTS:
        raise ValueError(f"unknown agent '{agent}'; choose from {', '.join(AGENTS)}")
    if task not in BENCH_DATASETS:
        raise ValueError(f"unknown task '{task}'; choose from {', '.join(BENCH_DATASETS)}")
    train: dict[str, Any] = dict(seed=seed, eval_episodes=eval_episodes, progress_bar=progress, save_best=False,
                                 checkpoint_dir=str(work_dir / f"{task}_{agent}_{seed}"), tracker="none")
    if total_steps is not None:
        train.update(total_steps=total_steps, checkpoint_interval=total_steps)
    if eval_interval is not None:
        train["eval_interval"] = eval_interval
    config = task_config(task, agent, **train)
    started = time.perf_counter()
    history = AGENTS[agent](config).fit(make_dataset(BENCH_DATASETS[task]))
    evals = [h for h in history if "eval/score" in h]
    return RunResult(task, agent, seed, [int(h["step"]) for h in evals], [float(h["eval/score"]) for h in evals],
                     time.perf_counter() - started)


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
    """Run every (task, agent, seed) not already finished in `out_dir`; write runs.csv, table.md, scores.png."""
    out = Path(out_dir)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
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
