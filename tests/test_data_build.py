"""Task datasets: ids, metadata, tokenizer, determinism, atomic builds and the reuse of a built id."""

import itertools
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
from textrl.data.store import datasets_root
from textrl.tasks import get_task

RW = "textrl/randomwalks/random-v1"


@pytest.fixture(autouse=True)
def _fresh_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))


def test_metadata_tokenizer_and_episode_texts() -> None:
    task = get_task("randomwalks")
    ds = make_dataset(RW, num_episodes=40, progress=False)
    assert ds.total_episodes == 40
    assert Path(ds.storage.data_path).is_relative_to(datasets_root())
    meta = ds.storage.metadata
    assert ds.spec.env_spec.id == "textrl/RandomWalks-v0"
    assert ds._eval_env_spec.id == "textrl/RandomWalks-v0"
    assert ds.recover_environment(eval_env=True).unwrapped.task.name == "randomwalks"
    assert meta["ref_min_score"] == pytest.approx(task.ref_min_score)
    assert meta["ref_max_score"] == pytest.approx(task.ref_max_score)
    assert meta["algorithm_name"] == "randomwalks_behaviour_eps1"
    assert meta["author"] == {"textrl"} and "epsilon 1" in meta["description"] and meta["requirements"] == ["textrl"]
    assert build_info(ds) == {"source": "task", "task": "randomwalks", "tier": "random", "epsilon": 1.0,
                              "num_episodes": 40, "seed": build.DEFAULT_SEED, "chunk": build.CHUNK}
    tok = load_tokenizer(RW)
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


def test_existing_id_is_reused_and_conflicting_requests_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    make_dataset(RW, num_episodes=20, progress=False)
    monkeypatch.setattr(build, "write_dataset", lambda *a, **k: pytest.fail("an existing dataset was rebuilt"))
    assert make_dataset(RW, progress=False).total_episodes == 20
    assert make_dataset(RW, num_episodes=20, seed=build.DEFAULT_SEED).total_episodes == 20
    with pytest.raises(ValueError, match="num_episodes 25 .built with 20"):
        make_dataset(RW, num_episodes=25)
    with pytest.raises(ValueError, match="seed 3"):
        make_dataset(RW, seed=3)


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
    with pytest.raises(KeyboardInterrupt):
        make_dataset(RW, num_episodes=60, progress=False)
    assert calls["n"] > 25
    with pytest.raises(FileNotFoundError, match="no local dataset"):
        load(RW)
    assert local_dataset_ids() == []
    assert not any(p.name.startswith(".") for p in datasets_root().rglob("*")), "staging folders were left behind"
    monkeypatch.setattr(task, "behaviour_policy", real)
    ds = make_dataset(RW, num_episodes=60, progress=False)
    assert ds.total_episodes == 60 and local_dataset_ids() == [RW]


@pytest.mark.parametrize("bad, message", [
    ("textrl/randomwalks/random", "malformed dataset id"),
    ("textrl/chess/random-v1", "not a task dataset id"),
    ("textrl/randomwalks/hard-v1", "unknown tier 'hard'"),
    ("x/randomwalks-v0", "malformed dataset id"),
    ("textrl/randomwalks/random-v0", "-v0 was built with step limits as truncations.*use textrl/randomwalks/random-v1"),
    ("textrl/maze/mixed-v2", "-v2 does not exist .task datasets are at -v1.; use textrl/maze/mixed-v1"),
])
def test_bad_ids(bad: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_task_dataset_id(bad)
    with pytest.raises(ValueError, match=message):
        make_dataset(bad)


def test_bad_episode_count() -> None:
    with pytest.raises(ValueError, match="num_episodes must be a positive int"):
        make_dataset(RW, num_episodes=0)


def test_tiers_order_the_data_by_quality() -> None:
    means = {tier: pack(make_dataset(f"textrl/randomwalks/{tier}-v1", num_episodes=150, progress=False)).mean_return
             for tier in ("random", "medium", "expert")}
    assert means["expert"] == pytest.approx(1.0)  # the optimal policy reaches the goal in the fewest nodes
    assert means["random"] < means["medium"] < means["expert"]
