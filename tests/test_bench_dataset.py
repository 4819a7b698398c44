"""`textrl bench --dataset ID` (issue 22 item 1): your own dataset, made with from_samples(..., env=TextEnv),
benchmarked under the same protocol as a task, its env made again from what the dataset records; and the
datasets it refuses, each with what to do."""

from __future__ import annotations

import json

import gymnasium
import numpy as np
import pytest
import word_tokens

from agents.benchmark import make_plan, run_benchmark
from agents.reports import read_csv
from textrl import EnvUnavailableError, dataset_env, from_samples, load
from textrl.cli import main
from textrl.data.store import BUILD_INFO, folder_of

WORDS = ["<pad>", "<eos>", "the", "kettle", "is", "great", "awful", "fine"]
ENV, DATA = "benchreviews/Kettle-v0", "benchreviews/kettle-v0"


def tokenizer():
    """A whitespace word-level tokenizer built locally (ids = positions in WORDS)."""
    return word_tokens.word_tokenizer(WORDS)


def kettle_reward(prompt: str, completion: str) -> float:
    """Importable by path (`test_bench_dataset:kettle_reward`), so the dataset records how to make its env."""
    return 1.0 if "great" in completion.split() else -1.0 if "awful" in completion.split() else 0.0


def _texts(n: int = 48) -> list[str]:
    rng = np.random.default_rng(0)
    return [f"the kettle is {rng.choice(['great', 'awful', 'awful', 'fine'])}" for _ in range(n)]


def _register(env_id: str, reward_fn) -> None:
    _forget(env_id)
    gymnasium.register(env_id, entry_point="textrl:TextEnv",
                       kwargs=dict(tokenizer=tokenizer(), prompts=["", "the kettle"], reward_fn=reward_fn,
                                   max_new_tokens=4))


def _forget(env_id: str) -> None:
    gymnasium.registry.pop(env_id, None)


@pytest.fixture(scope="module")
def kettle() -> list[float]:
    """The dataset, made in a process that registered its env; the env is then forgotten, as in a fresh one."""
    _register(ENV, kettle_reward)
    texts = _texts()
    rewards = [kettle_reward("", t) for t in texts]
    from_samples(texts, rewards, tokenizer(), DATA, env=ENV, overwrite=True, progress=False)
    _forget(ENV)
    return rewards


