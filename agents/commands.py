"""The `textrl bench`, `demo`, `fit` and `generate` subcommands (plugged into the `textrl` CLI by entry point)."""

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
    p.add_argument("--tasks", type=_csv, default=None,
                   help="comma-separated tasks (default: all six, or none when --dataset is given)")
    p.add_argument("--dataset", dest="datasets", type=_csv, action="extend", default=None, metavar="ID",
                   help="your own dataset as a cell: one made with from_samples(..., env=...), scored in mean return "
                        "by its env's reward function (comma-separated or repeated)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import a module first in every process, e.g. one that registers your TextEnv (repeatable; "
                        "needed only when the dataset cannot import its reward function itself)")
    p.add_argument("--agents", type=_csv, default=None,
                   help=f"comma-separated table entries (default: all of {', '.join(ENTRIES)}; the rank variants "
                        "run on Endgames' mixed tier only)")
    p.add_argument("--tiers", type=_csv, default=None, help="comma-separated dataset tiers (default: each task's two)")
    p.add_argument("--seeds", type=int, default=None,
                   help=f"number of seeds (0..N-1; default {DEFAULT_SEEDS}); seed 0 also tunes the grids")
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default: the task's)")
    p.add_argument("--eval-interval", type=int, default=None, help="steps between evaluations (default: 2 per run)")
    p.add_argument("--val-episodes", type=int, default=None,
                   help="validation episodes per evaluation (default: the task's, 64 unless the protocol sizes it)")
    p.add_argument("--eval-episodes", type=int, default=None,
                   help="test episodes per evaluation (default: the task's, 128 unless the protocol sizes it)")
    p.add_argument("--episodes", type=int, default=None,
                   help="episodes in each task cell's dataset (default: the task's, 1000 unless the protocol sizes it; "
                        "another size is built under its own id, e.g. textrl/wordle/mixed-n10000-v1)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (each gets cores / jobs torch threads)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run in minutes: {', '.join(QUICK['tasks'])}, tier {', '.join(QUICK['tiers'])}, "
                        f"{QUICK['seeds']} seed, {QUICK['steps']} steps (unless given)")
    p.add_argument("--out", default="bench_results",
                   help="output folder (finished runs are skipped; an interrupted run resumes from its checkpoint)")
    p.add_argument("--report", action="store_true",
                   help="train nothing: write the table, runs.csv and plots of the cells whose runs are all stored "
                        "in --out (a benchmark run in parts: its table so far) and say how far the others are")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_bench)


def resume_command(argv: list[str]) -> str:
    """The `textrl bench` command line that repeats (and so resumes) this benchmark."""
    return shlex.join(["textrl", "bench", *argv])


def _bench_settings(args: argparse.Namespace) -> dict:
    """run_benchmark's arguments: the flags given, then --quick's values for what was left out (every flag
    defaults to None, so an abbreviation such as `--step 10` counts as given), then the defaults."""
    from agents.protocol import ENTRIES, QUICK, TIERS

    given = dict(agents=args.agents, tasks=args.tasks, seeds=args.seeds, tiers=args.tiers, total_steps=args.steps,
                 eval_interval=args.eval_interval, validation_episodes=args.val_episodes,
                 test_episodes=args.eval_episodes)
    quick = dict(tasks=QUICK["tasks"], tiers=QUICK["tiers"], seeds=QUICK["seeds"], total_steps=QUICK["steps"])
    defaults = dict(agents=list(ENTRIES), tasks=list(TIERS), seeds=DEFAULT_SEEDS)
    if args.datasets:  # your own datasets alone, unless tasks are named too
        defaults["tasks"] = quick["tasks"] = []
    settings = {}
    for key, value in given.items():
        if value is None and args.quick:
            value = quick.get(key)
        settings[key] = defaults.get(key) if value is None else value
    return {**settings, "datasets": args.datasets or [], "imports": args.imports, "jobs": args.jobs,
            "episodes": args.episodes, "train": not args.report}


def _bench(args: argparse.Namespace) -> int:
    from agents.benchmark import run_benchmark

    argv = args.argv[args.argv.index("bench") + 1:]
    settings = _bench_settings(args)
    started = time.perf_counter()
    try:
        run_benchmark(**settings, out_dir=args.out, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"\ntextrl bench: interrupted; finished runs are in {Path(args.out) / 'runs'} and the checkpoints of "
              f"the interrupted ones in {Path(args.out) / 'work'}; to resume where it stopped run the same command: "
              f"{resume_command(argv)}", file=sys.stderr)
        return 130
    out = Path(args.out)
    print((out / "table.md").read_text(encoding="utf-8"))
    print(f"wrote {out / 'runs.csv'}, {out / 'table.md'} and a plot per task or env (scores_<task>.png) "
          f"in {time.perf_counter() - started:.0f} s")
    return 0


