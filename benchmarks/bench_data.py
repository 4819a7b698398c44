"""Data pipeline benchmark: Minari write rate, disk size, packing, cached reload, batch assembly, memory.

For RandomWalks (short single-turn episodes, random tier) and Maze (multi-turn, mixed tier) at
10k and 100k episodes (`--quick`: 10k only). Each phase runs in its own process so its peak
resident memory is its own. Prints a markdown table (and writes it with `--out`).

    python benchmarks/bench_data.py [--quick] [--out table.md]  (results: benchmarks/RESULTS.md)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASKS = {"randomwalks": "random", "maze": "mixed"}
BATCH_SIZE = 128


def _peak_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _du_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def phase_write(task_name: str, n: int) -> dict:
    """Collect episodes of the tier's behaviour policy and write them as a Minari dataset; time each part."""
    from gymnasium import spaces

    from textrl.data.build import CHUNK
    from textrl.data.store import dataset_dir, write_dataset
    from textrl.env import observation_space
    from textrl.rollout import collect_episodes
    from textrl.tasks import get_task

    task = get_task(task_name)
    policy = task.behaviour_policy(task.tiers[TASKS[task_name]])
    collect_s = 0.0

    def chunks():
        nonlocal collect_s
        for start in range(0, n, CHUNK):
            t = time.perf_counter()
            episodes = collect_episodes(task, policy, min(CHUNK, n - start), seed=start)
            collect_s += time.perf_counter() - t
            yield episodes

    dataset_id = f"bench/{task_name}-{n}-v0"
    t = time.perf_counter()
    ds = write_dataset(dataset_id, chunks(), observation_space(task), spaces.Discrete(task.vocab_size),
                       task.tokenizer, {"algorithm_name": "bench", "ref_min_score": 0.0, "ref_max_score": 1.0},
                       {"source": "bench"})
    total = time.perf_counter() - t
    return {"write_eps_per_s": n / (total - collect_s), "collect_s": collect_s, "steps": ds.total_steps,
                "disk_mib": _du_mib(dataset_dir(dataset_id) / "data"), "write_peak_mib": _peak_mib()}


def phase_pack(task_name: str, n: int) -> dict:
    """Pack the dataset (no cache yet): time, peak memory, cache size."""
    from textrl.data import load, pack
    from textrl.data.store import folder_of

    ds = load(f"bench/{task_name}-{n}-v0")
    base = _peak_mib()
    t = time.perf_counter()
    packed = pack(ds)
    seconds = time.perf_counter() - t
    return {"pack_s": seconds, "pack_peak_mib": _peak_mib(), "pack_peak_over_start_mib": _peak_mib() - base,
                "packed_mib": _du_mib(folder_of(ds) / "packed"), "tokens": packed.num_tokens}


def phase_reload(task_name: str, n: int) -> dict:
    """Open the packed cache in a fresh process, then assemble shuffled training batches for one epoch."""
    from textrl.data import pack

    t = time.perf_counter()
    packed = pack(f"bench/{task_name}-{n}-v0")
    reload_s = time.perf_counter() - t
    tokens, batches = 0, 0
    t = time.perf_counter()
    for batch in packed.batches(BATCH_SIZE, seed=0):
        tokens += int(batch["attention_mask"].sum())
        batches += 1
    seconds = time.perf_counter() - t
    return {"reload_s": reload_s, "batch_tokens_per_s": tokens / seconds, "batch_ms": 1000 * seconds / batches,
                "reload_peak_mib": _peak_mib()}


PHASES = {"write": phase_write, "pack": phase_pack, "reload": phase_reload}


def run_phase(phase: str, task_name: str, n: int, root: Path) -> dict:
    """Run one phase in a child process (its own peak memory) and return its figures."""
    env = dict(os.environ, MINARI_DATASETS_PATH=str(root))
    out = subprocess.run([sys.executable, __file__, "--phase", phase, task_name, str(n)], env=env, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k episodes only")
    parser.add_argument("--sizes", type=int, nargs="+", help="episode counts (default 10000 100000)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--phase", nargs=3, metavar=("PHASE", "TASK", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        phase, task_name, n = args.phase
        print(json.dumps(PHASES[phase](task_name, int(n))))
        return
    sizes = args.sizes or ([10_000] if args.quick else [10_000, 100_000])
    root = Path(tempfile.mkdtemp(prefix="textrl-bench-data-"))
    rows = []
    start = time.perf_counter()
    try:
        for task_name in args.tasks:
            for n in sizes:
                figures = {}
                for phase in PHASES:
                    figures.update(run_phase(phase, task_name, n, root))
                rows.append((task_name, n, figures))
                print(f"{task_name} {n}: {json.dumps({k: round(v, 3) for k, v in figures.items()})}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    header = ("| task | episodes | steps | Minari write (ep/s) | hdf5 size (MiB) | pack (s) | packed size (MiB) "
              "| pack peak RSS (MiB) | cached reload (s) | batch assembly (tokens/s) | ms per batch of 128 |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for task_name, n, f in rows:
        lines.append(f"| {task_name} | {n} | {f['steps']} | {f['write_eps_per_s']:.0f} | {f['disk_mib']:.1f} "
                     f"| {f['pack_s']:.1f} | {f['packed_mib']:.1f} | {f['pack_peak_mib']:.0f} | {f['reload_s']:.3f} "
                     f"| {f['batch_tokens_per_s'] / 1e6:.2f}M | {f['batch_ms']:.2f} |")
    table = "\n".join(lines)
    print(table)
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.out:
        from textrl.io import atomic_write_text

        atomic_write_text(args.out, table + "\n")


if __name__ == "__main__":
    main()
