"""The benchmark harness: entries x tasks x tiers x seeds under the protocol of `agents.protocol`.

A cell is a task and a tier, or your own dataset (`datasets=`, `textrl bench --dataset ID`: see
`agents.dataset_cells`). Some runs need others: the other seeds of a grid entry run at the point
chosen on validation once every grid point on the tuning seed has ended, and the agents initialised
from BC once the BC run of their cell and seed has. Every run starts as soon as what it needs has
ended, so `jobs` worker processes share the runs without waiting for a whole phase; a free worker takes
a run whose needs have ended before one that needs nothing, so cells are finished one after another and
a benchmark stopped part-way (or run in parts) leaves whole cells behind.

Each finished run is stored as `runs/<key>.json` and never redone; its key ends with a digest of
every setting that changes its result (the full config, the scoring episodes, the run it starts
from), so a benchmark with other settings reuses only exact matches and says how many. A run
checkpoints at every evaluation into `work/<key>/`, so an interrupted benchmark resumes each run
from its last checkpoint when started again. A finished run keeps only its final checkpoint (the
BC model the `*_bc` entries start from). One benchmark at a time writes into an output folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import queue
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from tqdm.auto import tqdm

from agents.dataset_cells import dataset_cell, dataset_fingerprint, dataset_preset
from agents.protocol import (
    ENTRIES,
    EPISODES,
    EVALUATIONS,
    TEST_SEED,
    TIERS,
    VALIDATION_SEED,
    Entry,
    Run,
    Summary,
    choose_knob,
    data_score,
    own_data,
    run_key,
    score_key,
    scoring_episodes,
    scoring_fn,
    summarize_cell,
)
from agents.registry import AGENTS
from agents.reports import write_reports
from textrl.config import TRLConfig
from textrl.data import load, make_dataset
from textrl.data.build import sized_dataset_id, task_dataset_id
from textrl.io import atomic_write_text
from textrl.presets import task_config
from textrl.runs import LOCK_FILE, FolderBusyError, RunLock
from textrl.trainer import find_checkpoint

Spec = tuple[str, str, str, int, int]
"""A run of the plan: (task, tier, entry, knob, seed)."""


@dataclass(frozen=True)
class Plan:
    """What to run: entries, cells, seeds, and the per-run settings that override the task presets."""

    entries: tuple[str, ...]
    cells: tuple[tuple[str, str], ...]  # (task, tier), or (env id, dataset id) of your own dataset
    seeds: tuple[int, ...]
    total_steps: Optional[int] = None
    eval_interval: Optional[int] = None
    validation_episodes: Optional[int] = None  # per evaluation, every cell (None: each task's, `scoring_episodes`)
    test_episodes: Optional[int] = None
    episodes: Optional[int] = None  # dataset size of every task cell (None: each task's, `protocol.EPISODES`)

    @property
    def tuning_seed(self) -> int:
        """The seed on which every training-grid point runs (the first)."""
        return self.seeds[0]


def dataset_id(task: str, tier: str, episodes: Optional[int] = None) -> str:
    """The dataset a cell trains on: a task dataset of `episodes` episodes (None: the task's size in
    `protocol.EPISODES`, else 1,000), e.g. `textrl/maze/mixed-v1` or `textrl/wordle/mixed-n10000-v1`, or your
    own (the cell's tier, whatever `episodes` says)."""
    if own_data(task):
        return tier
    return sized_dataset_id(task_dataset_id(task, tier), episodes or EPISODES.get(task))


def cell_dataset(task: str, tier: str, episodes: Optional[int] = None, progress: bool = False) -> Any:
    """The dataset of a cell (`dataset_id`): a task dataset (built on first use) or your own."""
    return load(tier) if own_data(task) else make_dataset(dataset_id(task, tier, episodes), progress=progress)


def make_plan(agents: Sequence[str], tasks: Sequence[str], seeds: int | Sequence[int],
              tiers: Optional[Sequence[str]] = None, total_steps: Optional[int] = None,
              eval_interval: Optional[int] = None, validation_episodes: Optional[int] = None,
              test_episodes: Optional[int] = None, datasets: Sequence[str] = (), episodes: Optional[int] = None) -> Plan:
    """The plan, after refusing every bad argument up front (before any folder is made or run started).

    `datasets` adds a cell per dataset made with `from_samples(..., env=...)` (`tiers` and `episodes`, the
    task cells' dataset size, do not apply to them). Entries initialised from BC bring the `bc` entry with them.
    """
    for name in agents:
        if name not in ENTRIES:
            raise ValueError(f"unknown agent '{name}'; choose from {', '.join(ENTRIES)}")
    for name in tasks:
        if name not in TIERS:
            raise ValueError(f"unknown task '{name}'; choose from {', '.join(TIERS)}")
    if not agents or not (tasks or datasets):
        raise ValueError("give at least one agent and one task or dataset (--agents, --tasks, --dataset)")
    if isinstance(seeds, bool) or (isinstance(seeds, int) and seeds < 1):
        raise ValueError(f"seeds = {seeds}: give at least one seed (--seeds N runs seeds 0..N-1)")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list or any(not isinstance(s, int) or s < 0 for s in seed_list) or len(set(seed_list)) < len(seed_list):
        raise ValueError(f"seeds = {seeds!r}: give a positive number of seeds or a list of distinct seeds >= 0")
    for name, value in (("steps", total_steps), ("eval interval", eval_interval),
                        ("val episodes", validation_episodes), ("eval episodes", test_episodes),
                        ("episodes", episodes)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"--{name.replace(' ', '-')} {value}: the {name} must be at least 1")
    cells = [(t, tier) for t in tasks for tier in TIERS[t] if tiers is None or tier in tiers]
    if tasks and not cells:
        known = sorted({tier for t in tasks for tier in TIERS[t]})
        raise ValueError(f"tiers {', '.join(tiers or [])}: none is benchmarked on these tasks; choose from "
                         f"{', '.join(known)}")
    cells += list(dict.fromkeys(dataset_cell(d) for d in datasets))  # each refused with why it cannot run
    entries = list(dict.fromkeys(agents))
    if any(ENTRIES[e].from_bc for e in entries) and "bc" not in entries:
        entries.insert(0, "bc")
    return Plan(tuple(entries), tuple(cells), tuple(seed_list), total_steps, eval_interval, validation_episodes,
                test_episodes, episodes)


# ---------------------------------------------------------------------- one run


def _latest_checkpoint(run_dir: Path) -> Optional[Path]:
    """The newest checkpoint of a run, or None."""
    try:
        return find_checkpoint(run_dir)
    except FileNotFoundError:
        return None


def bc_model_dir(plan: Plan, work_dir: Path, task: str, tier: str, seed: int) -> Path:
    """The transformer of a finished BC run (its final checkpoint), which the `*_bc` entries start from."""
    last = _latest_checkpoint(work_dir / spec_key(plan, (task, tier, "bc", 0, seed)))
    if last is None:
        raise FileNotFoundError(f"the BC run of {task}/{tier} seed {seed} has no checkpoint in {work_dir}: "
                                "run the bc entry first")
    return last / "agent" / "model"


def run_config(plan: Plan, spec: Spec, model_path: Optional[str] = None) -> TRLConfig:
    """The config of one run (without its folder): the task preset (`text_config` for your own dataset), the
    plan's steps, the entry's knobs."""
    task, tier, entry, knob, seed = spec
    e = ENTRIES[entry]
    train: dict[str, Any] = dict(seed=seed, progress_bar=False, save_best=False, tracker="jsonl")
    if plan.total_steps is not None:
        train["total_steps"] = plan.total_steps
    config = dataset_preset(tier, e.agent, **train) if own_data(task) else task_config(task, e.agent, **train)
    interval = plan.eval_interval or -(-config.train.total_steps // EVALUATIONS)
    model = dict(e.model) | ({"model_path": model_path} if model_path is not None else {})
    method = dict(e.grid[knob])
    if own_data(task) and not e.temperatures:  # an entry without a temperature knob acts greedily, as in task_config
        method["gen_kwargs"] = dict(temperature=0.0)
    return config.evolve(train=dict(eval_interval=interval, checkpoint_interval=min(interval, config.train.total_steps)),
                         method=method, model=model)


def spec_key(plan: Plan, spec: Spec) -> str:
    """The key of a run: what it is, then a digest of every setting that changes its result (the config,
    the dataset, the betas, temperatures and episodes it is scored with, and the key of the BC run it starts from)."""
    task, tier, entry, knob, seed = spec
    e = ENTRIES[entry]
    validation_episodes, test_episodes = scoring_episodes(task, plan.validation_episodes, plan.test_episodes)
    settings = {
        "config": run_config(plan, spec).to_dict(), "dataset": dataset_id(task, tier, plan.episodes), "betas": list(e.betas),
        "temperatures": list(e.temperatures),
        "validation": [VALIDATION_SEED, validation_episodes], "test": [TEST_SEED, test_episodes],
        "starts_from": spec_key(plan, (task, tier, "bc", 0, seed)) if e.from_bc else None,
    }
    if own_data(task):  # your own dataset may be made again under its id: its content and env are part of the key
        settings["data"] = dataset_fingerprint(tier)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=repr).encode()).hexdigest()[:12]
    return run_key(*spec, digest)


