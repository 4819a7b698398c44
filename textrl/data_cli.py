"""`textrl data build/list/show`: build task datasets and look at local ones from the command line."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np


def cmd_build(args: argparse.Namespace) -> int:
    """Build a task dataset (or find it already built) and print where it is."""
    import time

    from textrl.data import make_dataset
    from textrl.data.build import sized_dataset_id
    from textrl.data.store import dataset_dir, folder_of, written_line

    # the id the size and seed select (`...-n60000-s9-v1`), not the plain one, says whether it is built
    built = dataset_dir(sized_dataset_id(args.dataset_id, args.episodes, args.seed))
    existed, start = built.exists(), time.perf_counter()
    dataset = make_dataset(args.dataset_id, num_episodes=args.episodes, seed=args.seed, progress=not args.quiet)
    print(f"{dataset.spec.dataset_id}: already built, {dataset.total_episodes} episodes, {dataset.total_steps} "
          f"steps at {folder_of(dataset)}" if existed else written_line(dataset, time.perf_counter() - start))
    return 0


def _list_staging() -> None:
    """Remove the staging folders of killed builds and name the ones still in use or of unknown owner."""
    from textrl.data.store import clean_staging_leftovers, staging_leftovers

    for path in clean_staging_leftovers():
        print(f"removed {path}: the staging folder of a build that was killed")
    for path, alive in staging_leftovers():
        why = ("a build in progress" if alive else
               "its builder cannot be checked from here (another host or an older textrl); delete it if no build runs")
        print(f"staging folder {path}: {why}")


def cmd_list(args: argparse.Namespace) -> int:
    """Print the local datasets, then the task datasets that `build` can make, and leftovers of killed builds."""
    from textrl.data import load, local_dataset_ids, task_dataset_ids
    from textrl.data.store import datasets_root

    _list_staging()
    local = local_dataset_ids()
    print(f"local datasets under {datasets_root()}:" if local else f"no local datasets under {datasets_root()}")
    for dataset_id in local:
        try:
            ds = load(dataset_id)
            print(f"  {dataset_id}  {ds.total_episodes} episodes, {ds.total_steps} steps")
        except (ValueError, FileNotFoundError) as e:
            print(f"  {dataset_id}  unreadable: {e}")
    buildable = [i for i in task_dataset_ids() if i not in local]
    if buildable:
        print("task datasets that `textrl data build ID` makes:")
        for dataset_id in buildable:
            print(f"  {dataset_id}")
    return 0


def describe(dataset: Any, examples: int = 3) -> str:
    """A readable summary of a dataset: size, return statistics, reference scores and a few episodes."""
    from textrl.data import episode_texts, load, pack
    from textrl.data.store import env_id_of, folder_of
    from textrl.tasks.base import normalized_score

    dataset = load(dataset)
    meta = dataset.storage.metadata
    returns = pack(dataset).returns.double().numpy()
    lo, hi = meta.get("ref_min_score"), meta.get("ref_max_score")
    lines = [
        f"{dataset.spec.dataset_id}  ({folder_of(dataset)})",
        f"  env: {env_id_of(dataset) or 'none'}   behaviour: {meta.get('algorithm_name')}",
        (f"  episodes: {dataset.total_episodes}   steps: {dataset.total_steps}   "
        f"mean length: {dataset.total_steps / max(dataset.total_episodes, 1):.2f}"),
        (f"  return: mean {returns.mean():.4f}  std {returns.std():.4f}  min {returns.min():.4f}  "
        f"median {np.median(returns):.4f}  max {returns.max():.4f}"),
        f"  reference scores: min {lo}  max {hi}",
    ]
    if lo is not None and hi is not None and hi != lo:
        lines.append(f"  normalised score of the data: {normalized_score(returns.mean(), lo, hi):.1f}")
    lines.append(f"  description: {meta.get('description')}")
    shown = list(range(min(examples, dataset.total_episodes)))
    for i, (prompt, text) in zip(shown, episode_texts(dataset, shown)):
        lines.append(f"  episode {i} (return {returns[i]:.4f}): prompt {prompt!r}\n      {text}")
    return "\n".join(lines)


def cmd_show(args: argparse.Namespace) -> int:
    """Print a dataset's summary (an id or a dataset folder)."""
    print(describe(args.dataset, args.examples))
    return 0


def add_data_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Register `data` (with build, list and show) on the `textrl` command's subparsers."""
    data = subparsers.add_parser("data", help="build, list and inspect offline (Minari) datasets")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = actions.add_parser("build", help="build a task dataset such as textrl/randomwalks/random-v1")
    p.add_argument("dataset_id", metavar="ID", help="textrl/<task>/<tier>-v1 (see `textrl data list`)")
    p.add_argument("--episodes", type=int, default=None,
                   help="number of episodes (default 1000; another size builds the id ...-nN-vN)")
    p.add_argument("--seed", type=int, default=None,
                   help="collection seed (default 0; another seed builds the id ...-sS-vN)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_build)
    p = actions.add_parser("list", help="list local datasets and the task datasets that can be built")
    p.set_defaults(func=cmd_list)
    p = actions.add_parser("show", help="episodes, steps, returns, reference scores and a few decoded episodes")
    p.add_argument("dataset", metavar="ID", help="a dataset id or a dataset folder")
    p.add_argument("--examples", type=int, default=3, help="decoded episodes to print (default 3)")
    p.set_defaults(func=cmd_show)
