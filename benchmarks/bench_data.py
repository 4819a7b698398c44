"""Data pipeline benchmark: write rate, disk size, packing, Minari's read rate, cached reload, batches, memory.

Sources: task datasets (`randomwalks`: short single-turn walks, random tier; `maze`: multi-turn,
mixed tier) and `from_samples` imports streamed from a generator (`samples`: short two-turn
dialogues; `text256`/`text512`: string samples of 256 and 512 tokens over a 1,000-word
vocabulary). Each phase runs in its own process so its peak resident memory is its own. Prints a
markdown table (and writes it with `--out`).

    python benchmarks/bench_data.py --rows randomwalks:10000,100000,1000000 samples:10000,100000,1000000 \\
        maze:10000,100000 text256:2000 text512:2000        (results: benchmarks/RESULTS.md)
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
TEXTS = {"samples": 0, "text256": 256, "text512": 512}
BATCH_SIZE = 128
MINARI_READ = 2000  # episodes read through Minari's own reader to measure its rate


def _peak_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _du_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _id(source: str, n: int) -> str:
    return f"bench/{source}-{n}-v1"


def _tokenizer():
    """A 1,000-word word-level tokenizer built locally, with pad and eos tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<eos>", "user:", "bot:"] + [f"w{i}" for i in range(996)]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>"), words[4:]


def _samples(source: str, n: int, words: list[str]):
    """(sample, reward) pairs, generated lazily as a reader of a file would yield them."""
    import numpy as np

    rng = np.random.default_rng(0)
    length = TEXTS[source]
    for _ in range(n):
        if length:  # BOS + (length - 2) words + EOS = length tokens
            yield " ".join(words[i] for i in rng.integers(0, len(words), length - 2)), float(rng.random())
        else:
            a, b = rng.integers(0, len(words), (2, 3))
            yield ["user: " + " ".join(words[i] for i in a), "bot: " + " ".join(words[i] for i in b)], float(rng.random())


def phase_write(source: str, n: int) -> dict:
    """Write the dataset (and its packed cache): wall and CPU time of the writer, apart from task collection.

    The totals include collection; CPU time is the process's (one thread: the writer runs in the
    caller's); the load average (start and end) says how much of the cores the run could get.

    For imports the rate includes tokenizing and checking the text (that is what `from_samples` costs).
    """
    from textrl.data.store import dataset_dir

    t, cpu, load = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    if source in TEXTS:
        from textrl.data import from_samples

        tok, words = _tokenizer()
        max_length = TEXTS[source] or 12
        ds = from_samples(_samples(source, n, words), None, tok, _id(source, n), max_length=max_length,
                          progress=False)
        collect_s = collect_cpu = 0.0
    else:
        from gymnasium import spaces

        from textrl.data.build import CHUNK
        from textrl.data.writer import write_dataset
        from textrl.env import observation_space
        from textrl.rollout import collect_episodes
        from textrl.tasks import get_task

        task = get_task(source)
        policy = task.behaviour_policy(task.tiers[TASKS[source]])
        collect_s = collect_cpu = 0.0

        def chunks():
            nonlocal collect_s, collect_cpu
            for start in range(0, n, CHUNK):
                t0, c0 = time.perf_counter(), time.process_time()
                episodes = collect_episodes(task, policy, min(CHUNK, n - start), seed=start, progress=False)
                collect_s += time.perf_counter() - t0
                collect_cpu += time.process_time() - c0
                yield episodes

        ds = write_dataset(_id(source, n), chunks(), observation_space(task), spaces.Discrete(task.vocab_size),
                           task.tokenizer, {"algorithm_name": "bench", "ref_min_score": 0.0, "ref_max_score": 1.0},
                           {"source": "bench"})
    total, cpu = time.perf_counter() - t, time.process_time() - cpu
    folder = dataset_dir(_id(source, n))
    return {"total_s": total, "write_eps_per_s": n / (total - collect_s), "write_cpu_eps_per_s": n / (cpu - collect_cpu),
            "write_cpu_s": cpu, "load": f"{load:.1f}-{os.getloadavg()[0]:.1f}", "steps": ds.total_steps,
            "disk_mib": _du_mib(folder / "data"), "packed_mib": _du_mib(folder / "packed"),
            "write_peak_mib": _peak_mib()}