def _curves(run_dir: Path) -> tuple[list[int], dict[tuple[Optional[float], Optional[float]], list[float]], list[float],
                                    list[float], list[float]]:
    """(steps, validation curve per acting value (beta, temperature), test curve, chosen betas, chosen
    temperatures) from a run's metrics.jsonl; the last record of a step wins (a resumed run may log a step
    twice) and a torn last line is skipped."""
    records: dict[int, dict[Any, float]] = {}
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "eval/test" in record:
            records[int(record["step"])] = {
                score_key(k[len("eval/"):]) or k: float(v) for k, v in record.items() if k.startswith("eval/")}
    steps = sorted(records)
    val: dict[tuple[Optional[float], Optional[float]], list[float]] = {}
    for step in steps:
        for key, value in records[step].items():
            if isinstance(key, tuple) and key[0] == "val":
                val.setdefault(key[1:], []).append(value)
    return (steps, val, [records[s][("test", None, None)] for s in steps],
            [records[s]["eval/beta"] for s in steps if "eval/beta" in records[s]],
            [records[s]["eval/temperature"] for s in steps if "eval/temperature" in records[s]])


def _clear_unstarted(run_dir: Path) -> None:
    """Empty the folder of an attempt killed before its first checkpoint, under its lock: a folder another
    process holds is never touched (that process is named instead)."""
    if not run_dir.is_dir():
        return
    lock = RunLock(run_dir)
    lock.acquire()
    try:
        for entry in run_dir.iterdir():
            if entry.name == LOCK_FILE:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    finally:
        lock.release()