def test_bench_runs_the_protocol_on_a_dataset_whose_env_it_makes_from_the_record(kettle, tmp_path, capsys) -> None:
    args = ["bench", "--dataset", DATA, "--agents", "bc,ilql", "--seeds", "1", "--steps", "2", "--eval-interval", "2",
            "--val-episodes", "2", "--eval-episodes", "2", "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    # the env was registered again from the dataset's record: the same reward function, imported by path
    assert gymnasium.spec(ENV).kwargs["reward_fn"] is kettle_reward
    table = (tmp_path / "table.md").read_text()
    assert table in printed
    data = float(np.mean(kettle))
    assert f"| {ENV} | {DATA} | data | mean return of the dataset's own episodes; BC within 0.1 (5% of the reward " \
           f"range): " in table and f"| - | {data:.2f} | - | - |" in table
    assert f"| {ENV} | {DATA} | bc | temperature " in table and f"| {ENV} | {DATA} | ilql | beta " in table
    rows = read_csv(tmp_path / "runs.csv")
    (data_row,) = [r for r in rows if r["agent"] == "data"]
    assert float(data_row["score"]) == pytest.approx(data, abs=1e-4)  # the raw mean return: nothing normalised
    scores = [float(r["score"]) for r in rows if r["agent"] != "data"]
    assert {r["split"] for r in rows if r["agent"] != "data"} == {"val", "test"}
    assert all(-1.0 <= s <= 1.0 for s in scores)  # mean returns of a reward in [-1, 1]
    ilql = {r["acting"] for r in rows if r["agent"] == "ilql" and r["split"] == "val"}
    assert ilql == {f"beta={b:g},temperature={t:g}" for b in (4, 16, 100) for t in (0, 1)}  # the same knobs
    stored = sorted(p.name for p in (tmp_path / "runs").glob("*.json"))
    assert [n.split("__")[:4] for n in stored] == [["benchreviews+Kettle-v0-benchreviews+kettle-v0", e, "k0", "s0"]
                                                   for e in ("bc", "ilql")]
    assert (tmp_path / "scores_benchreviews+Kettle-v0.png").read_bytes()[:4] == b"\x89PNG"
    assert main(args) == 0 and "2 of 2 runs reused" in capsys.readouterr().err


def test_a_dataset_made_again_under_its_id_gets_new_runs(kettle, tmp_path) -> None:
    plan = make_plan(["bc"], [], 1, datasets=[DATA], total_steps=2, validation_episodes=2, test_episodes=2)
    from agents.benchmark import spec_key

    spec = (ENV, DATA, "bc", 0, 0)
    before = spec_key(plan, spec)
    _register(ENV, kettle_reward)
    texts = _texts(40)
    from_samples(texts, [kettle_reward("", t) for t in texts], tokenizer(), DATA, env=ENV, overwrite=True,
                 progress=False)
    try:
        assert spec_key(plan, spec) != before
    finally:
        texts = _texts()
        from_samples(texts, kettle, tokenizer(), DATA, env=ENV, overwrite=True, progress=False)
        _forget(ENV)


def test_bench_refuses_an_unknown_dataset_a_dataset_without_env_and_a_task_dataset(kettle, capsys) -> None:
    with pytest.raises(ValueError, match="--dataset benchreviews/nothing-v0: no local dataset"):
        make_plan(["bc"], [], 1, datasets=["benchreviews/nothing-v0"])
    texts = _texts(8)
    from_samples(texts, [kettle_reward("", t) for t in texts], tokenizer(), "benchreviews/noenv-v0", progress=False)
    with pytest.raises(ValueError, match=r"names no env to evaluate agents in; make it with from_samples\(\.\.\., "
                                         r"env='ns/MyText-v0'\)"):
        make_plan(["bc"], [], 1, datasets=["benchreviews/noenv-v0"])
    with pytest.raises(ValueError, match="a task dataset is benchmarked as its task; use --tasks maze --tiers mixed"):
        make_plan(["bc"], [], 1, datasets=["textrl/maze/mixed-v1"])
    assert main(["bench", "--dataset", "benchreviews/noenv-v0", "--agents", "bc", "--out", "unused"]) == 2
    assert "textrl bench: error: --dataset benchreviews/noenv-v0: the dataset names no env" in capsys.readouterr().err


def test_a_reward_function_that_cannot_be_imported_is_named_with_what_to_do(kettle, tmp_path, monkeypatch) -> None:
    env_id, data_id = "benchreviews/Lambda-v0", "benchreviews/lambda-v0"
    _register(env_id, lambda prompt, completion: float("great" in completion))
    texts = _texts(8)
    from_samples(texts, [kettle_reward("", t) for t in texts], tokenizer(), data_id, env=env_id, progress=False)
    info = json.loads((folder_of(load(data_id)) / BUILD_INFO).read_text())
    assert "is a lambda or a nested function, which has no import path" in info["env_record"]["unrecorded"]
    assert make_plan(["bc"], [], 1, datasets=[data_id]).cells == ((env_id, data_id),)  # registered here: fine
    _forget(env_id)
    with pytest.raises(EnvUnavailableError, match=r"names env 'benchreviews/Lambda-v0', which is not registered in "
                                                  r"this process, and the dataset cannot make it \(its reward_fn: "
                                                  r".*lambda.*Register it first"):
        make_plan(["bc"], [], 1, datasets=[data_id])
    # --import: a module that registers the env makes it available again, here and in every worker
    (tmp_path / "kettle_env.py").write_text(
        "import gymnasium\nfrom test_bench_dataset import tokenizer\n"
        f"gymnasium.register({env_id!r}, entry_point='textrl:TextEnv', kwargs=dict(tokenizer=tokenizer(), "
        "prompts=[''], reward_fn=lambda p, c: 0.0, max_new_tokens=4))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = {}
    monkeypatch.setattr("agents.benchmark._run_plan", lambda plan, *args: seen.setdefault("cells", plan.cells) and [])
    run_benchmark(["bc"], [], 1, tmp_path / "out", datasets=[data_id], imports=["kettle_env"], progress=False)
    assert seen["cells"] == ((env_id, data_id),)
    with pytest.raises(ValueError, match="--import no_such_module: ModuleNotFoundError"):
        run_benchmark(["bc"], [], 1, tmp_path / "out", datasets=[data_id], imports=["no_such_module"])
    _forget(env_id)


def test_a_recorded_reward_function_that_no_longer_imports_is_named(kettle) -> None:
    data_id = "benchreviews/moved-v0"
    _register(ENV, kettle_reward)
    texts = _texts(8)
    from_samples(texts, [kettle_reward("", t) for t in texts], tokenizer(), data_id, env=ENV, progress=False)
    _forget(ENV)
    path = folder_of(load(data_id)) / BUILD_INFO
    info = json.loads(path.read_text())
    assert info["env_record"]["kwargs"]["reward_fn"] == {"$import": "test_bench_dataset:kettle_reward"}
    assert info["env_record"]["kwargs"]["tokenizer"] == {"$tokenizer": "dataset"}
    info["env_record"]["kwargs"]["reward_fn"] = {"$import": "moved_away:kettle_reward"}  # the module was renamed
    path.write_text(json.dumps(info))
    with pytest.raises(EnvUnavailableError, match="what it records does not import here: cannot import "
                                                  "moved_away:kettle_reward: ModuleNotFoundError"):
        dataset_env(data_id)
    assert ENV not in gymnasium.registry


def test_the_dataset_flag_benches_datasets_alone_unless_tasks_are_named() -> None:
    from agents.commands import _bench_settings
    from textrl.cli import build_parser

    def settings(*argv):
        return _bench_settings(build_parser().parse_args(["bench", *argv]))

    alone = settings("--dataset", "a/b-v0,c/d-v0", "--dataset", "e/f-v0")
    assert alone["datasets"] == ["a/b-v0", "c/d-v0", "e/f-v0"] and alone["tasks"] == []
    assert settings("--quick", "--dataset", "a/b-v0")["tasks"] == []
    both = settings("--dataset", "a/b-v0", "--tasks", "maze", "--import", "mymodule")
    assert both["tasks"] == ["maze"] and both["imports"] == ["mymodule"] and settings()["datasets"] == []
    assert settings("--episodes", "10000")["episodes"] == 10000 and settings()["episodes"] is None
