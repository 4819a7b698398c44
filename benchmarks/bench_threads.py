"""Thread benchmark: forward and backward passes of the tasks' 2x128 GPT-2 at a given torch thread count.

Run it once per setting, beside whatever load the machine has, and compare the wall times: on a
machine whose cores are busy, OpenMP threads that spin while they wait can make two threads many
times slower than one (benchmarks/RESULTS.md, section 0). `OMP_WAIT_POLICY=PASSIVE` in the
environment lets waiting threads sleep instead.

    python benchmarks/bench_threads.py --threads 1 --passes 50
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_threads.py --threads 2 --passes 50
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from textrl.presets import tiny_model_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--passes", type=int, default=50)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel(tiny_model_config(vocab_size=64, max_length=128, pad_token_id=0, eos_token_id=1))
    ids = torch.randint(0, 64, (args.batch, args.tokens), generator=torch.Generator().manual_seed(0))
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.passes):
        model(ids).logits.sum().backward()
    print(f"threads {args.threads} (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}), {args.passes} passes "
          f"of {args.batch} x {args.tokens} tokens: wall {time.perf_counter() - wall:.2f} s, "
          f"CPU {time.process_time() - cpu:.2f} s, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