class PrefixedLines:
    """A text stream that starts every line with `prefix` (a worker's lines name their run) and drops a
    line equal to the one before it."""

    def __init__(self, stream: Any, prefix: str) -> None:
        self.stream, self.prefix, self.partial, self.last = stream, prefix, "", None

    def write(self, text: str) -> int:
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        for line in lines:
            if line.strip() and line != self.last:
                self.stream.write(f"{self.prefix}{line}\n")
            self.last = line
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def train_run(plan: Plan, task: str, tier: str, entry: str, knob: int, seed: int, work_dir: Path,
              progress: bool = False, prefix_lines: bool = False) -> Run:
    """Train one entry on one cell with one seed, scoring validation and test episodes at every evaluation.

    A run folder holding a checkpoint is resumed from it; one without is started afresh. With
    `prefix_lines` (a worker process) every line it prints starts with the run's key, e.g.
    `[maze-mixed__ilql__k0__s1]`: the workers' lines interleave.
    """
    e = ENTRIES[entry]
    spec = (task, tier, entry, knob, seed)
    key = spec_key(plan, spec)
    run_dir = work_dir / key
    start = str(bc_model_dir(plan, work_dir, task, tier, seed)) if e.from_bc else None
    config = run_config(plan, spec, start).evolve(train=dict(checkpoint_dir=str(run_dir), progress_bar=progress))
    last = _latest_checkpoint(run_dir)
    if last is None:
        _clear_unstarted(run_dir)  # only logs of an attempt killed before its first checkpoint
    started = time.perf_counter()
    if last is None or int(last.name.split("_")[1]) < config.train.total_steps:
        config = config.evolve(train=dict(resume_from_checkpoint=None if last is None else str(last)))
        agent = AGENTS[e.agent](config)
        with contextlib.redirect_stdout(PrefixedLines(sys.stdout, f"[{run_key(*spec)}] ")) if prefix_lines else \
                contextlib.nullcontext():
            agent.fit(cell_dataset(task, tier, plan.episodes), rollout_eval=False,
                      metric_fn=scoring_fn(task, e.betas, e.temperatures, plan.validation_episodes,
                                           plan.test_episodes, tier=tier))
    for old in sorted(run_dir.glob("step_*"))[:-1]:  # a finished run keeps its final checkpoint only
        shutil.rmtree(old, ignore_errors=True)
    steps, val, test, betas, temperatures = _curves(run_dir)
    return Run(task, tier, entry, knob, seed, steps, val, test, betas, time.perf_counter() - started,
               temperatures, key.rsplit("__", 1)[1])


