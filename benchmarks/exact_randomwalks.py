"""BC's learning curve on RandomWalks scored exactly: every path a policy can take is enumerated.

Rollouts score a sampling policy on RandomWalks' random tier with a standard deviation of about 41
points per episode, so 64 or 128 episodes cannot show a curve. Here the normalised score is the exact
expectation: from every start node (each equally likely, as the env draws them) each path prefix is
extended along every edge with the model's probability of that token (temperature 1) or with
probability 1 for its argmax (greedy), and a path's reward is the task's optimality when it reaches
node 0. About 27,500 prefixes, run in one batch per path length.

    python benchmarks/exact_randomwalks.py --tier random --seeds 0 1 2 --steps 2000 --every 200 \
        --out benchmarks/results/curves
"""

from __future__ import annotations

import argparse
import csv
import io
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from matplotlib.figure import Figure

from agents import BCAgent
from agents.protocol import GATE_POINTS, data_score
from textrl import make_dataset, task_config
from textrl.io import atomic_write_text
from textrl.tasks import get_task

TEMPERATURES = (1.0, 0.0)
"""Sampling, then greedy; a row's scores are keyed `T1` and `T0`."""


@torch.no_grad()
def exact_score(model: torch.nn.Module, temperature: float) -> float:
    """The exact normalised score of `model` acting on RandomWalks at `temperature` (1: sampling, 0: greedy) by its
    language model's logits alone, as BC and %BC act (`top_k` 0); agents that add a Q-advantage act otherwise."""
    task = get_task("randomwalks")
    device = next(model.parameters()).device
    total = 0.0
    frontier = [(int(s), [int(task.node_token(s))], 1.0) for s in task.starts]  # (start, path tokens, probability)
    while frontier:
        ids = torch.tensor([path for _, path, _ in frontier], device=device)
        probs = torch.softmax(model.backbone(input_ids=ids).logits[:, -1].double(), -1).cpu().numpy()
        if temperature == 0:
            probs = np.eye(probs.shape[1])[probs.argmax(1)]
        extended = []
        for (start, path, p), q in zip(frontier, probs):
            for node in np.flatnonzero(task.adj[path[-1] - 2]):  # any other token ends the episode with 0
                p_next, nodes = p * q[task.node_token(node)], len(path) + 1
                if p_next == 0:
                    continue
                if node == 0:
                    total += p_next * task.optimality(np.array([start]), np.array([nodes]))[0]
                elif nodes < task.max_nodes:
                    extended.append((start, path + [int(task.node_token(node))], p_next))
        frontier = extended
    return float(task.normalized_score(total / len(task.starts)))


def curve(tier: str, seed: int, steps: int, every: int, work: Path) -> list[dict]:
    """Train BC with the task preset (but `steps`) and score it exactly every `every` steps and at the last."""

    def score(agent: BCAgent) -> dict[str, float]:
        agent.model.eval()
        row = {key(t): exact_score(agent.model, t) for t in TEMPERATURES}
        agent.model.train()
        return row

    config = task_config("randomwalks", "bc", seed=seed, total_steps=steps, eval_interval=every,
                         checkpoint_interval=steps, checkpoint_dir=str(work / f"{tier}_s{seed}_{steps}"),
                         progress_bar=False)
    history = BCAgent(config).fit(f"textrl/randomwalks/{tier}-v1", rollout_eval=False, metric_fn=score)
    return [{"seed": seed, "step": h["step"], **{key(t): h[f"eval/{key(t)}"] for t in TEMPERATURES}}
            for h in history if f"eval/{key(TEMPERATURES[0])}" in h]


def key(temperature: float) -> str:
    """A score's column: `T1` (sampling) or `T0` (greedy)."""
    return f"T{temperature:g}"


def plot(rows: list[dict], data: float, tier: str, path: Path) -> None:
    """Each seed's exact score by step, sampling solid and greedy dotted, with the data's score and the gate."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for seed in sorted({r["seed"] for r in rows}):
        mine = [r for r in rows if r["seed"] == seed]
        steps = [r["step"] for r in mine]
        line, = ax.plot(steps, [r[key(1.0)] for r in mine], marker="o", label=f"seed {seed}, temperature 1")
        ax.plot(steps, [r[key(0.0)] for r in mine], linestyle=":", marker=".", color=line.get_color(), alpha=0.6,
                label=f"seed {seed}, greedy")
    ax.axhline(data, color="black", label=f"data {data:.1f}")
    ax.axhline(data - GATE_POINTS, color="black", linestyle="--", label=f"gate {data - GATE_POINTS:.1f}")
    ax.set(xlabel="BC training step", ylabel="exact normalised score",
           title=f"RandomWalks {tier}: BC scored exactly (every path enumerated)")
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    ax.set_ylim(top=max(r[key(t)] for r in rows for t in TEMPERATURES) + 15)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)  # a reader never sees half a PNG


def main() -> None:
    """Run the curves, write the CSV and the plot, print the scores by step."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tier", default="random")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--work", default="exact_randomwalks_work", help="checkpoints of the BC runs")
    parser.add_argument("--out", default=".", help="folder for randomwalks_<tier>_exact.csv and .png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = data_score("randomwalks", make_dataset(f"textrl/randomwalks/{args.tier}-v1"))
    rows = [row for seed in args.seeds for row in curve(args.tier, seed, args.steps, args.every, Path(args.work))]
    out = Path(args.out)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["seed", "step", *map(key, TEMPERATURES)])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / f"randomwalks_{args.tier}_exact.csv", text.getvalue())
    plot(rows, data, args.tier, out / f"randomwalks_{args.tier}_exact.png")
    print(f"data {data:.1f}, gate {data - GATE_POINTS:.1f}; exact score by step (temperature 1 / greedy):")
    for seed in args.seeds:
        print(f"  seed {seed}: " + ", ".join(f"{r['step']}: " + " / ".join(f"{r[key(t)]:.1f}" for t in TEMPERATURES)
                                         for r in rows if r["seed"] == seed))
    steps = sorted({r["step"] for r in rows})
    print("  mean at temperature 1: " + ", ".join(f"{s}: {np.mean([r[key(1.0)] for r in rows if r['step'] == s]):.1f}"
                                                   for s in steps))


if __name__ == "__main__":
    main()
