"""The `textrl bench` and `textrl demo` subcommands (plugged into the `textrl` CLI by entry point)."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from agents.registry import AGENTS


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_bench_command(sub: argparse._SubParsersAction) -> None:
    """Register `textrl bench`: agents x tasks x seeds, evaluated by rollouts, written as CSV/table/plot."""
    from agents.benchmark import BENCH_DATASETS

    p = sub.add_parser("bench", help="benchmark agents x tasks x seeds and print a table of normalised scores")
    p.add_argument("--tasks", type=_csv, default=list(BENCH_DATASETS), help="comma-separated tasks")
    p.add_argument("--agents", type=_csv, default=list(AGENTS), help="comma-separated agents")
    p.add_argument("--seeds", type=int, default=4, help="number of seeds (0..N-1)")
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default: the task's)")
    p.add_argument("--eval-interval", type=int, default=None, help="steps between evaluations")
    p.add_argument("--eval-episodes", type=int, default=256, help="rollout episodes per evaluation")
    p.add_argument("--out", default="bench_results",
                   help="output folder (finished runs are skipped; an interrupted run resumes from its checkpoint)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_bench)


def resume_command(args: argparse.Namespace) -> str:
    """The `textrl bench` command line that repeats (and so resumes) this benchmark."""
    parts = ["textrl", "bench", "--tasks", ",".join(args.tasks), "--agents", ",".join(args.agents),
             "--seeds", str(args.seeds)]
    for flag, value in (("--steps", args.steps), ("--eval-interval", args.eval_interval)):
        if value is not None:
            parts += [flag, str(value)]
    parts += ["--eval-episodes", str(args.eval_episodes), "--out", args.out]
    if args.no_progress:
        parts.append("--no-progress")
    return shlex.join(parts)


def _bench(args: argparse.Namespace) -> int:
    from agents.benchmark import format_table, run_benchmark, summarize

    started = time.perf_counter()
    try:
        results = run_benchmark(args.agents, args.tasks, args.seeds, args.out, total_steps=args.steps,
                                eval_interval=args.eval_interval, eval_episodes=args.eval_episodes,
                                progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"\ntextrl bench: interrupted; finished runs are in {Path(args.out) / 'runs'} and the checkpoints of "
              f"the interrupted one in {Path(args.out) / 'work'}; to resume where it stopped run the same command: "
              f"{resume_command(args)}", file=sys.stderr)
        return 130
    print(format_table(summarize(results)))
    out = Path(args.out)
    print(f"wrote {out / 'runs.csv'}, {out / 'table.md'}, {out / 'scores.png'} "
          f"in {time.perf_counter() - started:.0f} s")
    return 0


def add_demo_command(sub: argparse._SubParsersAction) -> None:
    """Register `textrl demo`: RandomWalks data, BC and ILQL on a tiny GPT-2, rolled out and compared."""
    p = sub.add_parser("demo", help="train BC and ILQL on RandomWalks and compare them (a few minutes on CPU)")
    p.add_argument("--steps", type=int, default=None, help="training steps per agent (default: the task's)")
    p.add_argument("--episodes", type=int, default=500, help="evaluation episodes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="textrl_demo", help="folder for checkpoints and logs")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from agents.demo import run_demo

    run_demo(steps=args.steps, episodes=args.episodes, seed=args.seed, out_dir=args.out)
    return 0
