"""Rollouts through the vector env: collect_episodes (datasets) and evaluate (scores)."""

from __future__ import annotations

import numpy as np
import pytest

from textrl.env import TokenEnv
from textrl.rollout import PROGRESS_MIN_EPISODES, EvalResult, collect_episodes, evaluate
from textrl.tasks import get_task

TASK_NAMES = ["randomwalks", "maze", "maze_po", "brackets"]


def _episodes_equal(a, b) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if not (np.array_equal(x.actions, y.actions) and np.array_equal(x.rewards, y.rewards)
                and np.array_equal(x.observations["input_ids"], y.observations["input_ids"])
                and x.text == y.text):
            return False
    return True


@pytest.mark.parametrize("name", TASK_NAMES)
def test_collect_episodes_deterministic_and_consistent(name):
    task = get_task(name)
    policy = task.behaviour_policy(0.5)
    a = collect_episodes(task, policy, num_episodes=30, seed=10, num_envs=7)
    b = collect_episodes(task, policy, num_episodes=30, seed=10, num_envs=7)
    c = collect_episodes(task, policy, num_episodes=30, seed=11, num_envs=7)
    assert len(a) == 30
    assert _episodes_equal(a, b)
    assert not _episodes_equal(a, c)
    for ep in a:
        T = len(ep.actions)
        assert T >= 1
        ids, length = ep.observations["input_ids"], ep.observations["length"]
        assert ids.shape == (T + 1, task.max_length) and length.shape == (T + 1,)
        assert ids.dtype == task.obs_dtype and length.dtype == np.int32
        assert ep.actions.dtype == np.int64 and ep.rewards.dtype == np.float64
        assert len(ep.rewards) == len(ep.terminations) == len(ep.truncations) == T
        # exactly one end, at the last step
        assert not (ep.terminations[:-1] | ep.truncations[:-1]).any()
        assert ep.terminations[-1] != ep.truncations[-1]
        for t in range(T):
            n = length[t]
            np.testing.assert_array_equal(ids[t + 1][:n], ids[t][:n])
            assert ids[t + 1][n] == ep.actions[t]
            assert length[t + 1] > n
        assert ep.prompt == task.decode(ids[0][:length[0]])
        assert ep.text == task.decode(ids[-1][:length[-1]])
        task.check_prompt(ids[0][:length[0]].tolist())


@pytest.mark.parametrize("name", ["randomwalks", "maze", "brackets"])
def test_collected_episodes_replay_in_a_single_env(name):
    """Each episode is what a single TokenEnv gives from its prompt under its actions."""
    task = get_task(name)
    env = TokenEnv(task)
    for ep in collect_episodes(task, task.behaviour_policy(0.5), num_episodes=40, seed=20, num_envs=6):
        obs, info = env.reset(options={"prompt": ep.prompt})
        assert info["prompt"] == ep.prompt
        np.testing.assert_array_equal(obs["input_ids"], ep.observations["input_ids"][0])
        for t, action in enumerate(ep.actions):
            obs, reward, terminated, truncated, info = env.step(int(action))
            np.testing.assert_array_equal(obs["input_ids"], ep.observations["input_ids"][t + 1])
            assert obs["length"] == ep.observations["length"][t + 1]
            assert (reward, terminated, truncated) == (ep.rewards[t], ep.terminations[t], ep.truncations[t])
        assert info["text"] == ep.text


@pytest.mark.parametrize("num_episodes,num_envs", [(1, 8), (13, 4), (50, 50), (64, 5)])
def test_episode_counts_and_shares(num_episodes, num_envs):
    task = get_task("maze_po")  # drawn starts (the maze's evaluation plays its 25 starts equally: below)
    policy = task.behaviour_policy(0.5)
    eps = collect_episodes(task, policy, num_episodes=num_episodes, seed=1, num_envs=num_envs)
    res = evaluate(policy, task, num_episodes=num_episodes, seed=1, num_envs=num_envs)
    assert len(eps) == len(res.returns) == len(res.lengths) == num_episodes
    assert all(ep.terminations[-1] or ep.truncations[-1] for ep in eps)
    np.testing.assert_allclose([e.rewards.sum() for e in eps], res.returns)
    assert [len(e.actions) for e in eps] == res.lengths.tolist()
    assert (res.lengths >= 1).all() and (res.lengths <= task.max_steps).all()


def test_sub_envs_past_their_share_draw_no_prompts_and_each_share_is_its_env_s_own_episodes(monkeypatch):
    """Each sub-env i plays its share as a single TokenEnv seeded seed + i would, episode after episode; past
    its share (episodes that go unused) it draws no more prompts: one draw per episode in all."""
    task = get_task("brackets")
    draws = []
    sample = type(task).sample_prompt
    monkeypatch.setattr(type(task), "sample_prompt", lambda self, rng: (draws.append(1), sample(self, rng))[1])
    num_episodes, num_envs, seed = 13, 4, 6
    episodes = collect_episodes(task, task.optimal_policy, num_episodes, seed=seed, num_envs=num_envs)
    assert len(draws) == num_episodes
    lengths = {len(e.actions) for e in episodes}
    assert len(lengths) > 1  # sub-envs end their episodes at different steps
    quota = [4, 3, 3, 3]
    k = 0
    for i, share in enumerate(quota):
        env = TokenEnv(task)
        obs, _ = env.reset(seed=seed + i)
        for _ in range(share):
            ep, done = episodes[k], False
            np.testing.assert_array_equal(obs["input_ids"], ep.observations["input_ids"][0])
            for action in ep.actions:
                assert not done
                obs, _, terminated, truncated, _ = env.step(int(action))
                done = terminated or truncated
            assert done
            obs, _ = env.reset()
            k += 1
    res = evaluate(task.optimal_policy, task, num_episodes, seed=seed, num_envs=num_envs)
    assert res.lengths.tolist() == [len(e.actions) for e in episodes]