def _import_all(modules: Sequence[str]) -> None:
    """Import the modules a user names (`--import`), each refused with its name when it does not import."""
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ValueError(f"--import {module}: {type(e).__name__}: {e}") from None


def _worker_init(threads: int, imports: tuple[str, ...] = ()) -> None:
    """A worker process: quiet, offline, deaf to Ctrl-C (the main process stops the workers and says how to
    resume), stopped when the main process is gone, `threads` torch threads (the cores are shared among
    workers), and the user's `imports`."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_quietly)  # stopped by the main process: unwind, free locks, say nothing
    threading.Thread(target=_stop_when_orphaned, args=(os.getppid(),), daemon=True).start()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.simplefilter("ignore")
    torch.set_num_threads(threads)
    _import_all(imports)


def _stop_when_orphaned(parent: int) -> None:
    """Stop this worker (SIGTERM to itself) once its main process is gone: a main process killed by SIGTERM
    or SIGKILL cannot stop its pool, and an orphaned worker would train on and hold its run folder's lock."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _exit_quietly(signum: int, frame: Any) -> None:
    """SIGTERM in a worker: exit through SystemExit, so locks and semaphores are released on the way out."""
    sys.exit(0)


def _train_spec(job: tuple[Plan, Spec, Path]) -> Run:
    """`train_run` of one spec, in a worker process."""
    plan, spec, work_dir = job
    return train_run(plan, *spec, work_dir=work_dir, prefix_lines=True)


