"""The tasks: graph and maze construction, exact reference scores, policies, tokenizers, rollouts."""

from __future__ import annotations

from collections import deque

import gymnasium
import numpy as np
import pytest
from transformers import PreTrainedTokenizerFast

import textrl  # noqa: F401
from textrl.env import TokenEnv
from textrl.rollout import collect_episodes, evaluate
from textrl.tasks import TASKS, MazePOTask, MazeTask, RandomWalksTask, get_task

TASK_NAMES = ["randomwalks", "maze", "maze_po", "brackets"]
MOVES = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}


def one(obs: dict) -> dict:
    return {k: np.asarray(v)[None] for k, v in obs.items()}


# The exact reference scores of the default tasks (dynamic programming / BFS), as stored in the
# task modules' docstrings; the tests below recompute them and check them by rollouts.
RW_REF_MIN = 0.005000454285300288
RW_RANDOM_WALK = 0.3462256995104408
MAZE_REF_MIN = -74.67347740001391


def mc_check(returns: np.ndarray, expected: float, k: float = 4.0) -> None:
    """The sample mean is within k standard errors of `expected`."""
    se = returns.std(ddof=1) / np.sqrt(len(returns))
    assert se > 0
    assert abs(returns.mean() - expected) <= k * se, (returns.mean(), expected, se)


# ---------------------------------------------------------------------- registry


def test_get_task_by_name_and_env_id():
    assert set(TASKS) == {"randomwalks", "maze", "maze_po", "brackets", "endgames", "endgames_stockfish", "wordle"}
    assert get_task("textrl/RandomWalks-v1") is get_task("randomwalks")
    assert isinstance(get_task("textrl/Maze-v1"), MazeTask)
    assert isinstance(get_task("textrl/MazePO-v1"), MazePOTask)
    assert get_task("maze", max_steps=7).max_steps == 7
    with pytest.raises(ValueError, match="unknown task"):
        get_task("chess")


@pytest.mark.parametrize(("old", "new"), [("textrl/RandomWalks-v0", "textrl/RandomWalks-v1"),
                                          ("textrl/Maze-v0", "textrl/Maze-v1"), ("textrl/MazePO-v0", "textrl/MazePO-v1")])
def test_retired_env_ids_are_refused_naming_the_new_id_and_the_change(old: str, new: str) -> None:
    with pytest.raises(ValueError, match=rf"{old} is retired: .*truncated=True.*; use {new}$"):
        get_task(old)
    with pytest.warns(DeprecationWarning), pytest.raises(gymnasium.error.DeprecatedEnv, match=f"use {new}"):
        gymnasium.make(old)
    assert gymnasium.make(new).unwrapped.task.env_id == new


# ---------------------------------------------------------------------- RandomWalks


def trlx_graph(n: int = 21, p: float = 0.1, seed: int = 1000) -> np.ndarray:
    """trlx's randomwalks graph, written out independently."""
    rs = np.random.RandomState(seed)
    while True:
        adj = rs.rand(n, n) > 1 - p
        for i in range(n):
            adj[i, i] = False
        if all(adj[i].sum() > 0 for i in range(n)):
            break
    adj[0] = False
    adj[0, 0] = True
    return adj


def test_randomwalks_graph_matches_trlx():
    task = get_task("randomwalks")
    adj = trlx_graph()
    assert task.adj.shape == (21, 21)
    np.testing.assert_array_equal(np.asarray(task.adj, dtype=bool), adj)
    assert task.vocab_size == 23 and task.max_length == 10
    other = RandomWalksTask(graph_seed=1002)
    assert not np.array_equal(other.adj, task.adj)
    np.testing.assert_array_equal(other.adj, trlx_graph(seed=1002))
    # with seed 1001 no node has an edge into node 0: the unreachable goal is guarded
    assert trlx_graph(seed=1001)[1:, 0].sum() == 0
    with pytest.raises(ValueError, match="no start node"):
        RandomWalksTask(graph_seed=1001)


