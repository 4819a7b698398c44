"""The benchmark's protocol: which runs make the table, and how each agent's knobs are chosen fairly.

Every (task, tier) is a cell. Each entry of the table (an agent, possibly initialised from the BC
model or with another Q-head rank) has at most two knobs that matter:
- an acting knob, scored at every evaluation without retraining: the acting temperature (greedy
  or 1) of every agent that samples (BC, %BC, MC returns, ILQL; CQL acts greedily), crossed with
  beta for ILQL and MC returns;
- a training knob grid (the filter fraction of %BC; CQL's conservative weight and target rate),
  each point a training run on the tuning seed (the first seed); the other seeds then run the
  point chosen.
Knobs are chosen on validation episodes (`VALIDATION_SEED`; for Endgames the "valid" half of its
evaluation starts), never on the test episodes (`TEST_SEED`, the "test" starts) that the table
reports. "Final" is the test score of the last checkpoint; "best" the test score of the
checkpoint with the best validation score (per seed). Both splits are scored at every evaluation
with the same weights, so choosing afterwards costs no extra rollouts.

A sanity gate comes before any verdict, as offline-RL benchmarks use it: each cell shows the
data's own normalised score (`data_score`), and BC must reach within `GATE_POINTS` of it
(`converged`). A cell whose BC misses is "not converged": its budget, not the methods, decides
its scores, so its verdicts are not counted.

A cell may also be your own dataset (`agents.dataset_cells`): (its env's id, the dataset id) in place
of (task, tier), with the same protocol, scored in mean return (no reference scores exist for a
reward function) and gated at 5% of the data's reward range.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from agents.dataset_cells import TOLERANCE, dataset_task, gate_tolerance
from textrl.rollout import evaluate
from textrl.tasks import Task, get_task

VALIDATION_SEED = 1_000_003
"""Seed of the validation episodes (knobs and the best checkpoint are chosen on them)."""
TEST_SEED = 2_000_003
"""Seed of the test episodes (the table reports them); training seeds are 0, 1, 2, ..."""
VALIDATION_EPISODES = 64
TEST_EPISODES = 128
SCORING_EPISODES: dict[str, tuple[int, int]] = {"randomwalks": (512, 1024)}
"""(validation, test) episodes per evaluation where a task needs more than (`VALIDATION_EPISODES`,
`TEST_EPISODES`). RandomWalks' random tier is a uniform random walk, so the BC that reproduces it samples,
and one episode's score has a standard deviation of 41 points (the data's episodes): 128 test episodes
leave one seed's score +-3.6, most of the 5-point gate, and 64 validation episodes (+-5.1) cannot tell
sampling from greedy acting. With 1,024 and 512: +-1.3 and +-1.8 (benchmarks/RESULTS.md section 0)."""
EVALUATIONS = 2
"""Evaluations per run (half way and at the end): the candidates for the best checkpoint."""

# Each task's benchmark tiers: one low (random or medium behaviour) and the mixed one. RandomWalks'
# random tier is trlx's data; the other tasks' random tiers are near-useless (uniform tokens
# end a maze or chess episode within a few steps), so their low tier is medium (epsilon 0.5).
TIERS: dict[str, tuple[str, ...]] = {
    "randomwalks": ("random", "mixed"),
    "maze": ("medium", "mixed"),
    "maze_po": ("medium", "mixed"),
    "brackets": ("medium", "mixed"),
    "endgames": ("medium", "mixed"),
    "wordle": ("medium", "mixed"),
}
EPISODES: dict[str, int] = {"wordle": 10_000}
"""Each task's dataset size in episodes where it is not the task datasets' default (1,000), chosen from BC's
learning curves (benchmarks/RESULTS.md section 0): a cell trains on `textrl/<task>/<tier>-n<N>-v<version>`.
Wordle: on 1,000 episodes BC flattened 19 (mixed) and 41 (medium) points below its data; on 10,000 it
reaches its data on both tiers."""
TEMPERATURES = (0.0, 1.0)
"""Acting temperatures chosen among on validation (0: greedy; 1: sampling from the policy as trained)."""
GATE_POINTS = 5.0
"""BC's test score (final, mean over seeds) must be at least the data's score minus this."""
QUICK = dict(tasks=("randomwalks", "maze"), tiers=("mixed",), seeds=1, steps=60)
"""`textrl bench --quick`: a smoke run of the whole pipeline in minutes (numbers not comparable)."""


@dataclass(frozen=True)
class Entry:
    """A column of the table: an agent, its knobs, and how its model starts."""

    name: str
    agent: str
    betas: tuple[float, ...] = ()  # acting knob: every beta scored at every evaluation (empty: none)
    temperatures: tuple[float, ...] = TEMPERATURES  # acting knob, crossed with betas (empty: the preset's)
    grid: tuple[dict[str, Any], ...] = ({},)  # training knob: method settings, one run each on the tuning seed
    from_bc: bool = False  # start from the BC run's model of the same cell and seed (the ILQL paper's recipe)
    model: dict[str, Any] = field(default_factory=dict)  # model settings (e.g. q_head_rank)
    tasks: Optional[tuple[str, ...]] = None  # only these tasks (None: all)
    tiers: Optional[tuple[str, ...]] = None  # only these tiers (None: the task's)

    def covers(self, task: str, tier: str) -> bool:
        """Whether this entry runs on the cell (task, tier)."""
        return (self.tasks is None or task in self.tasks) and (self.tiers is None or tier in self.tiers)


ILQL_BETAS = (4.0, 16.0, 100.0)
MC_BETAS = (0.0, 1.0, 4.0)
ENTRIES: dict[str, Entry] = {e.name: e for e in (
    Entry("bc", "bc"),
    Entry("filtered_bc", "filtered_bc", grid=tuple({"fraction": f} for f in (0.1, 0.3, 0.5))),
    Entry("cql", "cql", grid=tuple({"cql_scale": c, "target_update_rate": r} for c in (0.1, 1.0)
                                   for r in (0.005, 0.1)), temperatures=()),  # greedy (its preset)
    Entry("mc_returns", "mc_returns", betas=MC_BETAS),
    Entry("mc_returns_bc", "mc_returns", betas=MC_BETAS, from_bc=True),
    Entry("ilql", "ilql", betas=ILQL_BETAS),
    Entry("ilql_bc", "ilql", betas=ILQL_BETAS, from_bc=True),
    # the Q-head rank at a large vocabulary (about 1.9k move tokens): trlx's full head is `ilql`
    Entry("ilql_rank32", "ilql", betas=ILQL_BETAS, model={"q_head_rank": 32}, tasks=("endgames",), tiers=("mixed",)),
    Entry("ilql_rank128", "ilql", betas=ILQL_BETAS, model={"q_head_rank": 128}, tasks=("endgames",),
          tiers=("mixed",)),
)}


def acting_label(beta: Optional[float], temperature: Optional[float] = None) -> str:
    """How an acting knob value reads in reports: '' (none), 'beta=4', 'temperature=0' or 'beta=4,temperature=0'."""
    return ",".join(f"{name}={v:g}" for name, v in (("beta", beta), ("temperature", temperature)) if v is not None)


ScoreKey = tuple[str, Optional[float], Optional[float]]
"""A score of one evaluation: (split, acting beta, acting temperature), None where the entry has no such
knob, e.g. ("val", 4.0, 0.0), ("val", None, 1.0), ("test", None, None)."""

_KNOBS = ("beta", "temperature")


def metric_name(key: ScoreKey) -> str:
    """The name a score is logged under in metrics.jsonl (`eval/` is prefixed by the trainer), e.g.
    'val@beta=4,temperature=0'; `score_key` reads it back, so the two spellings live here only."""
    split, *values = key

    def number(v: float) -> str:
        short = f"{v:g}"  # '4', unless that loses digits that `score_key` must read back
        return short if float(short) == v else repr(float(v))

    knobs = ",".join(f"{name}={number(v)}" for name, v in zip(_KNOBS, values) if v is not None)
    return f"{split}@{knobs}" if knobs else split


def score_key(name: str) -> Optional[ScoreKey]:
    """The (split, beta, temperature) of a logged metric name written by `metric_name`; None for any other
    metric."""
    split, at, knobs = name.partition("@")
    if split not in ("val", "test"):
        return None
    values: dict[str, float] = {}
    for part in knobs.split(",") if at else ():
        knob, eq, value = part.partition("=")
        if not eq or knob not in _KNOBS or knob in values:
            return None
        try:
            values[knob] = float(value)
        except ValueError:
            return None
    if at and not values:
        return None
    return (split, values.get("beta"), values.get("temperature"))


def own_data(task: str) -> bool:
    """Whether a cell's task is the env of your own dataset (its tier is then the dataset id), not a built-in task."""
    return task not in TIERS


