"""Vector env benchmark: env steps per second of the batched `TokenVectorEnv` vs gymnasium's
`SyncVectorEnv` over single `TokenEnv`s, per task, plus rollout throughput (episodes/s).

Both envs see the same actions (the task's exploration policy, drawn outside the timed step),
so only stepping (transition, autoreset, observation copies) is timed. A first table compares one
single env with the vector env at 1, 64 and 1024 envs. Prints markdown tables;
medians over `--repeats` runs because timings on a shared machine spread by about 20%.

    python benchmarks/bench_env.py [--num-envs 128] [--steps 300] [--episodes 4000] [--repeats 3] [--tasks endgames ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gymnasium
import numpy as np

from textrl.env import TokenEnv, TokenVectorEnv
from textrl.rollout import collect_episodes, evaluate
from textrl.tasks import TASKS, Task, get_task

DEFAULT_TASKS = [name for name in TASKS if name != "endgames_stockfish"]
"""Every task but the Stockfish opponent (an engine process queried move by move, not a batched env)."""
SCALING = (1, 64, 1024)
"""Vector env sizes of the scaling table (compared with one single env)."""


def step_rate(task: Task, env: gymnasium.vector.VectorEnv, steps: int, seed: int) -> float:
    """Env steps per second (batched steps x num_envs) of `env` under the task's exploration policy."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    timed = 0.0
    for _ in range(steps):
        actions = np.asarray(task.exploration_policy(obs, rng), dtype=np.int64)
        start = time.perf_counter()
        obs, *_ = env.step(actions)
        timed += time.perf_counter() - start
    env.close()
    return steps * env.num_envs / timed


def single_env_rate(task: Task, steps: int, seed: int) -> float:
    """Steps per second of one `TokenEnv` (step, and reset when an episode ends, are timed)."""
    rng = np.random.default_rng(seed)
    env = TokenEnv(task)
    obs, _ = env.reset(seed=seed)
    timed = 0.0
    for _ in range(steps):
        batch = {k: np.asarray(v)[None] for k, v in obs.items()}
        action = int(task.exploration_policy(batch, rng)[0])
        start = time.perf_counter()
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
        timed += time.perf_counter() - start
    return steps / timed


def sync_vector_env(task: Task, num_envs: int) -> gymnasium.vector.SyncVectorEnv:
    """Gymnasium's reference: a Python loop over `num_envs` single envs."""
    return gymnasium.vector.SyncVectorEnv([lambda: TokenEnv(task) for _ in range(num_envs)])


def episode_rate(task: Task, episodes: int, num_envs: int, record: bool) -> float:
    """Episodes per second of `collect_episodes` (record=True) or `evaluate` of the mixed-tier policy."""
    policy = task.behaviour_policy(task.tiers["mixed"])
    start = time.perf_counter()
    if record:
        collect_episodes(task, policy, episodes, seed=0, num_envs=num_envs)
    else:
        evaluate(policy, task, episodes, seed=0, num_envs=num_envs)
    return episodes / (time.perf_counter() - start)


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=128)
    parser.add_argument("--steps", type=int, default=300, help="batched steps per timing")
    parser.add_argument("--episodes", type=int, default=4000, help="episodes per rollout timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS, choices=list(TASKS))
    args = parser.parse_args()
    if args.num_envs < 1 or args.steps < 1 or args.repeats < 1 or args.episodes < 1:
        parser.error("--num-envs, --steps, --episodes and --repeats must be positive")

    runs = range(args.repeats)
    print("| task | single TokenEnv steps/s | " + " | ".join(f"vector x{n} steps/s" for n in SCALING)
          + f" | x{SCALING[-1]} / single |")
    print("| --- | ---: |" + " ---: |" * (len(SCALING) + 1))
    for name in args.tasks:
        task = get_task(name)
        single = statistics.median(single_env_rate(task, args.steps * 10, r) for r in runs)
        rates = [statistics.median(step_rate(task, TokenVectorEnv(task, n), args.steps, r) for r in runs)
                 for n in SCALING]
        print(f"| {name} | {single:,.0f} | " + " | ".join(f"{r:,.0f}" for r in rates)
              + f" | {rates[-1] / single:.0f}x |", flush=True)
    print()
    print(f"num_envs={args.num_envs}, {args.steps} batched steps, {args.episodes} episodes, "
          f"median of {args.repeats}\n")
    print("| task | TokenVectorEnv steps/s | SyncVectorEnv steps/s | speedup | evaluate ep/s | collect ep/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in args.tasks:
        task = get_task(name)
        ours = statistics.median(step_rate(task, TokenVectorEnv(task, args.num_envs), args.steps, r) for r in runs)
        sync = statistics.median(step_rate(task, sync_vector_env(task, args.num_envs), args.steps, r) for r in runs)
        evals = statistics.median(episode_rate(task, args.episodes, 256, record=False) for _ in runs)
        collects = statistics.median(episode_rate(task, args.episodes, 256, record=True) for _ in runs)
        print(f"| {name} | {ours:,.0f} | {sync:,.0f} | {ours / sync:.1f}x | {evals:,.0f} | {collects:,.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