class _Workers:
    """Trains specs `jobs` at a time in worker processes (here, one at a time, when `jobs` is 1) and hands each
    run back as it ends; more specs can be given while others train."""

    def __init__(self, plan: Plan, work_dir: Path, jobs: int, progress: bool, imports: tuple[str, ...]) -> None:
        self.plan, self.work_dir, self.progress = plan, work_dir, progress
        self.waiting: list[Spec] = []  # given, not yet handed back (in training, or queued)
        self.ended: queue.SimpleQueue = queue.SimpleQueue()  # (spec, run or a worker's error), as runs end
        self.pool = None
        if jobs > 1:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            self.pool = multiprocessing.get_context("spawn").Pool(jobs, initializer=_worker_init,
                                                                  initargs=(threads, imports))

    def submit(self, spec: Spec) -> None:
        """Train `spec` once a worker is free."""
        self.waiting.append(spec)
        if self.pool is not None:
            self.pool.apply_async(_train_spec, ((self.plan, spec, self.work_dir),),
                                  callback=lambda run: self.ended.put((spec, run)),
                                  error_callback=lambda error: self.ended.put((spec, error)))

    def next_ended(self) -> tuple[Spec, Run]:
        """The next run to end and its spec (a worker's error is raised here)."""
        if self.pool is None:
            spec = self.waiting.pop(0)
            return spec, train_run(self.plan, *spec, work_dir=self.work_dir, progress=self.progress)
        while True:
            try:  # a timeout, so that Ctrl-C is heard while the workers train
                spec, result = self.ended.get(timeout=0.5)
                break
            except queue.Empty:
                continue
        self.waiting.remove(spec)
        if isinstance(result, BaseException):
            raise result
        return spec, result

    def close(self, finished: bool = False) -> None:
        """Stop the workers and wait for them: once every run has ended (`finished`) they exit by themselves;
        after a failed run or Ctrl-C they are stopped at once. (A SIGTERM to a worker that is already exiting
        lands in its exit hooks, and Python prints the SystemExit it raises there.)"""
        if self.pool is None:
            return
        if finished:
            self.pool.close()
        else:
            self.pool.terminate()
        self.pool.join()
        self.pool = None


def _entries_on_cells(plan: Plan) -> Iterator[tuple[str, str, str, Entry]]:
    """Every (task, tier, entry name, entry) of the plan whose entry runs on that cell."""
    for task, tier in plan.cells:
        for name in plan.entries:
            if ENTRIES[name].covers(task, tier):
                yield task, tier, name, ENTRIES[name]


def _first_runs(plan: Plan) -> list[Spec]:
    """The runs that need no other run: every seed of a knob-free entry, every grid point on the tuning seed."""
    specs = []
    for task, tier, name, e in _entries_on_cells(plan):
        if e.from_bc:
            continue
        if len(e.grid) > 1:
            specs += [(task, tier, name, k, plan.tuning_seed) for k in range(len(e.grid))]
        else:
            specs += [(task, tier, name, 0, s) for s in plan.seeds]
    return specs


def _later_count(plan: Plan) -> int:
    """How many runs need other runs: a BC-initialised entry's every seed, a grid entry's other seeds."""
    return sum(len(plan.seeds) if e.from_bc else len(plan.seeds) - 1
               for _, _, _, e in _entries_on_cells(plan) if e.from_bc or len(e.grid) > 1)


def _later_runs(plan: Plan, done: dict[str, Run], key_of: Callable[[Spec], str]) -> list[Spec]:
    """The runs that need other runs, once those have ended: a BC-initialised entry once the BC run of its cell
    and seed is done, a grid's other seeds at the point chosen on validation once every grid point is done.
    `key_of` gives a spec's key (`spec_key`, which builds the run's config, remembered)."""
    specs = []
    for task, tier, name, e in _entries_on_cells(plan):
        if e.from_bc:
            specs += [(task, tier, name, 0, s) for s in plan.seeds if key_of((task, tier, "bc", 0, s)) in done]
        elif len(e.grid) > 1:
            grid = [key_of((task, tier, name, k, plan.tuning_seed)) for k in range(len(e.grid))]
            if all(k in done for k in grid):
                knob = choose_knob([done[k] for k in grid], plan.tuning_seed)
                specs += [(task, tier, name, knob, s) for s in plan.seeds[1:]]
    return specs