@functools.cache
def split_tasks(task: str) -> tuple[Task, Task]:
    """(validation task, test task): Endgames splits its evaluation starts in two; other tasks differ by seed."""
    if task == "endgames":
        return get_task(task, split="valid"), get_task(task, split="test")
    return get_task(task), get_task(task)


def cell_tasks(task: str, tier: str) -> tuple[Task, Task]:
    """(validation task, test task) of a cell: `split_tasks` of a built-in task; for your own dataset, its env's
    task twice (the episodes differ by seed)."""
    if own_data(task):
        own = dataset_task(tier)
        return own, own
    return split_tasks(task)


def cell_score(task: str, split: Task, returns: Any) -> float:
    """A cell's score of some returns: the mean normalised score of a built-in task, the mean return of your
    own dataset."""
    returns = np.asarray(returns, dtype=np.float64)
    return float(returns.mean() if own_data(task) else split.normalized_score(returns).mean())


def scoring_episodes(task: str, validation: Optional[int] = None, test: Optional[int] = None) -> tuple[int, int]:
    """(validation, test) episodes per evaluation of a task's cells: those given, else the task's
    (`SCORING_EPISODES`, else `VALIDATION_EPISODES` and `TEST_EPISODES`)."""
    default = SCORING_EPISODES.get(task, (VALIDATION_EPISODES, TEST_EPISODES))
    return (default[0] if validation is None else validation), (default[1] if test is None else test)


