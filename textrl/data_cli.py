"""`textrl data build | list | show`: task datasets from the command line."""

from __future__ import annotations

import argparse

import numpy as np


def add_data_subcommands(sub: argparse._SubParsersAction) -> None:
    """Register `textrl data` and its subcommands."""
    data = sub.add_parser("data", help="build, list and inspect offline datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = dsub.add_parser("build", help="build a task dataset (e.g. textrl/randomwalks/random-v0)")
    p.add_argument("dataset_id")
    p.add_argument("--episodes", type=int, default=None, help="number of episodes (default: the tier's)")
    p.add_argument("--seed", type=int, default=None, help="collection seed (default 0)")
    p.set_defaults(func=_build)
    p = dsub.add_parser("list", help="list local datasets")
    p.set_defaults(func=_list)
    p = dsub.add_parser("show", help="statistics and a few decoded episodes of a dataset")
    p.add_argument("dataset_id")
    p.add_argument("--examples", type=int, default=3, help="decoded episodes to print")
    p.set_defaults(func=_show)


def _build(args: argparse.Namespace) -> int:
    from textrl.data import make_dataset

    ds = make_dataset(args.dataset_id, num_episodes=args.episodes, seed=args.seed)
    print(f"{args.dataset_id}: {ds.total_episodes} episodes, {ds.total_steps} steps")
    return 0


def _list(args: argparse.Namespace) -> int:
    from textrl.data import local_dataset_ids
    from textrl.data.store import datasets_root

    ids = local_dataset_ids()
    print("\n".join(ids) if ids else f"no datasets under {datasets_root()}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from textrl.data import load, pack

    ds = load(args.dataset_id)
    packed = pack(ds)
    returns = packed.returns.numpy()
    meta = ds.storage.metadata
    print(f"dataset      {args.dataset_id}")
    print(f"episodes     {ds.total_episodes}")
    print(f"steps        {ds.total_steps}")
    print(f"returns      mean {returns.mean():.4f}  std {returns.std():.4f}  min {returns.min():.4f}  "
          f"max {returns.max():.4f}")
    print(f"references   ref_min_score {meta.get('ref_min_score')}  ref_max_score {meta.get('ref_max_score')}")
    print(f"behaviour    {meta.get('algorithm_name')}")
    episodes = list(ds.storage.get_episode_metadata(range(min(args.examples, ds.total_episodes))))
    for i, ep in enumerate(episodes):
        text = ep.get("options", {}).get("text", "")
        print(f"episode {i}: return {returns[i]:.3f}  {text.decode() if isinstance(text, bytes) else text}")
    return 0 if np.isfinite(returns).all() else 1