def phase_pack(source: str, n: int) -> dict:
    """`pack` in a fresh process (it finds the cache the writer left), then Minari's own reader rate."""
    import minari

    from textrl.data import pack

    t = time.perf_counter()
    packed = pack(_id(source, n))
    seconds = time.perf_counter() - t
    figures = {"pack_s": seconds, "pack_eps_per_s": len(packed) / seconds, "pack_peak_mib": _peak_mib(),
               "tokens": packed.num_tokens}
    ds = minari.load_dataset(_id(source, n))
    k = min(MINARI_READ, n)
    t = time.perf_counter()
    for _ in ds.iterate_episodes(range(k)):
        pass
    figures["minari_read_eps_per_s"] = k / (time.perf_counter() - t)
    return figures


def phase_reload(source: str, n: int) -> dict:
    """Open the packed cache in a fresh process, then assemble shuffled training batches for one epoch."""
    from textrl.data import pack

    t = time.perf_counter()
    packed = pack(_id(source, n))
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


def run_phase(phase: str, source: str, n: int, root: Path) -> dict:
    """Run one phase in a child process (its own peak memory) and return its figures."""
    env = dict(os.environ, MINARI_DATASETS_PATH=str(root))
    out = subprocess.run([sys.executable, __file__, "--phase", phase, source, str(n)], env=env, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _row(source: str, n: int, f: dict) -> str:
    return (f"| {source} | {n} | {f['steps']} | {f['write_eps_per_s']:.0f} | {f['write_cpu_eps_per_s']:.0f} "
            f"| {f['total_s']:.1f} | {f['write_cpu_s']:.1f} | {f['load']} "
            f"| {f['disk_mib']:.1f} | {1024 * f['disk_mib'] / n:.2f} | {f['packed_mib']:.1f} "
            f"| {f['disk_mib'] / max(f['packed_mib'], 1e-9):.1f} | {f['write_peak_mib']:.0f} | {f['pack_s']:.2f} "
            f"| {f['pack_eps_per_s']:.0f} | {f['pack_peak_mib']:.0f} | {f['minari_read_eps_per_s']:.0f} "
            f"| {f['reload_s']:.3f} | {f['batch_tokens_per_s'] / 1e6:.2f}M | {f['reload_peak_mib']:.0f} |")


HEADER = ("| source | episodes | steps | write (ep/s) | write (ep per CPU-s) | write total (s) | write total CPU (s) | load (1-min avg, start-end) | Minari data (MiB) | KiB per episode "
          "| packed (MiB) | data / packed | write peak RSS (MiB) | pack (s) | pack (ep/s) | pack peak RSS (MiB) "
          "| Minari reader (ep/s) | cached reload (s) | batch assembly (tokens/s) | reload peak RSS (MiB) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=["randomwalks:10000,100000", "samples:10000,100000"],
                        help="SOURCE:N[,N...] with SOURCE in " + ", ".join([*TASKS, *TEXTS]))
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--phase", nargs=3, metavar=("PHASE", "SOURCE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        phase, source, n = args.phase
        print(json.dumps(PHASES[phase](source, int(n))))
        return
    todo = []
    for spec in args.rows:
        source, _, sizes = spec.partition(":")
        if source not in TASKS and source not in TEXTS:
            parser.error(f"unknown source {source!r}: one of {', '.join([*TASKS, *TEXTS])}")
        todo += [(source, int(n)) for n in sizes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="textrl-bench-data-"))
    lines = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    start = time.perf_counter()
    try:
        for source, n in todo:
            figures = {}
            for phase in PHASES:
                figures.update(run_phase(phase, source, n, root))
            shutil.rmtree(root / "bench", ignore_errors=True)  # one dataset on disk at a time
            lines.append(_row(source, n, figures))
            print(lines[-1], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    table = "\n".join(lines)
    print(table)
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.out:
        from textrl.io import atomic_write_text

        atomic_write_text(args.out, table + "\n")


if __name__ == "__main__":
    main()