def test_randomwalks_invalid_construction():
    with pytest.raises(ValueError, match="RandomWalks needs n_nodes >= 2, max_nodes >= 2 and 0 < p_edge <= 1"):
        RandomWalksTask(n_nodes=1)
    with pytest.raises(ValueError, match="RandomWalks needs n_nodes >= 2, max_nodes >= 2 and 0 < p_edge <= 1"):
        RandomWalksTask(p_edge=0.0)
    with pytest.raises(ValueError, match="RandomWalks needs n_nodes >= 2, max_nodes >= 2 and 0 < p_edge <= 1"):
        RandomWalksTask(max_nodes=1)


def test_randomwalks_optimal_return_is_exactly_one():
    task = get_task("randomwalks")
    assert task.ref_max_score == 1.0
    res = evaluate(task.optimal_policy, task, num_episodes=2000, seed=0)
    assert len(res.returns) == 2000
    assert res.mean_return == 1.0
    assert (res.returns == 1.0).all()
    assert res.normalized_score == pytest.approx(100.0, abs=1e-9)


def test_randomwalks_ref_min_matches_uniform_policy():
    task = get_task("randomwalks")
    assert task.ref_min_score == pytest.approx(RW_REF_MIN, rel=1e-12)
    res = evaluate(task.random_policy, task, num_episodes=40000, seed=1, num_envs=512)
    mc_check(res.returns, task.ref_min_score)
    assert abs(res.normalized_score) < 2.0


def test_randomwalks_random_walk_return_about_035():
    task = get_task("randomwalks")
    assert task.random_walk_return == pytest.approx(RW_RANDOM_WALK, rel=1e-12)
    assert task.tiers["random"] == 1.0
    res = evaluate(task.behaviour_policy(task.tiers["random"]), task, num_episodes=20000, seed=2, num_envs=512)
    mc_check(res.returns, task.random_walk_return)


# ---------------------------------------------------------------------- Maze


def maze_layout() -> np.ndarray:
    from importlib import resources

    text = resources.files("textrl.tasks").joinpath("data/double_t_maze.txt").read_text()
    return np.array([[ch == "1" for ch in line.strip()] for line in text.splitlines() if line.strip()])


def maze_prompt(walls: np.ndarray, r: int, c: int, observe_position: bool = True) -> str:
    bits = "".join(str(int(walls[r + dr, c + dc])) for dr, dc in MOVES.values())
    return f"goal 8,6 pos {r},{c} w{bits}" if observe_position else f"w{bits}"


def maze_bfs(walls: np.ndarray, goal=(8, 6)) -> dict:
    dist = {goal: 0}
    q = deque([goal])
    while q:
        r, c = q.popleft()
        for dr, dc in MOVES.values():
            nb = (r + dr, c + dc)
            if not walls[nb] and nb not in dist:
                dist[nb] = dist[(r, c)] + 1
                q.append(nb)
    return dist


def test_maze_layout_starts_and_goal():
    task = get_task("maze")
    walls = maze_layout()
    np.testing.assert_array_equal(task.walls, walls)
    free = {(int(r), int(c)) for r, c in np.argwhere(~walls)}
    assert (8, 6) in free
    assert len(free) == 26
    assert task.cells[task.goal] == (8, 6)
    assert len(task.starts) == 25
    assert {task.cells[s] for s in task.starts} == free - {(8, 6)}
    # every start prompt is accepted; sampled prompts are starts
    env = TokenEnv(task)
    seen = set()
    for seed in range(300):
        _, info = env.reset(seed=seed)
        seen.add(info["prompt"])
    assert seen == {maze_prompt(walls, r, c) for r, c in free - {(8, 6)}}


