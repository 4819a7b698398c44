"""Task datasets: ids, metadata, tokenizer, determinism, atomic builds and the reuse of a built id."""

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from textrl.data import (
    build,
    build_info,
    episode_texts,
    load,
    load_tokenizer,
    local_dataset_ids,
    make_dataset,
    pack,
    parse_task_dataset_id,
)
from textrl.data.store import (
    dataset_dir,
    datasets_root,
    folder_of,
    staging_leftovers,
    staging_prefix,
)
from textrl.tasks import get_task

RW = "textrl/randomwalks/random-v1"


@pytest.fixture(autouse=True)
def _fresh_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))


def test_metadata_tokenizer_and_episode_texts() -> None:
    task = get_task("randomwalks")
    ds = make_dataset(RW, num_episodes=40, progress=False)
    assert ds.total_episodes == 40 and ds.spec.dataset_id == "textrl/randomwalks/random-n40-v1"
    assert Path(ds.storage.data_path).is_relative_to(datasets_root())
    meta = ds.storage.metadata
    assert ds.spec.env_spec.id == "textrl/RandomWalks-v1"
    assert ds._eval_env_spec.id == "textrl/RandomWalks-v1"
    assert ds.recover_environment(eval_env=True).unwrapped.task.name == "randomwalks"
    assert meta["ref_min_score"] == pytest.approx(task.ref_min_score)
    assert meta["ref_max_score"] == pytest.approx(task.ref_max_score)
    assert meta["algorithm_name"] == "randomwalks_behaviour_eps1"
    assert meta["author"] == {"textrl"} and "epsilon 1" in meta["description"] and meta["requirements"] == ["textrl"]
    assert build_info(ds) == {"source": "task", "task": "randomwalks", "tier": "random", "epsilon": 1.0,
                              "num_episodes": 40, "seed": build.DEFAULT_SEED, "chunk": build.CHUNK}
    tok = load_tokenizer(ds.spec.dataset_id)
    assert tok.get_vocab() == task.tokenizer.get_vocab() and tok.pad_token_id == task.pad_id
    episodes = list(ds.iterate_episodes(range(5)))
    for ep, (prompt, text) in zip(episodes, episode_texts(ds, range(5))):
        obs = ep.observations
        assert prompt == task.decode(obs["input_ids"][0][: obs["length"][0]])
        assert text == task.decode(obs["input_ids"][-1][: obs["length"][-1]])
        assert tok.decode(tok(text)["input_ids"]) == text
        # The random tier of RandomWalks walks along existing edges, as trlx's data does.
        nodes = obs["input_ids"][-1][: obs["length"][-1]].astype(int) - 2
        assert all(task.adj[a, b] for a, b in itertools.pairwise(nodes))


def test_same_id_same_data_in_any_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = pack(make_dataset("textrl/maze/mixed-v1", num_episodes=30, progress=False)).batch(np.arange(30))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "elsewhere"))
    second = pack(make_dataset("textrl/maze/mixed-v1", num_episodes=30, progress=False)).batch(np.arange(30))
    assert (first == second).all()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "other-seed"))  # one id, one seed per root
    other_seed = pack(make_dataset("textrl/maze/mixed-v1", num_episodes=30, seed=1, progress=False))
    assert not np.array_equal(other_seed.returns.numpy(), first["returns"].numpy())


def test_a_size_or_seed_is_part_of_the_id_and_reuse_checks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    small = make_dataset(RW, num_episodes=20, progress=False)
    assert small.spec.dataset_id == "textrl/randomwalks/random-n20-v1"
    assert make_dataset(RW, num_episodes=3, seed=2, progress=False).spec.dataset_id == \
        "textrl/randomwalks/random-n3-s2-v1"
    monkeypatch.setattr(build, "write_dataset", lambda *a, **k: pytest.fail("an existing dataset was rebuilt"))
    assert make_dataset("textrl/randomwalks/random-n20-v1", progress=False).total_episodes == 20
    assert make_dataset(RW, num_episodes=20, seed=build.DEFAULT_SEED).total_episodes == 20
    with pytest.raises(ValueError, match="names num_episodes 20 but num_episodes=25 was asked"):
        make_dataset("textrl/randomwalks/random-n20-v1", num_episodes=25)
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        make_dataset(RW, seed=-1)


def test_the_standard_id_never_returns_a_small_build(monkeypatch: pytest.MonkeyPatch) -> None:
    small = make_dataset(RW, num_episodes=10, progress=False)
    # as an older textrl did: a small build stored under the standard id
    folder_of(small).parent.mkdir(parents=True, exist_ok=True)
    folder_of(small).rename(datasets_root() / RW)
    monkeypatch.setattr(build, "write_dataset", lambda *a, **k: pytest.fail("an existing dataset was rebuilt"))
    with pytest.raises(ValueError, match=r"other data than this id means: num_episodes 1000 \(built with 10\)"):
        make_dataset(RW, progress=False)


def test_a_dataset_built_for_a_retired_env_id_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    make_dataset(RW, num_episodes=10, progress=False)
    monkeypatch.setattr(build, "env_id_of", lambda ds: "textrl/RandomWalks-v0")  # as a build before the rename
    with pytest.raises(ValueError, match=r"env textrl/RandomWalks-v1 \(built with textrl/RandomWalks-v0\); delete"):
        make_dataset(RW, num_episodes=10, progress=False)


