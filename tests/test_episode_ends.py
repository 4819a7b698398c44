"""Episode ends through the whole data path: a task's own limits are terminations (no bootstrap),
a limit from outside the task (gymnasium's TimeLimit) is a truncation (bootstrap from V)."""

from pathlib import Path

import gymnasium
import numpy as np
import pytest
from recorded import record_episode

import textrl  # noqa: F401  (registers the env ids)
from textrl.data import make_dataset, pack, parse_task_dataset_id
from textrl.data.writer import write_dataset
from textrl.env import observation_space
from textrl.rollout import Episode
from textrl.tasks import get_task


@pytest.fixture(autouse=True)
def _fresh_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))


def _ends_and_notdone(dataset) -> list[tuple[int, bool, bool, float, np.ndarray]]:
    """Per episode: (actions, terminated, truncated, last reward, packed notdone of its actions)."""
    batch = pack(dataset).batch(np.arange(dataset.total_episodes))
    episodes = {ep.id: ep for ep in dataset.iterate_episodes()}
    out = []
    for row, index in enumerate(dataset.episode_indices):
        ep = episodes[int(index)]
        n = len(ep.actions)
        assert int(batch["action_mask"][row].sum()) == n
        out.append((n, bool(ep.terminations[-1]), bool(ep.truncations[-1]), float(ep.rewards[-1]),
                    batch["notdone"][row, :n].numpy()))
    return out


def test_randomwalks_node_limit_is_a_termination_in_the_dataset_and_the_packed_batch() -> None:
    task = get_task("randomwalks")
    dataset = make_dataset("textrl/randomwalks/random-v1", num_episodes=40, progress=False)
    hit_limit = 0
    for n, terminated, truncated, last_reward, notdone in _ends_and_notdone(dataset):
        assert terminated and not truncated  # every RandomWalks end belongs to the task
        assert notdone[-1] == 0.0 and (notdone[:-1] == 1.0).all()
        if n == task.max_nodes - 1 and last_reward == 0.0:  # 10 nodes (start + 9 moves), no arrival
            hit_limit += 1
    assert hit_limit >= 5, "the random tier should hold walks that used the whole 10-node budget"


def test_maze_step_budget_is_a_termination() -> None:
    task = get_task("maze")
    dataset = make_dataset("textrl/maze/random-v1", num_episodes=20, progress=False)
    used_budget = 0
    for n, terminated, truncated, last_reward, notdone in _ends_and_notdone(dataset):
        assert terminated and not truncated
        assert notdone[-1] == 0.0
        used_budget += n == task.max_steps and last_reward != 0.0  # the 20th move did not reach the goal
    assert used_budget >= 5


def _timelimit_episode(env: gymnasium.Env, seed: int) -> Episode:
    """Play 'up' until the env ends the episode ('up' never reaches the goal: it is the maze's lowest cell)."""
    up = env.unwrapped.task.token_to_id["up"]
    return record_episode(env, seed, lambda: up)


def test_timelimit_truncation_still_bootstraps() -> None:
    env = gymnasium.make("textrl/Maze-v1", max_episode_steps=5)
    task = env.unwrapped.task
    episodes = [_timelimit_episode(env, seed) for seed in range(3)]
    for ep in episodes:
        assert len(ep.actions) == 5 and ep.truncations[-1] and not ep.terminations.any()
    dataset = write_dataset("user/maze-timelimit-v0", [episodes], observation_space(task), env.action_space,
                            task.tokenizer, {"env": None, "algorithm_name": "up"}, {"source": "test"})
    for n, terminated, truncated, _, notdone in _ends_and_notdone(dataset):
        assert n == 5 and truncated and not terminated
        assert (notdone == 1.0).all()  # the last action's target bootstraps from V(s_6)


@pytest.mark.parametrize("build", [parse_task_dataset_id, make_dataset])
def test_v0_task_ids_are_refused_with_the_reason(build) -> None:
    with pytest.raises(ValueError, match="-v0 was built with step limits as truncations.*use textrl/maze/mixed-v1"):
        build("textrl/maze/mixed-v0")