def test_maze_ref_max_is_minus_684_by_running_optimal_policy():
    task = get_task("maze")
    assert task.ref_max_score == pytest.approx(-6.84, abs=1e-9)
    walls = maze_layout()
    dist = maze_bfs(walls)
    starts = sorted(set(dist) - {(8, 6)})
    assert len(starts) == 25
    # the BFS optimum, independently: -(d - 1) per start
    assert np.mean([-(dist[s] - 1) for s in starts]) == pytest.approx(-6.84, abs=1e-12)
    env = TokenEnv(task)
    rng = np.random.default_rng(0)
    returns = []
    for r, c in starts:
        obs, _ = env.reset(options={"prompt": maze_prompt(walls, r, c)})
        total, done, steps = 0.0, False, 0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(int(task.optimal_policy(one(obs), rng)[0]))
            total += reward
            steps += 1
            done = terminated or truncated
        assert terminated and not truncated
        assert steps == dist[(r, c)]
        returns.append(total)
    assert np.mean(returns) == pytest.approx(-6.84, abs=1e-9)
    res = evaluate(task.optimal_policy, task, num_episodes=500, seed=3)
    assert set(res.returns.tolist()) <= {-(d - 1.0) for d in dist.values() if d > 0}


def test_maze_ref_min_matches_uniform_policy():
    task = get_task("maze")
    assert task.ref_min_score == pytest.approx(MAZE_REF_MIN, rel=1e-12)
    res = evaluate(task.random_policy, task, num_episodes=6000, seed=4, num_envs=512)
    mc_check(res.returns, task.ref_min_score)
    assert (res.lengths <= task.max_steps).all()


def test_maze_po_observation_has_no_position():
    task = get_task("maze_po")
    full = get_task("maze")
    assert task.ref_max_score < full.ref_max_score and task.ref_min_score == full.ref_min_score
    position_tokens = {task.token_to_id[t] for t in ["goal", "pos"]}
    position_tokens |= {task.token_to_id[f"{r},{c}"] for r, c in task.cells}
    moves = {task.token_to_id[m] for m in MOVES}
    episodes = collect_episodes(task, task.behaviour_policy(0.5), num_episodes=40, seed=5, num_envs=8)
    for ep in episodes:
        ids = ep.observations["input_ids"][-1][:ep.observations["length"][-1]]
        assert not position_tokens & set(ids.tolist())
        # walls, then (move, walls) pairs
        assert all(task.vocab[t].startswith("w") for t in ids[0::2])
        assert all(t in moves for t in ids[1::2])
        assert "pos" not in ep.text and "goal" not in ep.text


# ---------------------------------------------------------------------- tokenizers


@pytest.mark.parametrize("name", TASK_NAMES)
def test_tokenizer(name):
    task = get_task(name)
    tok = task.tokenizer
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert len(tok) == task.vocab_size
    assert tok.pad_token == "<pad>" and tok.eos_token == "<eos>"
    assert tok.pad_token_id == task.pad_id and tok.eos_token_id == task.eos_id
    assert tok.convert_ids_to_tokens(list(range(task.vocab_size))) == task.vocab
    for ep in collect_episodes(task, task.behaviour_policy(0.5), num_episodes=10, seed=6, num_envs=4):
        ids = ep.observations["input_ids"][-1][:ep.observations["length"][-1]].tolist()
        text = task.decode(ids)
        assert text == ep.text
        assert tok(text, add_special_tokens=False)["input_ids"] == ids
        assert task.encode(text) == ids
        assert tok.convert_tokens_to_ids(text.split()) == ids


# ---------------------------------------------------------------------- behaviour policies