def scoring_fn(task: str, betas: Sequence[float], temperatures: Sequence[float] = (),
               validation_episodes: Optional[int] = None, test_episodes: Optional[int] = None,
               tier: Optional[str] = None) -> Any:
    """`metric_fn` for `fit`: every acting value (beta x temperature) scored on the validation episodes,
    then the test episodes scored with the value that did best there (so test rollouts never choose anything).
    The cell is (task, tier); a built-in task needs no tier (its tiers share the episodes).

    Keys: `metric_name(("val", beta, temperature))` per value (e.g. `val@beta=4,temperature=0`; `val`
    without an acting knob), `metric_name(("test", None, None))`, and `beta` and `temperature` (the ones
    chosen, where the entry has them). Every training seed sees the same validation and the same test
    episodes; how many: `scoring_episodes(task, validation_episodes, test_episodes)`.
    """
    valid, test = split_tasks(task) if tier is None else cell_tasks(task, tier)
    validation_episodes, test_episodes = scoring_episodes(task, validation_episodes, test_episodes)
    values = [(b, t) for b in (betas or (None,)) for t in (temperatures or (None,))]

    def mean_score(split: Task, value: tuple[Optional[float], Optional[float]], seed: int, n: int,
                   agent: Any) -> float:
        beta, temperature = value
        result = evaluate(functools.partial(agent.policy, beta=beta, temperature=temperature), split,
                          num_episodes=n, seed=seed)
        return cell_score(task, split, result.returns)

    def score(agent: Any) -> dict[str, float]:
        val = {v: mean_score(valid, v, VALIDATION_SEED, validation_episodes, agent) for v in values}
        chosen = max(val, key=lambda v: val[v])  # the first of equals
        out = {metric_name(("val", *v)): s for v, s in val.items()}
        out[metric_name(("test", None, None))] = mean_score(test, chosen, TEST_SEED, test_episodes, agent)
        for name, v in zip(_KNOBS, chosen):
            if v is not None:
                out[name] = v
        return out

    return score


