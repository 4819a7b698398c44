"""Why a benchmark run scores what it scores: its test rollouts and, for Q-learning agents, its Q/V statistics.

    python benchmarks/inspect_run.py BENCH_OUT/work/<task>-<tier>__<agent>__k<K>__s<S> [--beta B] [--episodes N]
        [--temperature T] [--betas B [B ...]]

Loads the run's final checkpoint and prints (1) with `--betas`, the protocol's validation and test
scores at each of those betas (outside the run's grid, say: would a beta the grid lacks have been
chosen?); (2) the test rollouts at the beta the run chose last (or `--beta`): score, episode lengths,
how episodes end (the last reward's values), three example texts; (3) on 256 episodes of the
training data: the mean data return against V at the first state (is V calibrated?), and the
advantage Q - V at the data's actions and at the agent's preferred token (how far the heads push
the LM away from the data).
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from agents import load_agent
from agents.benchmark import dataset_id
from agents.protocol import TEST_SEED, VALIDATION_SEED, cell_score, scoring_episodes, split_tasks
from textrl.data import make_dataset, pack
from textrl.rollout import collect_episodes, evaluate
from textrl.trainer import find_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder under the benchmark's work/ folder")
    parser.add_argument("--beta", type=float, default=None, help="default: the beta the run chose last")
    parser.add_argument("--episodes", type=int, default=None, help="test rollouts (default: the protocol's test "
                        "episodes of the task, 128 unless it sizes them)")
    parser.add_argument("--temperature", type=float, default=None, help="act with this temperature (0: greedy) "
                        "instead of the run's")
    parser.add_argument("--betas", type=float, nargs="+", default=None,
                        help="also score these betas on the protocol's validation and test episodes")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    name = os.path.basename(os.path.normpath(args.run))
    cell, entry = name.split("__")[:2]
    task_name, tier = cell.rsplit("-", 1)
    agent = load_agent(find_checkpoint(args.run))
    if args.temperature is not None:
        agent.config = agent.config.evolve(method=dict(gen_kwargs=dict(temperature=args.temperature)))
    beta = args.beta
    if beta is None and entry not in ("bc", "filtered_bc", "cql"):
        records = [json.loads(line) for line in open(os.path.join(args.run, "metrics.jsonl"), encoding="utf-8")]
        beta = [r["eval/beta"] for r in records if "eval/beta" in r][-1]
    valid, test = split_tasks(task_name)
    validation_episodes, test_episodes = scoring_episodes(task_name)
    rollouts = args.episodes or test_episodes
    if args.betas:
        print(f"{name}: temperature {agent.config.method.gen_kwargs.temperature:g}, validation ({validation_episodes} "
              f"episodes) and test ({test_episodes}) score by beta")
        for b in args.betas:
            scores = [cell_score(task_name, split, evaluate(functools.partial(agent.policy, beta=b), split,
                                                            num_episodes=n, seed=seed).returns)
                      for split, n, seed in ((valid, validation_episodes, VALIDATION_SEED),
                                             (test, test_episodes, TEST_SEED))]
            print(f"  beta {b:g}: validation {scores[0]:.1f}, test {scores[1]:.1f}")
    episodes = collect_episodes(test, functools.partial(agent.policy, beta=beta), rollouts, seed=TEST_SEED)
    returns = np.array([e.rewards.sum() for e in episodes])
    lengths = np.array([len(e.actions) for e in episodes])
    ends = collections.Counter(float(e.rewards[-1]) for e in episodes)
    print(f"{name}: beta {beta}, temperature {agent.config.method.gen_kwargs.temperature:g}, {rollouts} test episodes: score {test.normalized_score(returns).mean():.1f}, "
          f"return {returns.mean():.3f}, length median {np.median(lengths):.0f} (min {lengths.min()}, "
          f"max {lengths.max()})")
    print("last reward of each episode: " + ", ".join(f"{k:g}: {v}" for k, v in sorted(ends.items())))
    for e in episodes[:3]:
        print(f"  return {e.rewards.sum():g}: {e.text[-160:]!r}")

    model = agent.model
    if model is None or model.heads is None or model.heads.v_head is None:
        return
    data = pack(make_dataset(dataset_id(task_name, tier), progress=False))
    rows = np.random.default_rng(0).choice(len(data.returns), size=min(256, len(data.returns)), replace=False)
    batch = data.batch(torch.as_tensor(np.sort(rows)))
    model.eval()
    with torch.no_grad():
        out = model(batch)
        q = torch.minimum(*out.qs) if len(out.qs) == 2 else out.qs[0]
        v = out.vs[:, :-1]
        mask = batch["action_mask"].bool()
        q_taken = q.gather(-1, out.actions[..., None])[..., 0]
        adv_taken = (q_taken - v)[mask]
        adv_best = (q.max(-1).values - v)[mask]
    print(f"training data ({len(rows)} episodes): mean return {batch['returns'].mean():.3f}, V(s0) mean "
          f"{out.vs[:, 0].mean():.3f}; Q - V at the data's actions: mean {adv_taken.mean():.3f}, std "
          f"{adv_taken.std():.3f}; at the argmax token: mean {adv_best.mean():.3f} (beta x this shifts the logits)")


if __name__ == "__main__":
    main()
