"""The benchmark protocol: knobs are chosen on validation episodes only, runs go in the right order, and the
harness stores, reports and resumes them."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from agents.benchmark import bc_model_dir, make_plan, run_benchmark, spec_key
from agents.protocol import (
    ENTRIES,
    SCORING_EPISODES,
    TEST_EPISODES,
    TEST_SEED,
    VALIDATION_EPISODES,
    VALIDATION_SEED,
    Run,
    choose_knob,
    scoring_episodes,
    scoring_fn,
    split_tasks,
    summarize_cell,
)
from agents.reports import read_csv
from textrl.config import load_yaml
from textrl.rollout import evaluate
from textrl.tasks import get_task


def _run(seed: int, knob: int, val: dict, test: list, betas: list = (), entry: str = "cql") -> Run:
    steps = [10 * (i + 1) for i in range(len(test))]
    return Run("maze", "mixed", entry, knob, seed, steps, val, list(test), list(betas), 1.0)


def test_the_training_knob_is_chosen_on_the_tuning_seeds_final_validation_score_never_on_test() -> None:
    runs = [
        _run(0, 0, {(None, None): [50.0, 60.0]}, [10.0, 99.0]),  # the best test score, not chosen
        _run(0, 1, {(None, None): [90.0, 70.0]}, [80.0, 20.0]),  # best validation early, not at the end
        _run(0, 2, {(None, None): [40.0, 80.0]}, [30.0, 50.0]),  # the best final validation score: chosen
        _run(1, 2, {(None, None): [70.0, 75.0]}, [60.0, 65.0]),
        _run(1, 0, {(None, None): [99.0, 99.0]}, [99.0, 99.0]),  # another seed's runs do not choose
    ]
    assert choose_knob(runs, tuning_seed=0) == 2
    assert choose_knob(runs, tuning_seed=3) is None
    row = summarize_cell(runs, grid_size=4, tuning_seed=0)
    assert row.knobs == "cql_scale 1, target_update_rate 0.005" == ", ".join(
        f"{k} {v:g}" for k, v in ENTRIES["cql"].grid[2].items())
    assert row.seeds == 2 and row.test_final.tolist() == [50.0, 65.0] and row.val_final.tolist() == [80.0, 75.0]
    assert row.test_best.tolist() == [50.0, 65.0]  # the checkpoint of the best validation score, per seed
    assert row.test_curves.tolist() == [[30.0, 50.0], [60.0, 65.0]]


def test_the_best_checkpoint_and_the_acting_beta_come_from_validation() -> None:
    runs = [
        _run(0, 0, {(4.0, None): [90.0, 60.0], (16.0, None): [70.0, 85.0]}, [40.0, 70.0], [4.0, 16.0], "ilql"),
        _run(1, 0, {(4.0, None): [50.0, 95.0], (16.0, None): [55.0, 60.0]}, [99.0, 91.0], [16.0, 4.0], "ilql"),
    ]
    row = summarize_cell(runs, grid_size=1, tuning_seed=0)
    assert row.knobs == "beta 16/4"  # the beta each seed's last evaluation chose
    assert row.val_final.tolist() == [85.0, 95.0] and row.test_final.tolist() == [70.0, 91.0]
    assert row.test_best.tolist() == [40.0, 91.0]  # seed 0's best validation (90) was at its first evaluation


class _Switch:
    """A stand-in agent: the optimal policy at beta 1 acting greedily, uniform random moves otherwise."""

    def __init__(self, task):
        self.task, self.betas, self.temperatures = task, [], []

    def policy(self, obs, rng=None, *, beta=None, temperature=None):
        self.betas.append((beta, len(obs["length"])))
        self.temperatures.append(temperature)
        rng = np.random.default_rng(0)
        good = beta == 1.0 and temperature in (None, 0.0)
        return (self.task.optimal_policy if good else self.task.exploration_policy)(obs, rng)


def test_scoring_picks_the_beta_on_validation_episodes_and_scores_test_episodes_with_it_alone() -> None:
    task = get_task("randomwalks")
    agent = _Switch(task)
    scores = scoring_fn("randomwalks", (0.0, 1.0), validation_episodes=32, test_episodes=48)(agent)
    assert set(scores) == {"val@beta=0", "val@beta=1", "test", "beta"} and scores["beta"] == 1.0
    assert scores["val@beta=1"] > scores["val@beta=0"] + 20
    optimal = evaluate(lambda obs, rng: task.optimal_policy(obs, rng), task, num_episodes=48, seed=TEST_SEED)
    assert scores["test"] == pytest.approx(task.normalized_score(np.asarray(optimal.returns)).mean())
    assert {beta for beta, envs in agent.betas if envs == 48} == {1.0}  # the test rollouts used the chosen beta
    assert {beta for beta, envs in agent.betas if envs == 32} == {0.0, 1.0}
    plain = scoring_fn("randomwalks", (), validation_episodes=8, test_episodes=8)(agent)
    assert set(plain) == {"val", "test"}


def test_a_task_scores_with_its_own_episode_counts_unless_told_and_they_are_part_of_its_run_keys(monkeypatch) -> None:
    import agents.protocol

    assert scoring_episodes("randomwalks") == SCORING_EPISODES["randomwalks"] == (512, 1024)
    assert scoring_episodes("maze") == (VALIDATION_EPISODES, TEST_EPISODES) == (64, 128)
    assert scoring_episodes("randomwalks", 8, None) == (8, 1024) and scoring_episodes("maze", None, 9) == (64, 9)
    counts = []

    def counting(policy, task, num_episodes, seed):
        counts.append((seed, num_episodes))
        return evaluate(policy, task, num_episodes=num_episodes, seed=seed)

    monkeypatch.setattr(agents.protocol, "evaluate", counting)
    scoring_fn("randomwalks", (1.0,))(_Switch(get_task("randomwalks")))
    scoring_fn("maze", (1.0,), validation_episodes=3)(_Switch(get_task("maze")))
    assert counts == [(VALIDATION_SEED, 512), (TEST_SEED, 1024), (VALIDATION_SEED, 3), (TEST_SEED, 128)]

    spec = ("randomwalks", "random", "bc", 0, 0)
    default, told = make_plan(["bc"], ["randomwalks", "maze"], 1), make_plan(["bc"], ["randomwalks", "maze"], 1,
                                                                             validation_episodes=64, test_episodes=128)
    assert spec_key(default, spec) != spec_key(told, spec)
    # a task without counts of its own keeps the keys its runs were stored under
    assert spec_key(default, ("maze", "mixed", "bc", 0, 0)) == spec_key(told, ("maze", "mixed", "bc", 0, 0))


def test_the_acting_temperature_is_chosen_on_validation_beside_beta() -> None:
    agent = _Switch(get_task("randomwalks"))
    scores = scoring_fn("randomwalks", (0.0, 1.0), (1.0, 0.0), validation_episodes=16, test_episodes=24)(agent)
    assert set(scores) == {"val@beta=0,temperature=1", "val@beta=0,temperature=0", "val@beta=1,temperature=1",
                           "val@beta=1,temperature=0", "test", "beta", "temperature"}
    assert (scores["beta"], scores["temperature"]) == (1.0, 0.0) and scores["test"] == pytest.approx(100.0)
    assert agent.temperatures[-1] == 0.0  # the test rollout acted at the chosen temperature
    greedy = scoring_fn("randomwalks", (), (0.0, 1.0), validation_episodes=8, test_episodes=8)(_Switch(agent.task))
    assert set(greedy) == {"val@temperature=0", "val@temperature=1", "test", "temperature"}
    assert ENTRIES["cql"].temperatures == () and all(ENTRIES[e].temperatures == (0.0, 1.0) for e in
                                                     ("bc", "filtered_bc", "mc_returns", "ilql", "ilql_bc"))


def test_score_names_carry_beta_and_temperature_and_read_back_exactly() -> None:
    from agents.protocol import metric_name, score_key

    for key, name in [(("val", 4.0, 0.0), "val@beta=4,temperature=0"), (("val", None, 1.0), "val@temperature=1"),
                      (("val", 0.1234567891, None), "val@beta=0.1234567891"), (("test", None, None), "test")]:
        assert metric_name(key) == name and score_key(name) == key
    assert score_key(metric_name(("val", 1 / 3, 0.0))) == ("val", 1 / 3, 0.0)  # digits %g drops are kept
    for other in ("beta", "temperature", "val_std", "val@", "val@beta=x", "val@top_k=4", "val@beta=1,beta=2"):
        assert score_key(other) is None


def test_validation_and_test_episodes_are_apart() -> None:
    assert VALIDATION_SEED != TEST_SEED and min(VALIDATION_SEED, TEST_SEED) > 1000  # training seeds are 0, 1, ...
    valid, test = split_tasks("endgames")
    assert (valid.split, test.split) == ("valid", "test") and not set(valid.starts) & set(test.starts)
    assert split_tasks("maze") == (get_task("maze"), get_task("maze"))


def test_plans_refuse_bad_arguments_and_bring_the_bc_runs_the_bc_entries_start_from() -> None:
    plan = make_plan(["ilql_bc", "cql"], ["maze", "endgames"], 2, tiers=["mixed"])
    assert plan.entries == ("bc", "ilql_bc", "cql") and plan.cells == (("maze", "mixed"), ("endgames", "mixed"))
    assert make_plan(["ilql"], ["randomwalks"], 1).cells == (("randomwalks", "random"), ("randomwalks", "mixed"))
    for kwargs, message in (
        (dict(agents=["nope"]), "unknown agent 'nope'"),
        (dict(tasks=["chess"]), "unknown task 'chess'"),
        (dict(seeds=[1, 1]), "distinct seeds"),
        (dict(tiers=["expert"]), "tiers expert: none is benchmarked on these tasks; choose from medium, mixed"),
        (dict(total_steps=0), "--steps 0"),
        (dict(validation_episodes=0), "--val-episodes 0"),
    ):
        args = dict(agents=["bc"], tasks=["maze"], seeds=1) | kwargs
        with pytest.raises(ValueError, match=message):
            make_plan(**args)


def test_the_harness_tunes_on_seed_0_starts_bc_entries_from_bc_and_never_redoes_a_run(tmp_path) -> None:
    kwargs = dict(tiers=["mixed"], total_steps=4, eval_interval=2, validation_episodes=8, test_episodes=8,
                  progress=False)
    rows = run_benchmark(["filtered_bc", "ilql_bc"], ["randomwalks"], 2, tmp_path, **kwargs)
    runs = {p.stem.rsplit("__", 1)[0]: json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")}
    tuned = [max(scores[-1] for _, _, scores in runs[f"randomwalks-mixed__filtered_bc__k{k}__s0"]["val"])
             for k in range(3)]  # at the acting temperature chosen at the end
    knob = int(np.argmax(tuned))
    assert set(runs) == {"randomwalks-mixed__bc__k0__s0", "randomwalks-mixed__bc__k0__s1",
                         "randomwalks-mixed__filtered_bc__k0__s0", "randomwalks-mixed__filtered_bc__k1__s0",
                         "randomwalks-mixed__filtered_bc__k2__s0", f"randomwalks-mixed__filtered_bc__k{knob}__s1",
                         "randomwalks-mixed__ilql_bc__k0__s0", "randomwalks-mixed__ilql_bc__k0__s1"}
    plan = make_plan(["filtered_bc", "ilql_bc"], ["randomwalks"], 2, ["mixed"], 4, 2, 8, 8)
    for seed in (0, 1):  # each ILQL run starts from the BC model of its own seed
        (work,) = (tmp_path / "work").glob(f"randomwalks-mixed__ilql_bc__k0__s{seed}__*")
        config = load_yaml(work / "step_000004" / "agent" / "config.yaml", complete=True)
        assert config.model.model_path == str(bc_model_dir(plan, tmp_path / "work", "randomwalks", "mixed", seed))
    assert [r.entry for r in rows] == ["bc", "filtered_bc", "ilql_bc"]
    assert rows[1].knobs.startswith(f"fraction {ENTRIES['filtered_bc'].grid[knob]['fraction']:g}, temperature ")
    assert rows[2].knobs.startswith("beta ") and ", temperature " in rows[2].knobs and rows[2].seeds == 2
    assert {(b, t) for b, t, _ in runs["randomwalks-mixed__bc__k0__s0"]["val"]} == {(None, 0.0), (None, 1.0)}
    csv_rows = read_csv(tmp_path / "runs.csv")
    (data,) = [r for r in csv_rows if r["agent"] == "data"]
    from agents.protocol import data_score
    from textrl.data import make_dataset
    assert float(data["score"]) == pytest.approx(data_score("randomwalks", make_dataset("textrl/randomwalks/mixed-v1")),
                                                 abs=1e-4) and 80 < float(data["score"]) < 100
    assert (data["seed"], data["step"], data["split"]) == ("0", "0", "test")
    runs_csv = [r for r in csv_rows if r["agent"] != "data"]
    assert {r["split"] for r in runs_csv} == {"val", "test"} and {r["step"] for r in runs_csv} == {"2", "4"}
    table = (tmp_path / "table.md").read_text()
    gate = "converged" if rows[0].test_final.mean() >= float(data["score"]) - 5 else "**not converged**"
    assert f"| randomwalks | mixed | data | the dataset's own episodes; BC within 5: {gate} | - | " \
           f"{float(data['score']):.1f} |" in table
    assert "| randomwalks | mixed | ilql_bc | beta " in table and "±" in table
    assert (tmp_path / "scores_randomwalks.png").read_bytes()[:4] == b"\x89PNG"
    again = run_benchmark(["filtered_bc", "ilql_bc"], ["randomwalks"], 2, tmp_path, **kwargs)
    assert [r.test_final.tolist() for r in again] == [r.test_final.tolist() for r in rows]
    assert {p.stem.rsplit("__", 1)[0]: json.loads(p.read_text())["seconds"] for p in (tmp_path / "runs").glob("*.json")
            } == {k: v["seconds"] for k, v in runs.items()}  # finished runs were not redone


def test_an_interrupted_benchmark_resumes_its_run_from_the_last_checkpoint(tmp_path, monkeypatch) -> None:
    from textrl.trainer import Trainer

    real_save, real_load = Trainer.save_checkpoint, Trainer.load_checkpoint
    loaded = []

    def save_then_interrupt(self):
        path = real_save(self)
        if self.state.step == 3:
            raise KeyboardInterrupt("Ctrl-C after the first checkpoint")
        return path

    kwargs = dict(tiers=["mixed"], total_steps=6, eval_interval=3, validation_episodes=4, test_episodes=4,
                  progress=False)
    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt, match="interrupted at step 3; the last checkpoint is") as raised:
        run_benchmark(["bc"], ["randomwalks"], 1, tmp_path, **kwargs)
    assert str(raised.value.__cause__) == "Ctrl-C after the first checkpoint"
    assert not list((tmp_path / "runs").glob("*.json"))
    monkeypatch.setattr(Trainer, "save_checkpoint", real_save)
    monkeypatch.setattr(Trainer, "load_checkpoint", lambda self, path: loaded.append(path) or real_load(self, path))
    (row,) = run_benchmark(["bc"], ["randomwalks"], 1, tmp_path, **kwargs)
    (run,) = (tmp_path / "work").glob("randomwalks-mixed__bc__k0__s0__*")
    assert [Path(p).name for p in loaded] == ["step_000003"]
    assert row.curve_steps == [3, 6] and row.test_curves.shape == (1, 2)
    assert [p.name for p in run.glob("step_*")] == ["step_000006"]  # a finished run keeps its final checkpoint
    trained = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines() if "loss" in line]
    assert sorted(set(trained)) == [1, 2, 3, 4, 5, 6] and trained.count(4) == 1  # steps 1-3 were not trained again


def test_ilql_is_compared_with_the_best_baseline_and_close_results_are_ties() -> None:
    from agents.protocol import Summary
    from agents.reports import compare

    def row(entry, finals):
        finals = np.array(finals, dtype=float)
        return Summary("maze", "mixed", entry, "-", len(finals), finals, finals, finals, [1], finals[:, None])

    rows = [row("bc", [80, 82, 78, 80]), row("cql", [90, 91, 89, 90]), row("ilql", [95, 96, 94, 95]),
            row("ilql_bc", [91, 80, 99, 90])]
    line = compare(rows).splitlines()[2]
    assert line == "| maze | mixed | - | 95.0 | 90.0 | cql 90.0 | win (+5.0) | tie (+0.0) |"
    assert compare(rows, {("maze", "mixed"): 85.0}).splitlines()[2] == (
        "| maze | mixed | 85.0 | 95.0 | 90.0 | cql 90.0 | win (+5.0) | tie (+0.0) |")  # BC 80 is within 5 of 85
    assert "lose (-10.0)" in compare([row("bc", [90, 90, 90, 90]), row("ilql", [80, 80, 80, 80])])


def test_the_best_baseline_is_chosen_on_validation_and_judged_on_test() -> None:
    from agents.protocol import Summary
    from agents.reports import compare

    def row(entry, test, val):
        test, val = np.array(test, dtype=float), np.array(val, dtype=float)
        return Summary("maze", "mixed", entry, "-", len(test), test, test, val, [1], test[:, None])

    # CQL has the higher test score, %BC the higher validation score: %BC is the baseline ILQL meets
    rows = [row("cql", [92, 92, 92], [80, 80, 80]), row("filtered_bc", [85, 85, 85], [90, 90, 90]),
            row("ilql", [88, 88, 88], [85, 85, 85])]
    assert compare(rows).splitlines()[2] == "| maze | mixed | - | 88.0 | - | filtered_bc 85.0 | win (+3.0) | - |"


def test_a_cell_whose_bc_misses_its_data_by_more_than_5_is_not_converged_and_its_verdicts_do_not_count() -> None:
    from agents.protocol import Summary, converged
    from agents.reports import compare, format_table

    def row(entry, finals):
        finals = np.array(finals, dtype=float)
        return Summary("wordle", "mixed", entry, "-", len(finals), finals, finals, finals, [1], finals[:, None])

    bc, ilql = row("bc", [10, 12, 8, 10]), row("ilql", [30, 30, 30, 30])
    assert converged(bc, 15.0) and not converged(bc, 15.1) and converged(None, 15.0) is None
    data = {("wordle", "mixed"): 93.3}
    line = compare([bc, ilql], data).splitlines()[2]
    assert line == "| wordle | mixed | 93.3 | 30.0 | - | bc 10.0 | not counted: not converged, win (+20.0) | - |"
    table = format_table([bc, ilql], data).splitlines()
    assert table[2] == ("| wordle | mixed | data | the dataset's own episodes; BC within 5: **not converged** | - | "
                        "93.3 | - | - |") and table[3].startswith("| wordle | mixed | bc |")
    assert "converged | - | 12.0 |" in format_table([bc], {("wordle", "mixed"): 12.0})


def test_worker_lines_name_their_run_and_repeats_are_dropped() -> None:
    import io

    from agents.benchmark import PrefixedLines

    out = io.StringIO()
    stream = PrefixedLines(out, "[maze-mixed__bc__k0__s1] ")
    stream.write("eval/test=50 step=100\neval/test=50 step=100\n")
    stream.write("eval/test=60 ")
    stream.write("step=200\n")
    assert out.getvalue().splitlines() == ["[maze-mixed__bc__k0__s1] eval/test=50 step=100",
                                           "[maze-mixed__bc__k0__s1] eval/test=60 step=200"]


def test_episodes_sets_the_task_cells_dataset_size_and_is_part_of_the_run_key(tmp_path, monkeypatch) -> None:
    from agents import benchmark, protocol
    from agents.protocol import data_score
    from textrl.data import make_dataset

    assert benchmark.dataset_id("maze", "mixed") == "textrl/maze/mixed-v1"  # 1,000 episodes: the plain id
    assert benchmark.dataset_id("wordle", "mixed") == "textrl/wordle/mixed-n10000-v1"  # sized by the protocol
    monkeypatch.setitem(protocol.EPISODES, "maze", 5000)
    assert benchmark.dataset_id("maze", "mixed") == "textrl/maze/mixed-n5000-v1"
    assert benchmark.dataset_id("maze", "mixed", 40) == "textrl/maze/mixed-n40-v1"  # the flag wins
    with pytest.raises(ValueError, match="--episodes 0"):
        make_plan(["bc"], ["maze"], 1, episodes=0)
    small = make_plan(["bc"], ["randomwalks"], 1, ["mixed"], 2, 2, 4, 4, episodes=80)
    spec = ("randomwalks", "mixed", "bc", 0, 0)
    assert spec_key(small, spec) != spec_key(make_plan(["bc"], ["randomwalks"], 1, ["mixed"], 2, 2, 4, 4), spec)
    run_benchmark(["bc"], ["randomwalks"], 1, tmp_path, tiers=["mixed"], total_steps=2, eval_interval=2,
                  validation_episodes=4, test_episodes=4, episodes=80, progress=False)
    (work,) = (tmp_path / "work").glob("randomwalks-mixed__bc__k0__s0__*")
    trained_on = json.loads((work / "run.json").read_text())["dataset"]
    assert (trained_on["id"], trained_on["rows"]) == ("textrl/randomwalks/mixed-n80-v1", 80)
    (data,) = [r for r in read_csv(tmp_path / "runs.csv") if r["agent"] == "data"]
    assert float(data["score"]) == pytest.approx(
        data_score("randomwalks", make_dataset("textrl/randomwalks/mixed-n80-v1")), abs=1e-4)


def test_report_trains_nothing_and_covers_the_cells_whose_runs_are_all_stored(tmp_path, capsys) -> None:
    from textrl.cli import main

    out = tmp_path / "b"
    common = ["--agents", "bc,filtered_bc", "--tasks", "randomwalks", "--seeds", "2", "--steps", "2", "--eval-interval",
              "2", "--val-episodes", "4", "--eval-episodes", "4", "--no-progress", "--out", str(out)]
    with pytest.raises(ValueError, match=r"b/runs does not exist: --report reads the runs a benchmark stored there"):
        run_benchmark(["bc"], ["randomwalks"], 2, out, progress=False, train=False)
    assert not out.exists()  # nothing written for a folder that holds no benchmark
    assert main(["bench", *common, "--tiers", "mixed"]) == 0  # one cell of the two, whole
    stored = sorted(p.name for p in (out / "runs").glob("*.json"))
    (later,) = (out / "runs").glob("randomwalks-mixed__filtered_bc__k*__s1__*.json")  # the grid's other seed
    later.rename(tmp_path / later.name)
    with pytest.raises(ValueError, match=r"no cell .*\(randomwalks random \(0 of 6 runs\), randomwalks mixed "
                                         r"\(5 of 6 runs\)\): nothing to report"):
        run_benchmark(["bc", "filtered_bc"], ["randomwalks"], 2, out, total_steps=2, eval_interval=2,
                      validation_episodes=4, test_episodes=4, progress=False, train=False)
    (tmp_path / later.name).rename(later)
    capsys.readouterr()
    assert main(["bench", *common, "--report"]) == 0  # both tiers asked, the mixed one finished
    err = capsys.readouterr().err
    assert "report of the 1 of 2 cells" in err and "unfinished: randomwalks random (0 of 6 runs)" in err
    assert sorted(p.name for p in (out / "runs").glob("*.json")) == stored  # nothing trained
    assert not list((out / "work").glob("randomwalks-random*"))
    table = (out / "table.md").read_text()
    assert "| randomwalks | mixed | bc |" in table and "| randomwalks | random |" not in table
    assert {r["tier"] for r in read_csv(out / "runs.csv")} == {"mixed"}


def test_runs_stored_without_their_work_folders_resume_bc_initialised_entries(tmp_path, capsys) -> None:
    kwargs = dict(tiers=["mixed"], total_steps=4, eval_interval=2, validation_episodes=4, test_episodes=4,
                  progress=False)
    run_benchmark(["bc"], ["randomwalks"], 1, tmp_path, **kwargs)
    (bc_json,) = (tmp_path / "runs").glob("randomwalks-mixed__bc__k0__s0__*.json")
    stored = bc_json.read_text()
    (bc_work,) = (tmp_path / "work").glob("randomwalks-mixed__bc__k0__s0__*")
    first_model = (bc_work / "step_000004" / "agent" / "model" / "model.safetensors").read_bytes()
    shutil.rmtree(tmp_path / "work")  # as when runs/*.json are committed and resumed on another machine
    rows = run_benchmark(["ilql_bc"], ["randomwalks"], 1, tmp_path, **kwargs)
    assert "training the BC model of randomwalks-mixed__bc__k0__s0 again" in capsys.readouterr().err
    assert bc_json.read_text() == stored  # the stored BC result is kept
    assert (bc_work / "step_000004" / "agent" / "model" / "model.safetensors").read_bytes() == first_model
    assert [r.entry for r in rows] == ["bc", "ilql_bc"] and len(list((tmp_path / "runs").glob("*ilql_bc*"))) == 1


def test_a_free_worker_takes_a_run_whose_needs_have_ended_first_and_never_more_runs_than_workers(
        tmp_path, monkeypatch) -> None:
    import agents.benchmark as benchmark
    from agents.benchmark import _run_all, make_plan, spec_key
    from agents.protocol import Run

    plan = make_plan(["bc", "filtered_bc", "ilql_bc"], ["randomwalks"], 2, ["mixed"], 2, 2, 4, 4)
    log = []

    def fake_train(plan_, task, tier, entry, knob, seed, work_dir, progress=False, prefix_lines=False):
        spec = (task, tier, entry, knob, seed)
        if entry == "bc":  # the model BC-initialised runs start from
            (work_dir / spec_key(plan_, spec) / "step_000002" / "agent").mkdir(parents=True)
            (work_dir / spec_key(plan_, spec) / "step_000002" / "trainer_state.json").write_text("{}")
        log.append(("end", entry, knob, seed))
        return Run(task, tier, entry, knob, seed, [2], {(None, 0.0): [float(knob == 1)]}, [50.0], [], 0.1, [0.0],
                   spec_key(plan_, spec).rsplit("__", 1)[1])

    real_submit = benchmark._Workers.submit
    monkeypatch.setattr(benchmark, "train_run", fake_train)
    monkeypatch.setattr(benchmark._Workers, "submit",
                        lambda self, spec: log.append(("give", spec[2], spec[3], spec[4])) or real_submit(self, spec))
    done = {}
    _run_all(plan, tmp_path, 1, False, done, type("Bar", (), {"update": lambda self, n: None})())
    # one worker: a run is given only when the one before it has ended
    assert [event[0] for event in log] == ["give", "end"] * 8
    gives = [event[1:] for event in log if event[0] == "give"]
    # ILQL from BC seed 0 goes right after BC seed 0, before BC seed 1 and the grid (its cell's runs first)
    assert gives[:4] == [("bc", 0, 0), ("ilql_bc", 0, 0), ("bc", 0, 1), ("ilql_bc", 0, 1)]
    # the grid's other seed runs at the point chosen on validation (knob 1), right after the last grid point
    assert gives[4:] == [("filtered_bc", 0, 0), ("filtered_bc", 1, 0), ("filtered_bc", 2, 0), ("filtered_bc", 1, 1)]
    assert len(done) == 8  # each run once


def test_workers_that_finished_every_run_exit_by_themselves_and_a_failed_run_stops_them(tmp_path,
                                                                                        monkeypatch) -> None:
    import agents.benchmark as benchmark
    from agents.benchmark import _run_all, make_plan, spec_key
    from agents.protocol import Run

    class InlinePool:  # a pool that trains each run when it is given, in this process
        calls: list = []

        def __init__(self, *args, **kwargs):
            pass

        def apply_async(self, func, args, callback, error_callback):
            try:
                result = func(*args)
            except Exception as error:  # what a worker's failure reaches the main process as
                error_callback(error)
            else:
                callback(result)

        def close(self):
            self.calls.append("close")

        def terminate(self):
            self.calls.append("terminate")

        def join(self):
            self.calls.append("join")

    def fake_train(plan_, task, tier, entry, knob, seed, work_dir, progress=False, prefix_lines=False):
        if seed == 1:
            raise RuntimeError("seed 1 failed")
        spec = (task, tier, entry, knob, seed)
        return Run(task, tier, entry, knob, seed, [2], {(None, 0.0): [1.0]}, [50.0], [], 0.1, [0.0],
                   spec_key(plan_, spec).rsplit("__", 1)[1])

    monkeypatch.setattr(benchmark.multiprocessing, "get_context", lambda method: type("Ctx", (), {"Pool": InlinePool}))
    monkeypatch.setattr(benchmark, "train_run", fake_train)
    bar = type("Bar", (), {"update": lambda self, n: None})()
    done = {}
    _run_all(make_plan(["bc"], ["randomwalks"], 1, ["mixed"], 2, 2, 4, 4), tmp_path, 2, False, done, bar)
    assert len(done) == 1 and InlinePool.calls == ["close", "join"]  # no SIGTERM to workers on their way out
    InlinePool.calls.clear()
    with pytest.raises(RuntimeError, match="seed 1 failed"):
        _run_all(make_plan(["bc"], ["randomwalks"], 2, ["mixed"], 2, 2, 4, 4), tmp_path, 2, False, done, bar)
    assert InlinePool.calls == ["terminate", "join"]
