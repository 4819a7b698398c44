"""The token environments: gymnasium registration, observations, errors, episode ends, vector env."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import textrl  # noqa: F401  (registers the gymnasium ids)
from textrl.env import TokenEnv, TokenVectorEnv
from textrl.tasks import RandomWalksTask, get_task

ENV_IDS = ["textrl/RandomWalks-v1", "textrl/Maze-v1", "textrl/MazePO-v1", "textrl/Brackets-v0"]
TASK_NAMES = ["randomwalks", "maze", "maze_po", "brackets"]


def node(v: int) -> int:
    """RandomWalks token of node v (tokens: <pad>, <eos>, then nodes 0..n-1)."""
    return get_task("randomwalks").token_to_id[str(v)]


def maze_prompt(r: int, c: int, observe_position: bool = True) -> str:
    """The start observation of a maze cell, computed from the layout (wall bits up, down, left, right)."""
    walls = get_task("maze").walls
    bits = "".join(str(int(walls[r + dr, c + dc])) for dr, dc in [(-1, 0), (1, 0), (0, -1), (0, 1)])
    return f"goal 8,6 pos {r},{c} w{bits}" if observe_position else f"w{bits}"


def one(obs: dict) -> dict:
    """A single observation as a batch of one (the policies are batched)."""
    return {k: np.asarray(v)[None] for k, v in obs.items()}


# ---------------------------------------------------------------------- registration


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_make_and_check_env(env_id):
    env = gymnasium.make(env_id)
    assert isinstance(env.unwrapped, TokenEnv)
    assert env.unwrapped.task.env_id == env_id
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    obs, *_ = env.step(env.unwrapped.task.eos_id)
    assert env.observation_space.contains(obs)
    env.close()


def test_gymnasium_make_kwargs_reach_task():
    env = gymnasium.make("textrl/Maze-v1", max_steps=5, render_mode="ansi")
    assert env.unwrapped.task.max_steps == 5
    assert env.unwrapped.render_mode == "ansi"
    env.reset(seed=0)
    for k in range(1, 6):
        _, _, terminated, truncated, _ = env.step(env.unwrapped.task.eos_id)
        assert terminated == (k == 5) and not truncated  # the budget is part of the task


# ---------------------------------------------------------------------- observations


@pytest.mark.parametrize("name", TASK_NAMES)
def test_observation_layout(name):
    task = get_task(name)
    env = TokenEnv(task)
    obs, _ = env.reset(seed=3)
    assert set(obs) == {"input_ids", "length"}
    assert obs["input_ids"].dtype == np.min_scalar_type(task.vocab_size - 1) == np.uint8
    assert obs["input_ids"].shape == (task.max_length,)
    assert obs["length"].dtype == np.int32 and obs["length"].shape == ()
    n = int(obs["length"])
    assert 1 <= n < task.max_length
    assert (obs["input_ids"][n:] == task.pad_id).all()
    assert (obs["input_ids"][:n] != task.pad_id).all()
    assert env.observation_space.contains(obs)


def test_observation_dtype_grows_with_vocab():
    task = RandomWalksTask(n_nodes=300, p_edge=0.02, max_nodes=3)
    assert task.vocab_size == 302
    env = TokenEnv(task)
    obs, _ = env.reset(seed=0)
    assert obs["input_ids"].dtype == np.uint16
    assert env.observation_space["input_ids"].dtype == np.uint16
    assert env.observation_space.contains(obs)


def test_randomwalks_step_appends_action():
    task = get_task("randomwalks")
    env = TokenEnv(task)
    obs, _ = env.reset(options={"prompt": "5"})
    assert obs["length"] == 1 and obs["input_ids"][0] == node(5)
    nxt = int(np.flatnonzero(task.adj[5])[0])
    obs2, *_ = env.step(node(nxt))
    assert obs2["length"] == 2
    assert obs2["input_ids"][0] == node(5) and obs2["input_ids"][1] == node(nxt)
    assert (obs2["input_ids"][2:] == task.pad_id).all()
    # the returned observation is a copy: stepping again leaves it unchanged
    before = obs2["input_ids"].copy()
    env.step(task.eos_id)
    np.testing.assert_array_equal(obs2["input_ids"], before)


@pytest.mark.parametrize("observe_position", [True, False])
def test_maze_step_appends_action_and_response(observe_position):
    task = get_task("maze" if observe_position else "maze_po")
    env = TokenEnv(task)
    obs, _ = env.reset(options={"prompt": maze_prompt(1, 1, observe_position)})
    n = int(obs["length"])
    assert n == (5 if observe_position else 1)
    right = task.token_to_id["right"]
    obs2, reward, terminated, truncated, _ = env.step(right)
    assert (reward, terminated, truncated) == (-1.0, False, False)
    assert obs2["input_ids"][n] == right
    np.testing.assert_array_equal(obs2["input_ids"][:n], obs["input_ids"][:n])
    if observe_position:
        expected_response = task.encode(" ".join(maze_prompt(1, 2).split()[2:]))  # pos 1,2 wXXXX
        k = len(expected_response)
        assert obs2["input_ids"][n + 1:n + 1 + k].tolist() == expected_response
    else:
        k = 1  # one walls token (the start cell among those with walls w1110 is hidden)
        assert task.vocab[obs2["input_ids"][n + 1]].startswith("w")
    assert obs2["length"] == n + 1 + k
    assert (obs2["input_ids"][n + 1 + k:] == task.pad_id).all()


# ---------------------------------------------------------------------- invalid inputs


@pytest.fixture
def rw_env():
    env = TokenEnv(get_task("randomwalks"))
    env.reset(seed=11)
    return env


def test_action_out_of_range_names_action_and_space(rw_env):
    n = rw_env.task.vocab_size
    for bad in (n, -1, 10**6):
        with pytest.raises(ValueError) as e:
            rw_env.step(bad)
        assert str(bad) in str(e.value)
        assert f"Discrete({n})" in str(e.value)


@pytest.mark.parametrize("bad", [3.0, "3", np.array([2, 3]), None, True, np.float32(3)])
def test_action_of_wrong_type(rw_env, bad):
    with pytest.raises((TypeError, ValueError)) as e:
        rw_env.step(bad)
    assert f"Discrete({rw_env.task.vocab_size})" in str(e.value)


def test_numpy_integer_actions_accepted(rw_env):
    task = rw_env.task
    for a in (np.int64(task.eos_id), np.array(task.eos_id, dtype=np.uint8), np.uint8(task.eos_id)):
        rw_env.reset(seed=1)
        obs, reward, terminated, _, _ = rw_env.step(a)
        assert obs["length"] == 2 and obs["input_ids"][1] == task.eos_id
        assert terminated and reward == 0.0


@pytest.mark.parametrize("name", TASK_NAMES)
def test_invalid_action_does_not_corrupt_episode(name):
    task = get_task(name)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    env, ref = TokenEnv(task), TokenEnv(task)
    obs, _ = env.reset(seed=42)
    obs_ref, _ = ref.reset(seed=42)
    for bad in (task.vocab_size, -3, 3.0, "up", np.array([1, 2])):
        with pytest.raises((TypeError, ValueError), match=r"action .* (is outside the action space|is not a token id)"):
            env.step(bad)
    done = False
    while not done:
        a = task.optimal_policy(one(obs), rng_a)[0]
        assert a == task.optimal_policy(one(obs_ref), rng_b)[0]
        obs, r, te, tr, info = env.step(int(a))
        obs_ref, r2, te2, tr2, info2 = ref.step(int(a))
        np.testing.assert_array_equal(obs["input_ids"], obs_ref["input_ids"])
        assert obs["length"] == obs_ref["length"]
        assert (r, te, tr, info) == (r2, te2, tr2, info2)
        done = te or tr


def test_step_after_end_or_before_reset_raises():
    task = get_task("randomwalks")
    env = TokenEnv(task)
    with pytest.raises(RuntimeError, match=r"after the episode ended: call reset\(\) first"):
        env.step(node(1))
    env.reset(seed=0)
    _, reward, terminated, truncated, _ = env.step(task.eos_id)
    assert terminated and not truncated and reward == 0.0
    with pytest.raises(RuntimeError, match=r"after the episode ended: call reset\(\) first"):
        env.step(node(1))
    # reset makes it steppable again
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(task.eos_id)
    assert obs["length"] == 2


@pytest.mark.parametrize("name", TASK_NAMES)
def test_reset_with_bad_prompts(name):
    task = get_task(name)
    env = TokenEnv(task)
    with pytest.raises(ValueError, match="unknown token"):
        env.reset(options={"prompt": "no_such_token"})
    with pytest.raises(ValueError, match="outside the vocabulary"):
        env.reset(options={"prompt": [task.vocab_size]})
    with pytest.raises(ValueError, match="a prompt must hold 1 to"):
        env.reset(options={"prompt": [task.eos_id] * (task.max_length + 1)})
    with pytest.raises(ValueError, match="a prompt must hold 1 to .* got 0"):
        env.reset(options={"prompt": []})
    for not_ids in (5, [3.0], [True], ["3"]):
        with pytest.raises(TypeError, match="list of int token ids"):
            env.reset(options={"prompt": not_ids})
    # a failed reset leaves the env usable
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_randomwalks_prompt_too_long_or_goal():
    task = get_task("randomwalks")
    env = TokenEnv(task)
    with pytest.raises(ValueError, match="a prompt must hold 1 to 10 tokens, got 11"):
        env.reset(options={"prompt": " ".join(["3"] * (task.max_length + 1))})
    with pytest.raises(ValueError, match="one start node other than 0 .* got '3 5'"):
        env.reset(options={"prompt": "3 5"})
    with pytest.raises(ValueError, match="one start node other than 0 .* got '0'"):
        env.reset(options={"prompt": "0"})
    with pytest.raises(ValueError, match="one start node other than 0 .* got '0'"):
        env.reset(options={"prompt": [node(0)]})
    with pytest.raises(ValueError, match="one start node other than 0 .* got '<eos>'"):
        env.reset(options={"prompt": "<eos>"})


def test_maze_prompt_must_be_a_start():
    task = get_task("maze")
    env = TokenEnv(task)
    with pytest.raises(ValueError, match="not a start observation of maze: 'goal 8,6 pos 8,6"):
        env.reset(options={"prompt": maze_prompt(8, 6)})  # the goal is not a start
    with pytest.raises(ValueError, match="not a start observation of maze: 'goal 8,6 pos 1,1 w0000'"):
        env.reset(options={"prompt": "goal 8,6 pos 1,1 w0000"})  # wrong walls
    _, info = env.reset(options={"prompt": maze_prompt(5, 3)})
    assert info["prompt"] == maze_prompt(5, 3)


# ---------------------------------------------------------------------- episode ends


def test_randomwalks_invalid_edge_terminates_with_zero():
    task = get_task("randomwalks")
    env = TokenEnv(task)
    env.reset(options={"prompt": "5"})
    non_edge = int(np.flatnonzero(~task.adj[5])[0])
    obs, reward, terminated, truncated, _ = env.step(node(non_edge))
    assert (reward, terminated, truncated) == (0.0, True, False)
    assert obs["length"] == 2


def _bfs_dist(adj: np.ndarray) -> np.ndarray:
    n = len(adj)
    dist = np.full(n, -1)
    dist[0] = 0
    frontier = [0]
    while frontier:
        nxt = []
        for v in frontier:
            for u in range(n):
                if adj[u, v] and dist[u] < 0:
                    dist[u] = dist[v] + 1
                    nxt.append(u)
        frontier = nxt
    return dist


def test_randomwalks_arrival_reward_is_optimality():
    task = get_task("randomwalks")
    dist = _bfs_dist(task.adj)
    env = TokenEnv(task)
    checked_suboptimal = False
    for start in task.starts:
        start = int(start)
        # optimal path
        env.reset(options={"prompt": str(start)})
        v, total, done = start, 0.0, False
        while not done:
            u = next(int(u) for u in np.flatnonzero(task.adj[v]) if dist[u] == dist[v] - 1)
            _, reward, terminated, truncated, _ = env.step(node(u))
            total += reward
            done = terminated or truncated
            v = u
        assert v == 0 and terminated and not truncated and reward == 1.0
        # a detour: go to a neighbour w with dist[w] >= dist[start], then optimally
        detours = [int(w) for w in np.flatnonzero(task.adj[start]) if w != 0 and dist[w] >= dist[start]]
        if detours and dist[detours[0]] + 2 < task.max_nodes:
            w = detours[0]
            env.reset(options={"prompt": str(start)})
            env.step(node(w))
            v, nodes = w, 2
            while v != 0:
                v = next(int(u) for u in np.flatnonzero(task.adj[v]) if dist[u] == dist[v] - 1)
                _, reward, terminated, truncated, _ = env.step(node(v))
                nodes += 1
            assert terminated and not truncated
            l_opt = dist[start] + 1
            assert reward == pytest.approx((10 - nodes) / (10 - l_opt))
            assert 0 <= reward < 1
            checked_suboptimal = True
    assert checked_suboptimal


def test_randomwalks_ten_nodes_without_arrival_terminates():
    task = get_task("randomwalks")
    # find a cycle-free-of-goal walk of 10 nodes: follow edges avoiding node 0
    start = next(int(s) for s in task.starts if any(u != 0 for u in np.flatnonzero(task.adj[s])))
    env = TokenEnv(task)
    obs, _ = env.reset(options={"prompt": str(start)})
    v = start
    for k in range(2, 11):
        u = next(int(u) for u in np.flatnonzero(task.adj[v]) if u != 0)
        obs, reward, terminated, truncated, _ = env.step(node(u))
        v = u
        assert reward == 0.0 and not truncated
        assert terminated == (k == 10)  # the node limit is part of the task: scored 0, nothing to bootstrap
    assert obs["length"] == 10 == task.max_length
    with pytest.raises(RuntimeError, match=r"after the episode ended: call reset\(\) first"):
        env.step(node(0))


def test_maze_reaching_goal_terminates_with_zero():
    task = get_task("maze")
    env = TokenEnv(task)
    obs, _ = env.reset(options={"prompt": maze_prompt(5, 6)})
    rewards = []
    for _ in range(2):
        obs, r, te, tr, _ = env.step(task.token_to_id["down"])
        rewards.append(r)
        assert not te and not tr
    n = int(obs["length"])
    obs, r, te, tr, info = env.step(task.token_to_id["down"])
    rewards.append(r)
    assert rewards == [-1.0, -1.0, 0.0]
    assert te and not tr
    # the final move is appended, with no env response after it
    assert obs["length"] == n + 1 and obs["input_ids"][n] == task.token_to_id["down"]
    assert info["text"].endswith("down")


def test_maze_max_steps_terminates():
    task = get_task("maze")
    env = TokenEnv(task)
    env.reset(options={"prompt": maze_prompt(1, 1)})
    up = task.token_to_id["up"]  # a wall: the position never changes
    for k in range(1, task.max_steps + 1):
        obs, r, te, tr, _ = env.step(up)
        assert r == -1.0 and not tr
        assert te == (k == task.max_steps)
    assert obs["length"] <= task.max_length
    assert obs["input_ids"][obs["length"] - 1] == up  # no env response after the last move


def test_maze_non_move_token_costs_four_and_stays():
    task = get_task("maze")
    env = TokenEnv(task)
    obs, _ = env.reset(options={"prompt": maze_prompt(5, 5)})
    n = int(obs["length"])
    for bad in ("<eos>", "goal", "pos", "3,3", "w0000", "<pad>"):
        obs, r, te, tr, _ = env.step(task.token_to_id[bad])
        assert (r, te, tr) == (-4.0, False, False)
        assert obs["input_ids"][n] == task.token_to_id[bad]
        assert task.decode(obs["input_ids"][n + 1:obs["length"]]) == "pos 5,5 " + maze_prompt(5, 5).split()[-1]
        n = int(obs["length"])
    # still at (5, 5): one step right is (5, 6)
    obs, r, *_ = env.step(task.token_to_id["right"])
    assert r == -1.0
    assert task.decode(obs["input_ids"][n + 1:obs["length"]]).startswith("pos 5,6 ")


# ---------------------------------------------------------------------- render and info


@pytest.mark.parametrize("name", TASK_NAMES)
def test_render_ansi_and_info(name):
    task = get_task(name)
    env = TokenEnv(task, render_mode="ansi")
    obs, info = env.reset(seed=7)
    prompt_text = task.decode(obs["input_ids"][:obs["length"]])
    assert info == {"prompt": prompt_text, "text": prompt_text}
    assert env.render() == prompt_text
    obs, _, _, _, info = env.step(int(task.optimal_policy(one(obs), np.random.default_rng(0))[0]))
    text = task.decode(obs["input_ids"][:obs["length"]])
    assert info["prompt"] == prompt_text
    assert info["text"] == text == env.render()
    assert text.startswith(prompt_text + " ")
    assert len(text.split()) == obs["length"]
    assert TokenEnv(task).render() is None
    with pytest.raises(ValueError, match="render_mode must be None or 'ansi', got 'human'"):
        TokenEnv(task, render_mode="human")


# ---------------------------------------------------------------------- vector env


@pytest.mark.parametrize("name", TASK_NAMES)
def test_vector_env_matches_single_envs(name):
    task = get_task(name)
    n, seed, steps = 4, 123, 70
    policy = task.behaviour_policy(0.5)
    venv = TokenVectorEnv(task, n)
    envs = [TokenEnv(task) for _ in range(n)]
    vrngs = [np.random.default_rng(1000 + i) for i in range(n)]
    srngs = [np.random.default_rng(1000 + i) for i in range(n)]
    vobs, _ = venv.reset(seed=seed)
    sobs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    sdone = [False] * n
    ends = 0
    resets_checked = 0
    for _ in range(steps):
        for i in range(n):
            np.testing.assert_array_equal(vobs["input_ids"][i], sobs[i]["input_ids"])
            assert vobs["length"][i] == sobs[i]["length"]
        actions = np.array([policy({k: v[i:i + 1] for k, v in vobs.items()}, vrngs[i])[0] for i in range(n)])
        vobs, vrew, vterm, vtrunc, _ = venv.step(actions)
        assert venv.observation_space.contains(vobs)
        for i, env in enumerate(envs):
            a = int(policy(one(sobs[i]), srngs[i])[0])
            assert a == actions[i]
            if sdone[i]:
                sobs[i], _ = env.reset(seed=None)
                r, te, tr = 0.0, False, False
                resets_checked += 1
            else:
                sobs[i], r, te, tr, _ = env.step(a)
            assert vrew[i] == r
            assert vterm[i] == te and vtrunc[i] == tr
            sdone[i] = te or tr
            ends += sdone[i]
    assert ends >= 3 * n
    assert resets_checked >= 2 * n


def test_vector_env_reset_seed_list_and_prompts():
    task = get_task("maze")
    venv = TokenVectorEnv(task, 3)
    obs_a, _ = venv.reset(seed=[5, 6, 7])
    obs_b, _ = venv.reset(seed=5)
    np.testing.assert_array_equal(obs_a["input_ids"], obs_b["input_ids"])
    prompts = [maze_prompt(1, 1), maze_prompt(5, 3), maze_prompt(7, 6)]
    obs, _ = venv.reset(options={"prompts": prompts})
    assert [task.decode(obs["input_ids"][i, :obs["length"][i]]) for i in range(3)] == prompts
    with pytest.raises(ValueError, match=r"options\['prompts'\] must hold 3 prompts, got 2"):
        venv.reset(options={"prompts": prompts[:2]})


def test_env_construction_errors():
    task = get_task("maze")
    with pytest.raises(TypeError, match="max_steps"):
        TokenEnv(task, max_steps=5)  # options belong to the task, not next to a Task object
    with pytest.raises(TypeError, match="max_steps"):
        TokenVectorEnv(task, 2, max_steps=5)
    with pytest.raises(TypeError, match="task must be a Task or a task name/env id, got int"):
        TokenEnv(42)
    assert TokenVectorEnv("maze", 2, max_steps=5).task.max_steps == 5
    venv = TokenVectorEnv(task, 3)
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="one seed per env"):
        venv.reset(seed=[1, 2])


def test_prompt_as_numpy_ids():
    task = get_task("randomwalks")
    obs, info = TokenEnv(task).reset(options={"prompt": np.array([node(7)], dtype=np.uint8)})
    assert info["prompt"] == "7" and obs["input_ids"][0] == node(7)


def test_vector_env_invalid_actions():
    task = get_task("randomwalks")
    venv = TokenVectorEnv(task, 3)
    venv.reset(seed=0)
    before = venv.reset(seed=0)[0]
    for bad in (np.array([2, 3], dtype=np.int64), np.array([[2, 3, 4]]), np.array([2.0, 3.0, 4.0]),
                [2, 3], np.array(["2", "3", "4"]), np.array([2, 3, task.vocab_size]), np.array([-1, 2, 3])):
        with pytest.raises(ValueError, match=r"actions (must be an integer array of shape \(3,\)|\[-?\d+\] are outside the action space)"):
            venv.step(bad)
    # the episodes are untouched: a valid step behaves as from the reset state
    ref = TokenVectorEnv(task, 3)
    ref.reset(seed=0)
    acts = np.array([task.eos_id] * 3)
    out = venv.step(acts)
    out_ref = ref.step(acts)
    np.testing.assert_array_equal(out[0]["input_ids"], out_ref[0]["input_ids"])
    np.testing.assert_array_equal(out[1], out_ref[1])
    np.testing.assert_array_equal(out[2], out_ref[2])
    assert before["length"].tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="num_envs must be at least 1, got 0"):
        TokenVectorEnv(task, 0)


@pytest.mark.parametrize("code", [
    "import gymnasium\nenv = gymnasium.make('textrl:textrl/Maze-v1')",  # the module prefix imports textrl itself
    "import gymnasium, textrl\ngymnasium.register_envs(textrl)\nenv = gymnasium.make('textrl/Maze-v1')",
])
def test_gymnasium_idioms_make_an_env_in_a_fresh_interpreter(code: str) -> None:
    import subprocess
    import sys

    probe = code + "\nobs, info = env.reset(seed=0)\nprint(type(env.unwrapped).__name__, info['prompt'].split()[0])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["TokenEnv", "goal"]
