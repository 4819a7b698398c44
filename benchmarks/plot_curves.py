"""BC learning curves from `textrl bench` output: one PNG per task and tier, and the scores as a Markdown table.

    textrl bench --agents bc --tasks brackets --seeds 1 --steps 800 --eval-interval 100 --out CURVES/brackets
    python benchmarks/plot_curves.py CURVES/*/runs.csv --out benchmarks/results/curves

Each PNG shows, against the training step, the validation score at every acting value the run
scored (greedy and sampling), the test score at the value chosen on validation, the data's own
score (the `data` row of runs.csv) and the sanity gate 5 points below it (agents/protocol.py): the
curve has done its job when validation has flattened, and BC passes when test is above the gate.
Scores are means over the seeds in the file.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

from agents.protocol import GATE_POINTS
from agents.reports import read_csv

Series = dict[str, dict[int, list[float]]]
"""Per curve label ('val temperature=0', 'test chosen'), per step, the scores of every seed."""


def collect(paths: list[str], agent: str) -> tuple[dict[tuple[str, str], Series], dict[tuple[str, str], float]]:
    """The curves of `agent` per (task, tier), and the data score per (task, tier), from runs.csv files."""
    curves: dict[tuple[str, str], Series] = collections.defaultdict(
        lambda: collections.defaultdict(lambda: collections.defaultdict(list)))
    data: dict[tuple[str, str], float] = {}
    for path in paths:
        for row in read_csv(path):
            cell = (row["task"], row["tier"])
            if row["agent"] == "data":
                data[cell] = float(row["score"])
            elif row["agent"] == agent:
                label = f"{row['split']} {row['acting']}".strip()
                curves[cell][label][int(row["step"])].append(float(row["score"]))
    return curves, data


def mean_curve(points: dict[int, list[float]]) -> tuple[list[int], list[float]]:
    """Steps in order and the mean score over seeds at each."""
    steps = sorted(points)
    return steps, [sum(points[s]) / len(points[s]) for s in steps]


def plot_cell(cell: tuple[str, str], series: Series, data: float | None, path: Path) -> None:
    """One task and tier's curves, the data score and the gate, written to `path` (PNG)."""
    from matplotlib.figure import Figure  # no pyplot: no backend to choose, nothing process-wide

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for label, points in sorted(series.items()):
        ax.plot(*mean_curve(points), marker="o", label=label, linestyle="-" if label.startswith("test") else "--")
    if data is not None:
        ax.axhline(data, color="black", label=f"data {data:.1f}")
        ax.axhline(data - GATE_POINTS, color="black", linestyle=":", label=f"gate {data - GATE_POINTS:.1f}")
    ax.set(title=f"BC on {cell[0]}, {cell[1]} data", xlabel="training step", ylabel="normalised score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)


def table(cell: tuple[str, str], series: Series, data: float | None) -> str:
    """The scores at every evaluation of one cell as a Markdown table (one column per curve)."""
    labels = sorted(series)
    steps = sorted({s for points in series.values() for s in points})
    lines = [f"{cell[0]} / {cell[1]} (data {data:.1f})" if data is not None else f"{cell[0]} / {cell[1]}", "",
             "| step | " + " | ".join(labels) + " |", "| --- |" + " --- |" * len(labels)]
    for s in steps:
        cols = [f"{sum(series[lb][s]) / len(series[lb][s]):.1f}" if s in series[lb] else "-" for lb in labels]
        lines.append(f"| {s} | " + " | ".join(cols) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", nargs="+", help="runs.csv files written by `textrl bench`")
    parser.add_argument("--out", default="benchmarks/results/curves", help="folder for <task>_<tier>.png")
    parser.add_argument("--agent", default="bc", help="the table entry whose curves to plot")
    args = parser.parse_args()
    curves, data = collect(args.csv, args.agent)
    if not curves:
        raise SystemExit(f"no runs of agent {args.agent!r} in {', '.join(args.csv)}: run `textrl bench --agents "
                         f"{args.agent} ...` first")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for cell, series in sorted(curves.items()):
        plot_cell(cell, series, data.get(cell), out / f"{cell[0]}_{cell[1]}.png")
        print(table(cell, series, data.get(cell)))


if __name__ == "__main__":
    main()