def _run_all(plan: Plan, out: Path, jobs: int, progress: bool, done: dict[str, Run], bar: Any,
             imports: tuple[str, ...] = ()) -> tuple[set[str], set[str]]:
    """Run every run of the plan not in `done`, `jobs` at a time, each once the runs it needs have ended (those
    runs first: they finish their cells); store each as it ends. Returns the keys of the plan's runs, and of
    those that were found done.

    A BC-initialised run starts from the BC run's final checkpoint. Where only the BC run's stored result is
    left (finished runs committed without their `work/` folders, to be resumed elsewhere), that BC model is
    trained again first: the same config and seed give the same model, and the stored result is kept."""
    work = out / "work"
    key_of = functools.cache(functools.partial(spec_key, plan))  # a key builds a config (tens of ms): once each
    reused: set[str] = set()
    started: set[str] = set()  # the runs given to the workers in this call
    restoring: set[str] = set()  # the BC runs whose models are being trained again

    def can_start() -> list[tuple[Spec, bool]]:
        """The runs that can be given to the workers now, in the order to give them, each with whether it only
        trains a BC model again (what a BC-initialised run waits for); the runs found done are counted."""
        ready, restores = [], set()
        for spec in _later_runs(plan, done, key_of) + _first_runs(plan):
            key = key_of(spec)
            if key in started or key in reused:
                continue
            if key in done:
                reused.add(key)
                bar.update(1)
                continue
            if ENTRIES[spec[2]].from_bc:
                bc = (spec[0], spec[1], "bc", 0, spec[4])
                if key_of(bc) in restoring | restores:
                    continue
                if _latest_checkpoint(work / key_of(bc)) is None:
                    restores.add(key_of(bc))
                    ready.append((bc, True))
                    continue
            ready.append((spec, False))
        return ready

    workers = _Workers(plan, work, jobs, progress and jobs == 1, imports)
    try:
        while True:
            for spec, restore in can_start()[:max(0, jobs - len(workers.waiting))]:
                if restore:
                    print(f"textrl bench: training the BC model of {run_key(*spec)} again, which the BC-initialised "
                          f"runs of its cell and seed start from (its result is stored in {out / 'runs'}, its "
                          "checkpoint is not)", file=sys.stderr)
                    restoring.add(key_of(spec))
                else:
                    started.add(key_of(spec))
                workers.submit(spec)
            if not workers.waiting:
                workers.close(finished=True)
                return {key_of(spec) for spec in _first_runs(plan) + _later_runs(plan, done, key_of)}, reused
            _, run = workers.next_ended()
            if run.key in restoring:
                restoring.discard(run.key)
                continue
            atomic_write_text(out / "runs" / f"{run.key}.json", run.to_json())
            done[run.key] = run
            bar.update(1)
    finally:
        workers.close()


def run_benchmark(agents: Sequence[str], tasks: Sequence[str], seeds: int | Sequence[int], out_dir: str | Path,
                  tiers: Optional[Sequence[str]] = None, total_steps: Optional[int] = None,
                  eval_interval: Optional[int] = None, validation_episodes: Optional[int] = None,
                  test_episodes: Optional[int] = None, jobs: int = 1, progress: bool = True,
                  datasets: Sequence[str] = (), imports: Sequence[str] = (), episodes: Optional[int] = None,
                  train: bool = True) -> list[Summary]:
    """Run every run of the plan not already finished in `out_dir` with the same settings; write runs.csv,
    table.md and a plot per task; return the table's rows. `episodes` sets every task cell's dataset size
    (None: each task's, `protocol.EPISODES`), `validation_episodes` and `test_episodes` every cell's
    episodes per evaluation (None: each task's, `protocol.scoring_episodes`). `datasets` adds your own datasets as cells
    (`agents.dataset_cells`); `imports` are modules imported first, here and in every worker (e.g. one that
    registers a dataset's env when the dataset cannot import its reward function). `train=False`
    (`textrl bench --report`) trains nothing: the reports cover the cells whose runs are all stored, and
    the others are named with how many of their runs are (a benchmark run in parts: its table so far).
    Bad arguments are refused before anything is written, and a second benchmark into the same `out_dir`
    while one runs is refused naming it."""
    _import_all(imports)
    plan = make_plan(agents, tasks, seeds, tiers, total_steps, eval_interval, validation_episodes, test_episodes,
                     datasets, episodes)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"--jobs {jobs}: give at least 1 worker process")
    out = Path(out_dir)
    if not train and not (out / "runs").is_dir():
        raise ValueError(f"{out / 'runs'} does not exist: --report reads the runs a benchmark stored there; give "
                         "the --out of one")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    lock = RunLock(out)
    try:
        lock.acquire()
    except FolderBusyError as e:
        raise RuntimeError(f"another textrl bench (pid {e.pid}) is writing into {out}: two benchmarks in one --out "
                           "would mix their runs. Wait for it to end, or give another --out") from None
    try:
        return _run_plan(plan, out, jobs, progress, tuple(imports), train)
    finally:
        lock.release()