@dataclass(frozen=True)
class Run:
    """One training run: per evaluation, the validation score of each acting value (beta, temperature; None
    where the entry has no such knob), the test score at the value chosen there, and that value's beta and
    temperature (empty without that knob)."""

    task: str
    tier: str
    entry: str
    knob: int  # index into the entry's grid
    seed: int
    steps: list[int]
    val: dict[tuple[Optional[float], Optional[float]], list[float]]
    test: list[float]
    betas: list[float]
    seconds: float
    temperatures: list[float] = field(default_factory=list)  # chosen per evaluation (empty: not a knob)
    settings: str = ""  # the digest of every setting that changes its result (agents.benchmark.run_settings)

    def to_json(self) -> str:
        """The run as JSON (validation scores as [beta, temperature, scores] lists: JSON keys cannot be
        numbers)."""
        return json.dumps({**asdict(self), "val": [[b, t, s] for (b, t), s in self.val.items()]})

    @classmethod
    def read(cls, path: Path) -> "Run":
        """A run stored by `to_json`; a torn or altered file is a ValueError naming it and what is wrong."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
            names = [f.name for f in fields(cls)]
            if not isinstance(data, dict) or sorted(data) != sorted(names):
                got = sorted(data) if isinstance(data, dict) else type(data).__name__
                raise ValueError(f"its keys are {got}, not {sorted(names)}")
            val = data["val"]
            if not isinstance(val, list) or not all(isinstance(p, list) and len(p) == 3 for p in val):
                raise ValueError("val is not a list of [beta, temperature, scores] lists")
            run = cls(**{**data, "val": {(b, t): s for b, t, s in val}})
            _check_run(run)
        except (ValueError, TypeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not a finished run of this benchmark ({str(e)[:200]}): delete it and run the "
                             "same command again to rerun that run") from None
        return run

    @property
    def chosen_val(self) -> np.ndarray:
        """The validation score at the acting value chosen at each evaluation."""
        return np.max(np.array(list(self.val.values())), axis=0)

    @property
    def key(self) -> str:
        return run_key(self.task, self.tier, self.entry, self.knob, self.seed, self.settings)


def _no_constant(name: str) -> float:
    raise ValueError(f"it holds {name}, not a number")


def _check_run(run: Run) -> None:
    """Types, finiteness and lengths of a stored run (every curve has one value per evaluation step)."""
    def numbers(values: Any, what: str, kind: tuple = (int, float)) -> None:
        if not isinstance(values, list) or not all(
                isinstance(v, kind) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise ValueError(f"{what} is not a list of finite numbers")

    for name in ("task", "tier", "entry", "settings"):
        if not isinstance(getattr(run, name), str):
            raise ValueError(f"{name} is not a string")
    for name in ("knob", "seed"):
        if not isinstance(getattr(run, name), int) or isinstance(getattr(run, name), bool) or getattr(run, name) < 0:
            raise ValueError(f"{name} is not a count")
    numbers(run.steps, "steps", (int,))
    numbers(run.test, "test")
    numbers(run.betas, "betas")
    numbers(run.temperatures, "temperatures")
    numbers([run.seconds], "seconds")
    if not run.val or len(run.test) != len(run.steps) or any(
            chosen and len(chosen) != len(run.steps) for chosen in (run.betas, run.temperatures)):
        raise ValueError("its curves do not have one value per evaluation step")
    for (beta, temperature), scores in run.val.items():
        for name, v in zip(_KNOBS, (beta, temperature)):
            if v is not None:
                numbers([v], f"a {name}")
        numbers(scores, f"val at {acting_label(beta, temperature) or 'no acting knob'}")
        if len(scores) != len(run.steps):
            raise ValueError("its curves do not have one value per evaluation step")


def run_key(task: str, tier: str, entry: str, knob: int, seed: int, settings: str = "") -> str:
    """The file name (without .json) of a run: `maze-mixed__cql__k2__s0__<settings digest>`; the '/' of your own
    dataset's env and dataset ids is written '+' (`reviews+Review-v0-reviews+templated-v0__bc__k0__s0__...`)."""
    cell = f"{task}-{tier}".replace("/", "+")
    return f"{cell}__{entry}__k{knob}__s{seed}" + (f"__{settings}" if settings else "")


