"""The benchmark's reports, from its runs and each entry's row per cell (`Summary`: the knobs chosen on
validation, the test scores at them): the Markdown table with each cell's data score and sanity gate, ILQL
against the best baseline per cell, runs.csv, and a plot per task."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from agents.protocol import (
    ENTRIES,
    Run,
    Summary,
    acting_label,
    converged,
    gate_margin,
    gate_rule,
    own_data,
)
from textrl.io import atomic_write_text


def _gate(rows: Sequence[Summary], cell: tuple[str, str], data: dict[tuple[str, str], float]) -> Optional[bool]:
    """The sanity gate of a cell (None when its BC or data score is missing)."""
    bc = next((r for r in rows if (r.task, r.tier, r.entry) == (*cell, "bc")), None)
    return converged(bc, data.get(cell), gate_margin(*cell))


def _number(cell: tuple[str, str], value: float) -> str:
    """A score as the table shows it: a normalised score to 0.1, a mean return of your own data to 0.01."""
    return f"{value:.2f}" if own_data(cell[0]) else f"{value:.1f}"


def format_table(rows: Sequence[Summary], data: Optional[dict[tuple[str, str], float]] = None) -> str:
    """A Markdown table of test-episode scores (mean ± std over seeds) with the chosen knobs: normalised scores
    of a task, mean returns of your own dataset (task: its env, tier: the dataset). Each cell opens with its
    data's own score and the sanity gate (BC within GATE_POINTS of it; 5% of the reward range for a dataset)."""
    data = data or {}
    lines = ["| task | tier | agent | knobs (chosen on validation) | seeds | test, final | test, best | "
             "validation, final |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    gate = {None: "no BC run", True: "converged", False: "**not converged**"}

    def ms(cell: tuple[str, str], values: np.ndarray) -> str:
        return f"{_number(cell, values.mean())} ± {_number(cell, values.std())}"

    for cell in dict.fromkeys([*data, *((r.task, r.tier) for r in rows)]):
        if cell in data:
            what = "mean return of the dataset's own episodes" if own_data(cell[0]) else "the dataset's own episodes"
            verdict = gate[_gate(rows, cell, data)] if gate_margin(*cell) is not None else "not gated"
            lines.append(f"| {cell[0]} | {cell[1]} | data | {what}; {gate_rule(*cell)}: {verdict} | - | "
                         f"{_number(cell, data[cell])} | - | - |")
        lines += [f"| {r.task} | {r.tier} | {r.entry} | {r.knobs} | {r.seeds} | {ms(cell, r.test_final)} | "
                  f"{ms(cell, r.test_best)} | {ms(cell, r.val_final)} |" for r in rows if (r.task, r.tier) == cell]
    return "\n".join(lines) + "\n"


BASELINES = tuple(name for name, e in ENTRIES.items() if e.agent != "ilql")
"""The entries ILQL is compared with: every entry of another agent."""


def compare(rows: Sequence[Summary], data: Optional[dict[tuple[str, str], float]] = None) -> str:
    """Per cell, ILQL (from scratch and from BC) against the best baseline on test final scores: win, tie or
    lose, a tie being a difference within two standard errors of it (std / sqrt(seeds) each). The best
    baseline is the one with the highest validation final score: like every knob, it is chosen on validation
    episodes, never on the test episodes it is then judged on. A cell whose BC misses the sanity gate is
    "not converged" and its verdicts are marked "not counted"."""
    data = data or {}
    lines = ["| task | tier | data | ILQL | ILQL from BC | best baseline (on validation), test | ILQL vs it | ILQL from BC vs it |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]

    def verdict(a: Summary, b: Summary) -> str:
        diff = a.test_final.mean() - b.test_final.mean()
        se = np.sqrt(a.test_final.var() / a.seeds + b.test_final.var() / b.seeds)
        word = "tie" if abs(diff) <= 2 * se else ("win" if diff > 0 else "lose")
        return f"{word} ({'+' if diff >= 0 else '-'}{_number((a.task, a.tier), abs(diff))})"

    for cell in dict.fromkeys((r.task, r.tier) for r in rows):
        here = {r.entry: r for r in rows if (r.task, r.tier) == cell}
        base = [here[b] for b in BASELINES if b in here]
        if not base or not ({"ilql", "ilql_bc"} & set(here)):
            continue
        best = max(base, key=lambda r: r.val_final.mean())
        cols = [_number(cell, here[e].test_final.mean()) if e in here else "-" for e in ("ilql", "ilql_bc")]
        verdicts = [verdict(here[e], best) if e in here else "-" for e in ("ilql", "ilql_bc")]
        if _gate(rows, cell, data) is False:
            verdicts = [f"not counted: not converged, {v}" if v != "-" else v for v in verdicts]
        shown = _number(cell, data[cell]) if cell in data else "-"
        lines.append(f"| {cell[0]} | {cell[1]} | {shown} | {cols[0]} | {cols[1]} | {best.entry} "
                     f"{_number(cell, best.test_final.mean())} | {verdicts[0]} | {verdicts[1]} |")
    return "\n".join(lines) + "\n"


def write_reports(runs: Sequence[Run], rows: Sequence[Summary], out_dir: str | Path,
                  data: Optional[dict[tuple[str, str], float]] = None) -> None:
    """Write runs.csv (every evaluation of every run, and per cell the data's own score as agent `data`,
    seed 0, step 0, split `test`), table.md (the table, then ILQL against the best baseline per cell)
    and scores_<task>.png (an env id's '/' written as '+'). Scores are normalised for a task and mean
    returns for your own dataset."""
    out = Path(out_dir)
    data = data or {}
    rows_out: list[list[Any]] = [["task", "tier", "agent", "knob", "seed", "step", "split", "acting", "score"]]
    rows_out += [[task, tier, "data", 0, 0, 0, "test", "", f"{score:.4f}"] for (task, tier), score in data.items()]
    for r in runs:
        series = [("val", acting_label(*value), scores) for value, scores in r.val.items()]
        series.append(("test", "chosen" if r.betas or r.temperatures else "", r.test))
        for split, label, scores in series:
            rows_out += [[r.task, r.tier, r.entry, r.knob, r.seed, s, split, label, f"{v:.4f}"]
                         for s, v in zip(r.steps, scores)]
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows_out)  # quoted where a field holds a comma ("beta=4,temperature=0")
    atomic_write_text(out / "runs.csv", text.getvalue())
    atomic_write_text(out / "table.md", format_table(rows, data) + "\n" + compare(rows, data))
    for task in dict.fromkeys(r.task for r in rows):
        plot_task([r for r in rows if r.task == task], out / f"scores_{task.replace('/', '+')}.png")


def plot_task(rows: Sequence[Summary], path: str | Path) -> None:
    """Test score against training step at the chosen knobs, one panel per tier, mean ± std over seeds."""
    from matplotlib.figure import Figure  # no pyplot: no backend to choose, nothing process-wide

    tiers = list(dict.fromkeys(r.tier for r in rows))
    fig = Figure(figsize=(5.5 * len(tiers), 3.8))
    axes = fig.subplots(1, len(tiers), squeeze=False)
    for ax, tier in zip(axes[0], tiers):
        for r in (r for r in rows if r.tier == tier):
            mean, std = r.test_curves.mean(0), r.test_curves.std(0)
            ax.plot(r.curve_steps, mean, marker="o", label=f"{r.entry} ({r.knobs})")
            ax.fill_between(r.curve_steps, mean - std, mean + std, alpha=0.15)
        ax.set(title=f"{rows[0].task}, {tier}" + ("" if own_data(rows[0].task) else " data"), xlabel="training step",
               ylabel="test mean return" if own_data(rows[0].task) else "test normalised score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a runs.csv (for reports and tests)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