def test_collect_episodes_returns_match_evaluate():
    task = get_task("maze_po")
    policy = task.behaviour_policy(0.25)
    eps = collect_episodes(task, policy, num_episodes=50, seed=12, num_envs=9)
    res = evaluate(policy, task, num_episodes=50, seed=12, num_envs=9)
    np.testing.assert_allclose([e.rewards.sum() for e in eps], res.returns)
    assert [len(e.actions) for e in eps] == res.lengths.tolist()


@pytest.mark.parametrize("name", ["randomwalks", "maze"])
def test_evaluate_normalized_scores(name):
    task = get_task(name)
    opt = evaluate(task.optimal_policy, task, num_episodes=500, seed=13)
    assert opt.ref_min_score == task.ref_min_score and opt.ref_max_score == task.ref_max_score
    assert opt.normalized_score == pytest.approx(100.0, abs=3.0)
    assert opt.normalized_score == pytest.approx(task.normalized_score(opt.mean_return))
    rnd = evaluate(task.random_policy, task, num_episodes=2000, seed=14, num_envs=256)
    se = 100 * rnd.returns.std(ddof=1) / np.sqrt(len(rnd.returns)) / (task.ref_max_score - task.ref_min_score)
    assert abs(rnd.normalized_score) < 4 * se + 1e-9
    assert abs(rnd.normalized_score) < 5.0


def test_eval_result_formula():
    res = EvalResult(np.array([-10.0, -20.0]), np.array([3, 4]), ref_min_score=-40.0, ref_max_score=-10.0)
    assert res.mean_return == -15.0
    assert res.normalized_score == pytest.approx(100 * 25 / 30)


@pytest.mark.parametrize("kwargs", [{"num_episodes": 0}, {"num_episodes": -3}, {"num_episodes": 2.5},
                                    {"num_envs": 0}, {"num_envs": True}])
def test_rollouts_reject_bad_sizes(kwargs):
    task = get_task("randomwalks")
    args = {"num_episodes": 4, "seed": 0, **kwargs}
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        evaluate(task.random_policy, task, **args)
    with pytest.raises(ValueError, match=name):
        collect_episodes(task, task.random_policy, **args)


def test_policy_of_wrong_shape_or_type_is_a_clear_error():
    task = get_task("randomwalks")

    def one_action_short(obs, rng):
        return task.random_policy(obs, rng)[:-1]

    with pytest.raises(ValueError, match="one_action_short.*shape"):
        evaluate(one_action_short, task, num_episodes=8, num_envs=4)
    with pytest.raises(ValueError, match="integer"):
        evaluate(lambda obs, rng: task.random_policy(obs, rng).astype(float), task, num_episodes=8, num_envs=4)


def test_progress_bar_can_be_shown_or_hidden(capsys):
    task = get_task("randomwalks")
    evaluate(task.random_policy, task, num_episodes=20, seed=0, progress=True)
    assert "evaluate randomwalks" in capsys.readouterr().err
    collect_episodes(task, task.random_policy, num_episodes=20, seed=0, progress=True)
    assert "collect randomwalks" in capsys.readouterr().err
    # default: only long runs show a bar
    assert PROGRESS_MIN_EPISODES > 20
    evaluate(task.random_policy, task, num_episodes=20, seed=0)
    collect_episodes(task, task.random_policy, num_episodes=20, seed=0, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("episodes, seed", [(256, 0), (64, 1_000_003), (128, 2_000_003)])
def test_the_maze_is_evaluated_over_its_25_starts_equally_so_the_optimum_reads_100(episodes, seed) -> None:
    """Drawn starts made the optimum read 100.62 (256 episodes, seed 0) or 99.4 (128, seed 2000003)."""
    task = get_task("maze")
    result = evaluate(task.optimal_policy, task, num_episodes=episodes, seed=seed)
    assert len(result.returns) == 25 * -(-episodes // 25)
    assert result.normalized_score == pytest.approx(100.0, abs=1e-9)
    assert result.mean_return == pytest.approx(task.ref_max_score, abs=1e-12)


def test_fewer_episodes_than_starts_play_distinct_starts() -> None:
    task = get_task("maze")
    seen = []
    evaluate(lambda obs, rng: seen.append(obs["input_ids"][:, :obs["length"][0]].copy()) or task.optimal_policy(obs, rng),
             task, num_episodes=10, seed=3, num_envs=10)
    firsts = {tuple(row) for row in seen[0]}
    assert len(firsts) == 10
