"""Padding benchmark: forward and backward of one task-preset batch as one minibatch, against the
same rows sorted by length and split into k minibatches (what `train.minibatch_size` does).

Every variant runs the agent's own loss on the same 32 rows, so only the padding differs. Prints,
per k, the median time over `--batches` random batches and its ratio to the whole batch. Also
prints how much a whole batch pads: its expected longest row against the mean row.

    python benchmarks/bench_minibatches.py --task wordle --agent bc --splits 1 2 4 --batches 30
    python benchmarks/bench_minibatches.py --task endgames --agent bc --splits 1 2 4 8 --batches 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from agents import AGENTS
from agents.benchmark import cell_dataset
from textrl.data.cache import pack
from textrl.presets import task_config
from textrl.trainer import split_by_length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="wordle")
    parser.add_argument("--tier", default="mixed")
    parser.add_argument("--agent", default="bc", choices=sorted(AGENTS))
    parser.add_argument("--splits", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    packed = pack(cell_dataset(args.task, args.tier, progress=True))
    config = task_config(args.task, args.agent)
    agent = AGENTS[args.agent](config)
    model = agent.build_model(config.model.model_path.vocab_size)
    size = config.train.batch_size
    lengths = packed.lengths.float()
    generator = torch.Generator().manual_seed(0)
    longest = [lengths[torch.randperm(len(packed), generator=generator)[:size]].max() for _ in range(500)]
    print(f"{args.task} {args.tier}: batches of {size} pad to {float(torch.stack(longest).mean()):.1f} tokens, "
          f"rows hold {float(lengths.mean()):.1f} on average")

    times: dict[int, list[float]] = {k: [] for k in args.splits}
    for _ in range(args.batches):
        rows = torch.randperm(len(packed), generator=generator)[:size]
        for k in args.splits:
            start = time.perf_counter()
            for chunk in split_by_length(rows, k, packed.lengths):
                batch = packed.batch(chunk)
                loss, _ = agent.loss(model, batch)
                (loss * batch["action_mask"].sum()).backward()
            times[k].append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
    whole = statistics.median(times[args.splits[0]])
    print(f"| {args.agent} minibatches | median ms | vs {args.splits[0]} |\n| --- | --- | --- |")
    for k in args.splits:
        median = statistics.median(times[k])
        print(f"| {k} | {1000 * median:.1f} | {whole / median:.2f}x |")


if __name__ == "__main__":
    main()