def _run_plan(plan: Plan, out: Path, jobs: int, progress: bool, imports: tuple[str, ...],
              train: bool = True) -> list[Summary]:
    """`run_benchmark` once its output folder is held."""
    done = {}
    for path in sorted((out / "runs").glob("*.json")):
        run = Run.read(path)
        if run.key != path.stem:
            raise ValueError(f"{path} holds the run {run.key}, not {path.stem}: delete it and run the same command "
                             "again to rerun that run")
        done[path.stem] = run
    if not train:
        plan, runs = _finished_cells(plan, done, out)
    data = {(task, tier): data_score(task, cell_dataset(task, tier, plan.episodes, progress=progress))
            for task, tier in plan.cells}  # built here once, not by two workers at a time
    if train:
        with tqdm(desc="benchmark", unit="run", total=len(_first_runs(plan)) + _later_count(plan),
                  disable=not progress) as bar:
            planned, reused = _run_all(plan, out, jobs, progress, done, bar, imports)
        others = len(set(done) - planned)
        print(f"textrl bench: {len(reused)} of {len(planned)} runs reused from {out / 'runs'} (the same settings), "
              f"{len(planned) - len(reused)} trained" + (f"; {others} stored runs made with other settings were "
                                                         "not used" if others else ""), file=sys.stderr)
        runs = [r for k, r in done.items() if k in planned]
    rows = summarize(runs, plan)
    write_reports(runs, rows, out, data)
    return rows


def _finished_cells(plan: Plan, done: dict[str, Run], out: Path) -> tuple[Plan, list[Run]]:
    """The plan cut to the cells whose runs are all in `done`, and their runs; says how far the others are
    (`--report`), and refuses when no cell is finished."""
    key_of = functools.cache(functools.partial(spec_key, plan))
    finished, runs, unfinished = [], [], []
    for cell in plan.cells:
        one = dataclasses.replace(plan, cells=(cell,))
        first = _first_runs(one)
        stored = [done[k] for k in map(key_of, first + _later_runs(one, done, key_of)) if k in done]
        total = len(first) + _later_count(one)
        if len(stored) == total:
            finished.append(cell)
            runs += stored
        else:
            unfinished.append(f"{cell[0]} {cell[1]} ({len(stored)} of {total} runs)")
    if not finished:
        raise ValueError(f"no cell of this benchmark has all its runs stored in {out / 'runs'} ("
                         f"{', '.join(unfinished)}): nothing to report. Run the same command without --report to "
                         "train them")
    print(f"textrl bench: report of the {len(finished)} of {len(plan.cells)} cells whose runs are all stored in "
          f"{out / 'runs'} ({len(runs)} runs); nothing was trained" +
          (f". Not in it, unfinished: {', '.join(unfinished)}" if unfinished else ""), file=sys.stderr)
    return dataclasses.replace(plan, cells=tuple(finished)), runs


def summarize(runs: Sequence[Run], plan: Plan) -> list[Summary]:
    """One row per (cell, entry) that ran: knobs chosen on validation, test scores at them."""
    rows = []
    for task, tier in plan.cells:
        for name in plan.entries:
            group = [r for r in runs if (r.task, r.tier, r.entry) == (task, tier, name)]
            row = summarize_cell(group, len(ENTRIES[name].grid), plan.tuning_seed)
            if row is not None:
                rows.append(row)
    return rows