def _batch_obs(task, n: int, seed: int) -> dict:
    """n observations from partway through behaviour episodes."""
    eps = collect_episodes(task, task.behaviour_policy(0.5), num_episodes=n, seed=seed, num_envs=8)
    rows = [{k: v[len(e.actions) // 2] for k, v in e.observations.items()} for e in eps]
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


@pytest.mark.parametrize("name", TASK_NAMES)
def test_behaviour_policy_epsilon_zero_is_optimal(name):
    task = get_task(name)
    obs = _batch_obs(task, 60, seed=7)
    pol = task.behaviour_policy(0.0)
    for seed in range(3):
        np.testing.assert_array_equal(pol(obs, np.random.default_rng(seed)),
                                      task.optimal_policy(obs, np.random.default_rng(seed)))


def test_behaviour_policy_epsilon_one_randomwalks_is_uniform_edge():
    task = get_task("randomwalks")
    v = 5
    neighbours = np.flatnonzero(task.adj[v])
    n = 20000
    obs = {"input_ids": np.tile(np.array([[v + 2] + [task.pad_id] * 9], dtype=np.uint8), (n, 1)),
           "length": np.ones(n, dtype=np.int32)}
    acts = task.behaviour_policy(1.0)(obs, np.random.default_rng(0))
    expl = task.exploration_policy(obs, np.random.default_rng(1))
    for a in (acts, expl):
        assert set((a - 2).tolist()) == set(neighbours.tolist())
        freq = np.bincount(a - 2, minlength=task.n_nodes)[neighbours] / n
        p = 1 / len(neighbours)
        assert np.abs(freq - p).max() < 5 * np.sqrt(p * (1 - p) / n)
    # half-and-half mixture: the optimal token has probability 0.5 + 0.5 / degree
    best = task.optimal_policy({k: x[:1] for k, x in obs.items()}, None)[0]
    mix = task.behaviour_policy(0.5)(obs, np.random.default_rng(2))
    p_best = 0.5 + 0.5 / len(neighbours)
    assert abs((mix == best).mean() - p_best) < 5 * np.sqrt(p_best * (1 - p_best) / n)


@pytest.mark.parametrize("name", ["maze", "maze_po"])
def test_behaviour_policy_epsilon_one_maze_is_uniform_move(name):
    task = get_task(name)
    obs = _batch_obs(task, 1, seed=8)
    n = 20000
    obs = {k: np.repeat(v, n, axis=0) for k, v in obs.items()}
    up = task.token_to_id["up"]
    for a in (task.behaviour_policy(1.0)(obs, np.random.default_rng(0)),
              task.exploration_policy(obs, np.random.default_rng(1))):
        assert set(a.tolist()) == {up, up + 1, up + 2, up + 3}
        assert [task.vocab[t] for t in range(up, up + 4)] == list(MOVES)
        freq = np.bincount(a - up, minlength=4) / n
        assert np.abs(freq - 0.25).max() < 5 * np.sqrt(0.25 * 0.75 / n)


@pytest.mark.parametrize("eps", [-0.1, 1.01, 2.0, float("nan")])
def test_behaviour_policy_invalid_epsilon(eps):
    with pytest.raises(ValueError, match=r"epsilon must lie in \[0, 1\], got"):
        get_task("randomwalks").behaviour_policy(eps)


def test_tiers():
    for name in TASK_NAMES:
        tiers = get_task(name).tiers
        assert set(tiers) == {"random", "medium", "mixed", "expert"}
        assert all(0.0 <= e <= 1.0 for e in tiers.values())
        assert tiers["expert"] == 0.0 and tiers["random"] == 1.0


def test_maze_po_belief_policy_reaches_the_goal_from_every_start():
    """The value-iteration belief policy is exact: its mean over the 25 starts is ref_max_score."""
    task = get_task("maze_po")
    returns = []
    for start in task.starts:
        env = TokenEnv(task)
        env.reset(seed=0)
        env._ep.state["cell"][0] = start  # pin the hidden start; the prompt is its wall pattern
        env._ep.ids[0, 0] = task._prompt(int(start))[0]
        obs, total, done, terminated = env._ep.obs(0), 0.0, False, False
        while not done:
            action = task.optimal_policy({k: v[None] for k, v in obs.items()}, np.random.default_rng(0))[0]
            obs, reward, terminated, truncated, _ = env.step(int(action))
            total += reward
            done = terminated or truncated
        assert terminated, f"start {task.cells[start]} never reached the goal"
        returns.append(total)
    assert np.mean(returns) == pytest.approx(task.ref_max_score, abs=1e-9)
    assert task.ref_max_score == pytest.approx(-7.24, abs=1e-9)


# ---------------------------------------------------------------------- Brackets

BRACKETS_REF_MIN = 0.00446319580078125  # mean over depths 1..4 of 8 ** -(depth + 1)
CLOSER = {"(": ")", "[": "]", "{": "}"}


def owed_closers(text: str) -> list[str] | None:
    """The closers a bracket prefix still needs, innermost first; None if it is not a valid prefix."""
    stack = []
    for t in text.split():
        if t in CLOSER:
            stack.append(CLOSER[t])
        elif not stack or stack.pop() != t:
            return None
    return stack[::-1]


def test_brackets_prompt_draws_stay_those_of_the_sized_draw() -> None:
    """`sample_prompt` draws its openers one at a time; the prompts (and the stream after them) are those of
    drawing them as one sized array, as datasets built from a seed were (kept as the reference here)."""
    task = get_task("brackets")
    openers = ["(", "[", "{"]
    for seed in range(200):
        ours, theirs = np.random.default_rng(seed), np.random.default_rng(seed)
        depth = int(theirs.integers(1, task.max_depth + 1))
        expected = [task.token_to_id[openers[int(k)]] for k in theirs.integers(0, 3, size=depth)]
        for _ in range(int(theirs.integers(0, task.max_pairs + 1))):
            opener = openers[int(theirs.integers(0, 3))]
            at = int(theirs.integers(0, len(expected) + 1))
            expected[at:at] = [task.token_to_id[opener], task.token_to_id[")]}"[openers.index(opener)]]]
        assert task.sample_prompt(ours) == expected
        assert ours.random() == theirs.random()


def test_brackets_prompts():
    task = get_task("brackets")
    assert task.vocab == ["<pad>", "<eos>", "(", ")", "[", "]", "{", "}"] and task.max_length == 13
    rng = np.random.default_rng(0)
    depths, pairs = [], []
    for _ in range(4000):
        prompt = task.sample_prompt(rng)
        task.check_prompt(prompt)
        owed = owed_closers(task.decode(prompt))
        assert owed
        depths.append(len(owed))
        pairs.append((len(prompt) - len(owed)) // 2)
        assert len(prompt) + len(owed) + 1 <= task.max_length
    for values, support in ((depths, [1, 2, 3, 4]), (pairs, [0, 1, 2])):
        counts = np.bincount(values, minlength=max(support) + 1)[support]
        p = 1 / len(support)
        assert np.abs(counts / len(values) - p).max() < 5 * np.sqrt(p * (1 - p) / len(values))


def test_brackets_episode_rewards():
    task = get_task("brackets")
    env = TokenEnv(task)
    tok = task.token_to_id

    def run(prompt: str, actions: str):
        env.reset(options={"prompt": prompt})
        return [env.step(tok[a])[1:4] for a in actions.split()]

    assert run("( [ ] {", "} ) <eos>") == [(0.0, False, False), (0.0, False, False), (1.0, True, False)]
    assert run("( [ ] {", ")") == [(0.0, True, False)]  # wrong closer
    assert run("( [ ] {", "} <eos>") == [(0.0, False, False), (0.0, True, False)]  # <eos> too early
    assert run("( [ ] {", "(") == [(0.0, True, False)]  # an opener
    assert run("(", ") ]") == [(0.0, False, False), (0.0, True, False)]  # nothing left to close
    assert run("(", "<pad>") == [(0.0, True, False)]
    # the longest prompt that fits: 8 tokens, 4 closers and <eos> make max_length 13
    assert run("( ( ( ( [ ] [ ]", ") ) ) ) <eos>")[-1] == (1.0, True, False)
    assert env.render() is None and int(env._ep.length[0]) == task.max_length


NOT_A_PREFIX, TOO_LONG = "a Brackets prompt is a prefix of a well-nested bracket string", "do not fit in max_length 13"


@pytest.mark.parametrize(("prompt", "message"), [(") (", NOT_A_PREFIX), ("( ]", NOT_A_PREFIX), ("( )", NOT_A_PREFIX),
                                                 ("<eos>", NOT_A_PREFIX), ("( <pad>", NOT_A_PREFIX),
                                                 ("( ( ( ( ( ( (", TOO_LONG), ("( ( ( ( [ ] [ ] [ ]", TOO_LONG)])
def test_brackets_bad_prompts(prompt, message):
    env = TokenEnv(get_task("brackets"))
    with pytest.raises(ValueError, match=message):
        env.reset(options={"prompt": prompt})


def test_brackets_invalid_construction():
    from textrl.tasks import BracketsTask

    for kwargs in ({"max_depth": 0}, {"max_depth": 2.0}, {"max_pairs": -1}, {"max_pairs": True}):
        with pytest.raises(ValueError, match="max_(depth|pairs) must be an int >= [01], got"):
            BracketsTask(**kwargs)
    small = BracketsTask(max_depth=2, max_pairs=0)
    assert small.max_length == 5
    assert small.ref_min_score == pytest.approx((8 ** -2 + 8 ** -3) / 2, rel=1e-12)


def test_brackets_references():
    task = get_task("brackets")
    assert task.ref_max_score == 1.0
    opt = evaluate(task.optimal_policy, task, num_episodes=1000, seed=0)
    assert (opt.returns == 1.0).all()
    assert task.ref_min_score == pytest.approx(BRACKETS_REF_MIN, rel=1e-12)
    assert BRACKETS_REF_MIN == pytest.approx(np.mean([8.0 ** -(d + 1) for d in range(1, 5)]), rel=1e-15)
    rnd = evaluate(task.random_policy, task, num_episodes=30000, seed=1, num_envs=1024)
    mc_check(rnd.returns, task.ref_min_score)


def test_action_helpers_spell_words_and_moves_and_the_tokenizer_refuses_unspaced_words() -> None:
    import gymnasium

    wordle = gymnasium.make(get_task("wordle").env_id).unwrapped
    ids = wordle.encode_action("crane")
    assert ids == wordle.task.encode("c r a n e") and wordle.decode_action(ids) == "crane"
    chess = gymnasium.make(get_task("endgames").env_id).unwrapped
    (move,) = chess.encode_action("c8h8")
    assert chess.task.vocab[move] == "c8h8" and chess.decode_action(move) == "c8h8"
    with pytest.raises(ValueError, match="'c9h9' is neither a token of task endgames"):
        chess.encode_action("c9h9")
    with pytest.raises(ValueError, match=r"actions \[99999\] are outside the action space"):
        chess.decode_action(99999)
    assert wordle.task.tokenizer("c r a n e")["input_ids"] == ids
    with pytest.raises(Exception, match="Missing"):  # was [0], the pad id
        wordle.task.tokenizer("crane")


@pytest.mark.parametrize("name", ["randomwalks", "maze", "maze_po"])
def test_start_draws_are_rng_choice_s_draws(name: str) -> None:
    """The starts are drawn as `rng.choice` draws them (datasets built from a seed keep their episodes)."""
    task = get_task(name)
    for seed in range(20):
        ours, theirs = np.random.default_rng(seed), np.random.default_rng(seed)
        prompt = task.sample_prompt(ours)
        if name == "randomwalks":
            assert prompt == [int(task.node_token(theirs.choice(task.starts)))]
        else:
            assert prompt == task._prompt(int(theirs.choice(task.starts)))
        if name == "maze_po":  # the start cell behind the prompt's observation
            cell = int(task.initial_state([prompt], [ours])["cell"][0])
            assert cell == int(theirs.choice(task._starts_of_prompt[tuple(prompt)]))
        assert ours.random() == theirs.random()  # the streams stay in step