def choose_knob(runs: Sequence[Run], tuning_seed: int) -> Optional[int]:
    """The training knob of an entry in one cell: the grid point whose tuning-seed run has the best final
    validation score (at the beta chosen there); None when the tuning seed has no run yet."""
    tuned = sorted((r for r in runs if r.seed == tuning_seed), key=lambda r: r.knob)
    if not tuned:
        return None
    finals = [r.chosen_val[-1] for r in tuned]
    return tuned[int(np.argmax(finals))].knob


@dataclass(frozen=True)
class Summary:
    """An entry's row in one cell: the knobs chosen on validation and the test scores they give."""

    task: str
    tier: str
    entry: str
    knobs: str
    seeds: int
    test_final: np.ndarray
    test_best: np.ndarray
    val_final: np.ndarray
    curve_steps: list[int]
    test_curves: np.ndarray  # [seeds, evaluations] at the chosen knobs


def summarize_cell(runs: Sequence[Run], grid_size: int, tuning_seed: int) -> Optional[Summary]:
    """Choose an entry's training knob in one cell and read off its test scores (None when nothing ran).

    Final: the last evaluation's test score; best: the test score of the evaluation with the best
    validation score (per seed). The acting value chosen at the end is listed per seed.
    """
    if not runs:
        return None
    knob = choose_knob(runs, tuning_seed) if grid_size > 1 else 0
    if knob is None:
        knob = runs[0].knob
    chosen = sorted((r for r in runs if r.knob == knob), key=lambda r: r.seed)
    entry = ENTRIES[chosen[0].entry]
    parts = [f"{k} {v:g}" for k, v in entry.grid[knob].items()]
    if chosen[0].betas:
        parts.append("beta " + "/".join(f"{r.betas[-1]:g}" for r in chosen))
    if chosen[0].temperatures:
        parts.append("temperature " + "/".join(f"{r.temperatures[-1]:g}" for r in chosen))
    return Summary(
        task=chosen[0].task, tier=chosen[0].tier, entry=chosen[0].entry, knobs=", ".join(parts) or "-",
        seeds=len(chosen),
        test_final=np.array([r.test[-1] for r in chosen]),
        test_best=np.array([r.test[int(np.argmax(r.chosen_val))] for r in chosen]),
        val_final=np.array([r.chosen_val[-1] for r in chosen]),
        curve_steps=chosen[0].steps,
        test_curves=np.array([r.test for r in chosen if r.steps == chosen[0].steps]),
    )


def data_score(task: str, dataset: Any) -> float:
    """The score of a dataset's own episodes: their mean return, normalised on the test split's reference scores
    for a built-in task, as it is for your own dataset."""
    from textrl.data import pack  # torch: imported when scoring, not for `textrl --help`

    returns = pack(dataset).returns.double().numpy()
    return float(returns.mean()) if own_data(task) else float(split_tasks(task)[1].normalized_score(returns.mean()))


def gate_margin(task: str, tier: str) -> Optional[float]:
    """How far below the data's score BC may end in a cell: `GATE_POINTS`, or for your own dataset `TOLERANCE`
    of its reward range (None when it has none)."""
    return gate_tolerance(tier) if own_data(task) else GATE_POINTS


def gate_rule(task: str, tier: str) -> str:
    """The sanity gate of a cell in words, e.g. 'BC within 5' or 'BC within 0.1 (5% of the reward range)'."""
    margin = gate_margin(task, tier)
    if not own_data(task):
        return f"BC within {margin:g}"
    return "no reward range to gate on" if margin is None else f"BC within {margin:.3g} ({TOLERANCE:.0%} of the " \
                                                               "reward range)"


def converged(bc: Optional[Summary], data: Optional[float], margin: Optional[float] = GATE_POINTS) -> Optional[bool]:
    """The sanity gate of a cell: BC's final test score within `margin` of the data's (None: unknown)."""
    if bc is None or data is None or margin is None:
        return None
    return bool(bc.test_final.mean() >= data - margin)