def add_demo_command(sub: argparse._SubParsersAction) -> None:
    """Register `textrl demo`: RandomWalks data, BC and ILQL on a tiny GPT-2, rolled out and compared."""
    p = sub.add_parser("demo", help="train BC and ILQL on RandomWalks and compare them (about a minute on 2 CPU cores)")
    p.add_argument("--steps", type=int, default=None, help="training steps per agent (default: the task's)")
    p.add_argument("--episodes", type=int, default=500, help="evaluation episodes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="textrl_demo", help="folder for checkpoints and logs")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from agents.demo import run_demo

    run_demo(steps=args.steps, episodes=args.episodes, seed=args.seed, out_dir=args.out)
    return 0


def add_fit_command(sub: argparse._SubParsersAction) -> None:
    """Register `textrl fit`: train the agent a config names on a dataset, then save it."""
    p = sub.add_parser("fit", help="train an agent (the config's method) on a dataset and save it")
    p.add_argument("config", help="a config YAML file (`textrl config --method ilql > ilql.yaml`, then edit it)")
    p.add_argument("dataset", help="a dataset id (namespace/name-vN) or a dataset folder")
    p.add_argument("--set", dest="changes", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value by its dotted key, e.g. --set train.total_steps=500 (YAML values; "
                        "repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in train.checkpoint_dir from its last checkpoint")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import a module first, e.g. one that registers your TextEnv (repeatable)")
    p.set_defaults(func=_fit)


def _config_changes(changes: list[str]) -> dict:
    """`--set key=value` pairs as dotted config keys with YAML-parsed values."""
    import yaml

    out = {}
    for change in changes:
        key, sep, value = change.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {change!r}: expected KEY=VALUE, e.g. --set train.total_steps=500")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _fit(args: argparse.Namespace) -> int:
    import importlib

    from agents.registry import AGENTS
    from textrl.config import load_yaml

    for module in args.imports:
        importlib.import_module(module)
    config = load_yaml(args.config).update(_config_changes(args.changes))
    if args.resume:
        config = config.update({"train.resume_from_checkpoint": config.train.checkpoint_dir})
    agent = AGENTS[config.method.name](config)
    agent.fit(args.dataset)
    saved = Path(config.train.checkpoint_dir) / "final"
    agent.save(saved)
    print(f"saved the trained agent to {saved}; generate with: textrl generate {shlex.quote(str(saved))} PROMPT ...")
    return 0


def add_generate_command(sub: argparse._SubParsersAction) -> None:
    """Register `textrl generate`: continue prompts with a saved agent."""
    p = sub.add_parser("generate", help="continue prompts with a saved agent (none: one fresh text)")
    p.add_argument("agent", help="a saved agent folder (what `textrl fit` prints) or a checkpoint's step_N folder")
    p.add_argument("prompts", nargs="*", help="prompts to continue (none: fresh text); prints what the agent writes "
                                              "after each, one line each")
    p.add_argument("--num", type=int, default=1, help="texts per prompt (default 1)")
    p.add_argument("--beta", type=float, default=None, help="acting beta (default: the agent's)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature, 0 = greedy")
    p.add_argument("--max-new-tokens", type=int, default=None, help="tokens to write at most")
    p.set_defaults(func=_generate)


def _generate(args: argparse.Namespace) -> int:
    from agents.registry import load_agent

    if args.num < 1:
        raise ValueError(f"--num {args.num}: give at least 1")
    agent = load_agent(args.agent)
    settings = {k: v for k, v in (("beta", args.beta), ("temperature", args.temperature),
                                  ("max_new_tokens", args.max_new_tokens)) if v is not None}
    beta = agent.config.method.gen_kwargs.beta
    if isinstance(beta, list) and "beta" not in settings:
        raise ValueError(f"the agent's config sweeps beta {beta}: choose one with --beta")
    prompts = [p for p in (args.prompts or [""]) for _ in range(args.num)]
    for text in agent.generate(prompts, **settings):  # one line each: the text written after its prompt
        print(text)
    return 0