def test_a_concurrent_build_of_other_data_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    real = build.write_dataset

    def another_process_wins(dataset_id, chunks, *args):
        *rest, info = args  # the other process built 5 episodes with seed 9 under the same id first
        real(dataset_id, [next(iter(chunks))[:5]], *rest, {**info, "num_episodes": 5, "seed": 9})
        raise FileExistsError(dataset_id)

    monkeypatch.setattr(build, "write_dataset", another_process_wins)
    with pytest.raises(ValueError, match=r"num_episodes 30 \(built with 5\), seed 0 \(built with 9\)"):
        make_dataset(RW, num_episodes=30, progress=False)


def test_staging_leftovers_of_killed_builds_are_cleaned(tmp_path: Path) -> None:
    root = datasets_root()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = staging_prefix().split("@", 1)[1]
    killed = root / f".staging-{dead.pid}@{host}abc123"
    running = root / f"{staging_prefix()}xyz789"
    foreign = root / ".staging-12@otherhost-abc"
    for folder in (killed, running, foreign):
        (folder / "textrl").mkdir(parents=True)
    assert dict(staging_leftovers()) == {foreign: None, killed: False, running: True}
    make_dataset(RW, num_episodes=4, progress=False)
    assert not killed.exists() and running.exists() and foreign.exists()


def test_interrupted_build_leaves_nothing_and_rebuilds(monkeypatch: pytest.MonkeyPatch) -> None:
    task = get_task("randomwalks")
    real = task.behaviour_policy
    calls = {"n": 0}

    def failing(epsilon: float):
        policy = real(epsilon)

        def policy_that_dies(obs, rng):
            calls["n"] += 1
            if calls["n"] > 25:  # the first chunk of 10 walks is already written to Minari by then
                raise KeyboardInterrupt("simulated interruption")
            return policy(obs, rng)

        return policy_that_dies

    monkeypatch.setattr(build, "CHUNK", 10)
    monkeypatch.setattr(task, "behaviour_policy", failing)
    with pytest.raises(KeyboardInterrupt, match="simulated interruption"):
        make_dataset(RW, num_episodes=60, progress=False)
    assert calls["n"] > 25
    with pytest.raises(FileNotFoundError, match="no local dataset"):
        load(RW)
    assert local_dataset_ids() == []
    assert not any(p.name.startswith(".") for p in datasets_root().rglob("*")), "staging folders were left behind"
    monkeypatch.setattr(task, "behaviour_policy", real)
    ds = make_dataset(RW, num_episodes=60, progress=False)
    assert ds.total_episodes == 60 and local_dataset_ids() == ["textrl/randomwalks/random-n60-v1"]


@pytest.mark.parametrize("bad, message", [
    ("textrl/randomwalks/random", "malformed dataset id"),
    ("textrl/chess/random-v1", "not a task dataset id"),
    ("textrl/randomwalks/hard-v1", "unknown tier 'hard'"),
    ("x/randomwalks-v0", "malformed dataset id"),
    ("textrl/randomwalks/random-v0", "-v0 was built with step limits as truncations.*use textrl/randomwalks/random-v1"),
    ("textrl/maze/mixed-v2", "-v2 does not exist .maze datasets are at -v1.; use textrl/maze/mixed-v1"),
    ("../../../escape/x-v0", "leaves the datasets root"),
    ("textrl/../../x-v0", "leaves the datasets root"),
    ("/tmp/abs/x-v0", "leaves the datasets root"),
    ("textrl\\randomwalks\\random-v0", "backslash"),
    ("textrl/.hidden/random-v0", "malformed dataset id"),
])
def test_bad_ids(bad: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_task_dataset_id(bad)
    with pytest.raises(ValueError, match=message):
        make_dataset(bad)


def test_ids_never_leave_the_datasets_root(tmp_path: Path) -> None:
    outside = pack(make_dataset(RW, num_episodes=5, progress=False))  # a real dataset, to be found outside
    escape = tmp_path / "escape" / "x-v0"
    shutil.copytree(datasets_root() / "textrl/randomwalks/random-n5-v1", escape, ignore=shutil.ignore_patterns("packed"))
    climb = os.path.relpath(escape, datasets_root())
    assert climb.startswith("..")
    assert not os.path.isdir(climb)  # relative to the working directory it is no folder: only an id could reach it
    for call in (load, pack, load_tokenizer, make_dataset, lambda d: dataset_dir(str(escape))):
        with pytest.raises(ValueError, match="leaves the datasets root"):
            call(climb)
    assert not (escape / "packed").exists()
    # a real folder stays loadable as a Path or a path string that is not id-shaped
    assert load(escape).total_episodes == load(str(escape)).total_episodes == len(outside) == 5


def test_bad_episode_count() -> None:
    with pytest.raises(ValueError, match="num_episodes must be a positive int"):
        make_dataset(RW, num_episodes=0)


def test_tiers_order_the_data_by_quality() -> None:
    means = {tier: pack(make_dataset(f"textrl/randomwalks/{tier}-v1", num_episodes=150, progress=False)).mean_return
             for tier in ("random", "medium", "expert")}
    assert means["expert"] == pytest.approx(1.0)  # the optimal policy reaches the goal in the fewest nodes
    assert means["random"] < means["medium"] < means["expert"]
