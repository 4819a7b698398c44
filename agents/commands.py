"""The `textrl bench` and `textrl demo` subcommands (plugged into the `textrl` CLI by entry point)."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

DEFAULT_SEEDS = 4


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_bench_command(sub: argparse._SubParsersAction) -> None:
    """Register `textrl bench`: the benchmark protocol (agents x tasks x tiers x seeds, knobs chosen on
    validation episodes, test scores reported), written as CSV, table and a plot per task."""
    from agents.protocol import ENTRIES, QUICK

    p = sub.add_parser("bench", help="benchmark agents x tasks x tiers x seeds and print a table of test scores")
    p.add_argument("--tasks", type=_csv, default=None, help="comma-separated tasks (default: all six)")
    p.add_argument("--agents", type=_csv, default=None,
                   help=f"comma-separated table entries (default: all of {', '.join(ENTRIES)}; the rank variants "
                        "run on Endgames' mixed tier only)")
    p.add_argument("--tiers", type=_csv, default=None, help="comma-separated dataset tiers (default: each task's two)")
    p.add_argument("--seeds", type=int, default=None,
                   help=f"number of seeds (0..N-1; default {DEFAULT_SEEDS}); seed 0 also tunes the grids")
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default: the task's)")
    p.add_argument("--eval-interval", type=int, default=None, help="steps between evaluations (default: 2 per run)")
    p.add_argument("--val-episodes", type=int, default=None, help="validation episodes per evaluation (64)")
    p.add_argument("--eval-episodes", type=int, default=None, help="test episodes per evaluation (128)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (each gets cores / jobs torch threads)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run in minutes: {', '.join(QUICK['tasks'])}, tier {', '.join(QUICK['tiers'])}, "
                        f"{QUICK['seeds']} seed, {QUICK['steps']} steps (unless given)")
    p.add_argument("--out", default="bench_results",
                   help="output folder (finished runs are skipped; an interrupted run resumes from its checkpoint)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_bench)


def resume_command(argv: list[str]) -> str:
    """The `textrl bench` command line that repeats (and so resumes) this benchmark."""
    return shlex.join(["textrl", "bench", *argv])


def _bench_settings(args: argparse.Namespace) -> dict:
    """run_benchmark's arguments: the flags given, then --quick's values for what was left out (every flag
    defaults to None, so an abbreviation such as `--step 10` counts as given), then the defaults."""
    from agents.protocol import ENTRIES, QUICK, TEST_EPISODES, TIERS, VALIDATION_EPISODES

    given = dict(agents=args.agents, tasks=args.tasks, seeds=args.seeds, tiers=args.tiers, total_steps=args.steps,
                 eval_interval=args.eval_interval, validation_episodes=args.val_episodes,
                 test_episodes=args.eval_episodes)
    quick = dict(tasks=QUICK["tasks"], tiers=QUICK["tiers"], seeds=QUICK["seeds"], total_steps=QUICK["steps"])
    defaults = dict(agents=list(ENTRIES), tasks=list(TIERS), seeds=DEFAULT_SEEDS,
                    validation_episodes=VALIDATION_EPISODES, test_episodes=TEST_EPISODES)
    settings = {}
    for key, value in given.items():
        if value is None and args.quick:
            value = quick.get(key)
        settings[key] = defaults.get(key) if value is None else value
    return {**settings, "jobs": args.jobs}


def _bench(args: argparse.Namespace) -> int:
    from agents.benchmark import format_table, run_benchmark

    argv = args.argv[args.argv.index("bench") + 1:]
    settings = _bench_settings(args)
    started = time.perf_counter()
    try:
        rows = run_benchmark(**settings, out_dir=args.out, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"\ntextrl bench: interrupted; finished runs are in {Path(args.out) / 'runs'} and the checkpoints of "
              f"the interrupted ones in {Path(args.out) / 'work'}; to resume where it stopped run the same command: "
              f"{resume_command(argv)}", file=sys.stderr)
        return 130
    print(format_table(rows))
    out = Path(args.out)
    print(f"wrote {out / 'runs.csv'}, {out / 'table.md'} and a plot per task (scores_<task>.png) "
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
