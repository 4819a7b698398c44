"""Beta sweep: train one agent on a task's benchmark dataset once, evaluate every beta on the same episodes.

Uses a list in `method.gen_kwargs.beta` (the trainer then logs `eval/score@beta=b` per beta), so
the betas share the training run and differ only in how the agent acts.

    python benchmarks/sweep_beta.py --task maze --agent ilql --betas 0 1 4 16 100 [--tier mixed] [--seed 1]
        [--temperature 0] [--eval-seed 12345]

`--eval-seed` adds a validation row: the trained agent rolled out once more per beta on episodes
drawn with that seed, apart from the ones `fit` evaluates on (which use `train.seed`), so a beta
chosen on it is not chosen on the reported episodes.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agents import AGENTS
from agents.benchmark import dataset_id
from agents.protocol import TIERS
from textrl import make_dataset, task_config
from textrl.rollout import evaluate
from textrl.tasks import get_task


def main() -> None:
    """Run the sweep and print a markdown table of normalised score per evaluation step and beta."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=sorted(TIERS))
    parser.add_argument("--tier", default="mixed", help="dataset tier (default: mixed)")
    parser.add_argument("--agent", required=True, choices=sorted(AGENTS))
    parser.add_argument("--betas", nargs="+", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=None, help="default: the task preset's")
    parser.add_argument("--eval-seed", type=int, default=None,
                        help="also score every beta on validation episodes drawn with this seed")
    args = parser.parse_args()

    gen = dict(beta=args.betas)
    if args.temperature is not None:
        gen["temperature"] = args.temperature
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        cfg = task_config(args.task, args.agent, seed=args.seed, progress_bar=False, save_best=False,
                          tracker="none", checkpoint_dir=work).evolve(method=dict(gen_kwargs=gen))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            agent = AGENTS[args.agent](cfg)
            history = agent.fit(make_dataset(dataset_id(args.task, args.tier), progress=False))
            validation = [_validation_score(agent, args.task, b, cfg.train.eval_episodes, args.eval_seed)
                          for b in args.betas] if args.eval_seed is not None else None
    settings = cfg.method.gen_kwargs
    print(f"{args.agent} on {args.task}, seed {args.seed}, temperature {settings.temperature:g}, "
          f"top_k {settings.top_k}: normalised score by step and beta")
    print("| step | " + " | ".join(f"beta {b:g}" for b in args.betas) + " |")
    print("| --- |" + " ---: |" * len(args.betas))
    for record in history:
        if "eval/episodes" in record:
            scores = [record[f"eval/score@beta={b:g}"] for b in args.betas]
            print(f"| {record['step']} | " + " | ".join(f"{s:.1f}" for s in scores) + " |")
    if validation is not None:
        print(f"| validation (seed {args.eval_seed}) | " + " | ".join(f"{s:.1f}" for s in validation) + " |")
    print(f"\n{time.perf_counter() - started:.0f} s")


def _validation_score(agent: object, task_name: str, beta: float, episodes: int, seed: int) -> float:
    """Mean normalised score of the agent acting with `beta` on `episodes` rollouts drawn with `seed`."""
    task = get_task(task_name)
    result = evaluate(functools.partial(agent.policy, beta=beta), task, num_episodes=episodes, seed=seed)
    mean = sum(result.returns) / len(result.returns)
    return 100.0 * (mean - task.ref_min_score) / (task.ref_max_score - task.ref_min_score)


if __name__ == "__main__":
    main()
