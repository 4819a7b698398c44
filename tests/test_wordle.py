"""Wordle: exact feedback, rewards and episode ends, exact references, per-guess behaviour, envs, data, agents."""

from __future__ import annotations

from collections import Counter
from functools import cache
from importlib import resources

import gymnasium
import minari
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import textrl  # noqa: F401  (registers the gymnasium ids)
from agents import BCAgent, ILQLAgent
from textrl import make_dataset, task_config
from textrl.cli import main
from textrl.env import TokenEnv, TokenVectorEnv
from textrl.rollout import collect_episodes, evaluate
from textrl.tasks import WordleTask, get_task
from textrl.tasks.wordle import feedback_patterns

REF_MAX = -1.8675  # the exact optimum, as in the module docstring
MARK = {2: "G", 1: "Y", 0: "-"}


@pytest.fixture(scope="module")
def task() -> WordleTask:
    return get_task("wordle")


def letters(word: str) -> np.ndarray:
    return np.array([[ord(c) - ord("a") for c in word]])


def marks(guess: str, answer: str) -> str:
    """The task's feedback of one pair, as G/Y/- marks."""
    code = int(feedback_patterns(letters(guess), letters(answer))[0, 0])
    return "".join(MARK[(code // 3**i) % 3] for i in range(5))


def two_pass(guess: str, answer: str) -> str:
    """Wordle's rule written out independently: greens, then yellows while unmatched copies remain."""
    out = ["-"] * 5
    left = Counter(a for g, a in zip(guess, answer) if g != a)
    for i, (g, a) in enumerate(zip(guess, answer)):
        if g == a:
            out[i] = "G"
        elif left[g] > 0:
            out[i] = "Y"
            left[g] -= 1
    return "".join(out)


def step_word(task: WordleTask, state: dict, word: str) -> list:
    """Type a 5-token guess (letters or token strings) into one episode; the five transitions."""
    tokens = list(word) if len(word) == 5 else word.split()
    return [task.transition(state, np.array([task.token_to_id[t]]), np.array([True])) for t in tokens]


def start(task: WordleTask, answer: str) -> dict:
    state = task.initial_state([[task.token_to_id["|"]]], [np.random.default_rng(0)])
    state["answer"][:] = task.words.index(answer)
    return state


# ---------------------------------------------------------------------- feedback


@pytest.mark.parametrize(("guess", "answer", "expected"), [
    ("speed", "abide", "--Y-Y"),  # the second e finds no copy left; d is elsewhere
    ("speed", "erase", "Y-YY-"),  # two e in both: both yellow
    ("speed", "steal", "G-G--"),  # the green e uses the answer's only e
    ("speed", "crepe", "-YGY-"),  # one e green, the other yellow for the answer's second e
    ("eerie", "speed", "YY---"),  # three e guessed, two in the answer: the third is grey
    ("abbey", "kebab", "YYGY-"),
    ("kebab", "abbey", "-YGYY"),
    ("lolly", "hello", "-YGG-"),  # both l of the answer are green: the first l is grey
    ("lllll", "hello", "--GG-"),
    ("trade", "trade", "GGGGG"),
    ("mummy", "trade", "-----"),
])
def test_feedback_table(guess, answer, expected):
    assert marks(guess, answer) == expected
    assert two_pass(guess, answer) == expected


def test_feedback_matrix_agrees_with_the_two_pass_rule(task):
    rng = np.random.default_rng(0)
    for g in rng.choice(len(task.words), 60, replace=False):
        row = task.patterns[g]
        for a in range(len(task.words)):
            got = "".join(MARK[(int(row[a]) // 3**i) % 3] for i in range(5))
            assert got == two_pass(task.words[g], task.words[a])


# ---------------------------------------------------------------------- list, vocabulary, rules


def test_word_list_and_vocabulary(task):
    text = resources.files("textrl.tasks").joinpath("data/wordle_words.txt").read_text()
    assert "wordfreq 3.1.1" in text.splitlines()[1]
    assert len(task.words) == 400 and len(set(task.words)) == 400
    assert all(len(w) == 5 and w.isascii() and w.isalpha() and w.islower() for w in task.words)
    assert task.vocab_size == 33 and task.max_length == 61 and task.obs_dtype == np.uint8
    assert task.word_index(letters("trade"))[0] == task.words.index("trade")
    assert task.word_index(letters("zzzzz"))[0] == -1
    with pytest.raises(ValueError, match="max_guesses"):
        WordleTask(max_guesses=0)
    with pytest.raises(ValueError, match="prompt"):
        task.check_prompt(task.encode("a"))


def test_feedback_reward_and_solve(task):
    state = start(task, "trade")
    outs = step_word(task, state, "about")
    assert [float(o.reward[0]) for o in outs] == [0, 0, 0, 0, -1]
    assert not any(o.terminated[0] or o.truncated[0] for o in outs)
    assert (outs[3].response < 0).all()
    assert task.decode(outs[4].response[0]) == " ".join(marks("about", "trade")) + " |"
    outs = step_word(task, state, "trade")
    assert float(outs[4].reward[0]) == 0.0 and outs[4].terminated[0] and not outs[4].truncated[0]
    assert (outs[4].response < 0).all()  # nothing is appended after the last step


@pytest.mark.parametrize("guess", ["zzzzz", "t r <eos> d e", "| G Y ? <pad>"])
def test_a_guess_outside_the_list_wastes_the_turn(task, guess):
    state = start(task, "trade")
    outs = step_word(task, state, guess)
    assert float(outs[4].reward[0]) == -1.0 and not outs[4].terminated[0]
    assert task.decode(outs[4].response[0]) == "? ? ? ? ? |"
    assert int(state["guesses"][0]) == 1


def test_sixth_guess_is_a_termination(task):
    state = start(task, "trade")
    for k, word in enumerate(["about", "zzzzz", "their", "could", "water", "house"]):
        out = step_word(task, state, word)[4]
        assert float(out.reward[0]) == -1.0
        assert bool(out.terminated[0]) == (k == 5) and not out.truncated[0]
    env = gymnasium.make("textrl/Wordle-v0")
    env.reset(seed=0)
    rewards, ends = [], []
    for _ in range(30):
        _, r, terminated, truncated, _ = env.step(task.eos_id)
        rewards.append(r)
        ends.append((terminated, truncated))
    assert rewards == [0, 0, 0, 0, -1] * 6
    assert ends == [(False, False)] * 29 + [(True, False)]
    assert env.unwrapped._ep.length[0] == task.max_length  # the longest context fills max_length


# ---------------------------------------------------------------------- references


@cache
def brute_force(task: WordleTask, cand: tuple[int, ...], left: int) -> float:
    """Expected failing guesses of the best play, trying every guess with no pruning."""
    best = np.inf
    for guess in range(len(task.words)):
        classes: dict[int, list[int]] = {}
        for a in cand:
            classes.setdefault(int(task.patterns[guess, a]), []).append(a)
        cost = sum(len(c) * (1 + (brute_force(task, tuple(c), left - 1) if left > 1 else 0))
                   for p, c in classes.items() if p != 242)
        best = min(best, cost / len(cand))
    return best


def test_search_matches_brute_force_on_small_candidate_sets(task):
    rng = np.random.default_rng(3)
    for size, left in [(3, 2), (4, 2), (5, 3), (6, 2), (8, 3)]:
        cand = tuple(sorted(int(i) for i in rng.choice(len(task.words), size, replace=False)))
        cost, guess = task.solve(np.array(cand), left)
        assert cost == pytest.approx(brute_force(task, cand, left), abs=1e-12)
        assert WordleTask._guess_cost(task, np.array(cand), guess, left) == pytest.approx(cost, abs=1e-12)


def test_full_search_reproduces_the_opening_and_the_optimum():
    fresh = WordleTask()
    cost, guess = fresh.solve(np.arange(len(fresh.words)), 6)
    assert fresh.words[guess] == "trade"
    assert -cost == pytest.approx(REF_MAX, abs=1e-12)
    assert fresh.ref_max_score == pytest.approx(REF_MAX, abs=1e-12)
    assert np.bincount(fresh.optimal_costs().astype(int)).tolist() == [1, 88, 275, 35, 1]


def test_optimal_policy_plays_every_answer_to_the_exact_optimum(task):
    env = TokenVectorEnv(task, len(task.words))
    obs, _ = env.reset(seed=0)
    env._ep.state["answer"][:] = np.arange(len(task.words))
    rng = np.random.default_rng(0)
    returns = np.zeros(len(task.words))
    done = np.zeros(len(task.words), dtype=bool)
    while not done.all():
        obs, reward, terminated, truncated, _ = env.step(task.optimal_policy(obs, rng))
        returns += reward * ~done
        assert not truncated.any()
        done |= terminated
    np.testing.assert_array_equal(returns, -task.optimal_costs())
    assert returns.mean() == pytest.approx(REF_MAX, abs=1e-12)


def test_uniform_reference_is_exact(task):
    q = 33.0**-5
    assert task.ref_min_score == pytest.approx(-sum((1 - q) ** t for t in range(1, 7)), rel=1e-15)
    assert task.ref_min_score == pytest.approx(-5.9999994634, abs=1e-10)
    res = evaluate(task.random_policy, task, num_episodes=512, seed=1)
    # a uniform guess solves with probability 33**-5: every episode spends its six guesses
    assert (res.returns == -6).all() and (res.lengths == 30).all()
    assert WordleTask(max_guesses=2).ref_min_score == pytest.approx(-(1 - q) - (1 - q) ** 2, rel=1e-15)


# ---------------------------------------------------------------------- behaviour policies


def guesses_of(text: str) -> list[str]:
    tokens = text.split()[1:]
    return ["".join(tokens[i:i + 5]) for i in range(0, len(tokens), 11)]


def test_behaviour_mixes_whole_guesses(task):
    episodes = collect_episodes(task, task.behaviour_policy(0.5), 1200, seed=4)
    first = [guesses_of(e.text)[0] for e in episodes]
    assert all(w in task.words for e in episodes for w in guesses_of(e.text))  # never a token-level mixture
    # P(first guess = trade) = 0.5 + 0.5 * (0.5 / 400 + 0.5 / 400)
    hits = np.array([w == "trade" for w in first], dtype=float)
    expected = 0.5 + 0.5 / 400
    assert abs(hits.mean() - expected) <= 4 * np.sqrt(expected * (1 - expected) / len(hits))
    assert len(set(first)) > 100


def test_exploration_words_are_consistent_half_the_time(task):
    episodes = collect_episodes(task, task.exploration_policy, 600, seed=5)
    consistent = total = 0
    for e in episodes:
        words = guesses_of(e.text)
        answer_known = [w for w, r in zip(words, e.rewards[4::5]) if r == 0]
        assert all(w in task.words for w in words)
        if len(words) < 2 or not answer_known:
            continue
        answer = answer_known[0]
        # the second guess: consistent with the first guess's feedback?
        consistent += task.patterns[task.words.index(words[0]), task.words.index(words[1])] == \
            task.patterns[task.words.index(words[0]), task.words.index(answer)]
        total += 1
    assert total > 100 and 0.5 <= consistent / total <= 0.75


def test_expert_tier_is_the_optimal_policy(task):
    res = evaluate(task.behaviour_policy(0.0), task, num_episodes=256, seed=6)
    ref = evaluate(task.optimal_policy, task, num_episodes=256, seed=6)
    np.testing.assert_array_equal(res.returns, ref.returns)
    assert set(res.returns.tolist()) <= {0.0, -1.0, -2.0, -3.0, -4.0}
    with pytest.raises(ValueError, match="epsilon"):
        task.behaviour_policy(1.5)


def test_optimal_policy_completes_a_foreign_prefix(task):
    rng = np.random.default_rng(0)
    for prefix, is_word in [("wo", True), ("zq", False)]:  # "wo..." starts list words, "zq..." none
        env = TokenEnv(task)
        obs, _ = env.reset(seed=0)
        for token in prefix:
            obs, *_ = env.step(task.token_to_id[token])
        for _ in range(3):
            obs, reward, _, _, info = env.step(int(task.optimal_policy({k: np.asarray(v)[None] for k, v in obs.items()},
                                                                       rng)[0]))
        word = guesses_of(info["text"])[0]
        assert word.startswith(prefix) and (word in task.words) == is_word
        best = min((w for w in task.words if w.startswith("wo")),
                   key=lambda w: WordleTask._guess_cost(task, np.arange(400), task.words.index(w), 6))
        assert not is_word or word == best


# ---------------------------------------------------------------------- envs


def test_check_env_and_registration():
    env = gymnasium.make("textrl/Wordle-v0")
    assert isinstance(env.unwrapped.task, WordleTask)
    check_env(env.unwrapped, skip_render_check=True)
    assert gymnasium.make("textrl/Wordle-v0", max_guesses=3).unwrapped.task.max_length == 1 + 15 + 12


def test_single_and_vector_env_agree(task):
    n, seed = 6, 11
    vec = TokenVectorEnv(task, n)
    singles = [TokenEnv(task) for _ in range(n)]
    vobs, _ = vec.reset(seed=seed)
    sobs = [e.reset(seed=seed + i)[0] for i, e in enumerate(singles)]
    np.testing.assert_array_equal(np.stack([o["input_ids"] for o in sobs]), vobs["input_ids"])
    assert [int(e._ep.state["answer"][0]) for e in singles] == vec._ep.state["answer"].tolist()
    rng = np.random.default_rng(0)
    done = np.zeros(n, dtype=bool)
    for _ in range(task.max_length):
        actions = task.behaviour_policy(0.5)(vobs, rng)
        vobs, vr, vte, vtr, _ = vec.step(actions)
        for i, e in enumerate(singles):
            if done[i]:
                continue
            o, r, te, tr, _ = e.step(int(actions[i]))
            assert (r, te, tr) == (vr[i], vte[i], vtr[i])
            np.testing.assert_array_equal(o["input_ids"], vobs["input_ids"][i])
            done[i] = te or tr
        if done.all():
            break
    assert done.all()


# ---------------------------------------------------------------------- datasets and agents


@pytest.fixture(scope="module")
def small_data():
    return make_dataset("textrl/wordle/mixed-n60-v1", progress=False)


def test_dataset_builds_loads_and_shows(small_data, task, capsys):
    loaded = minari.load_dataset("textrl/wordle/mixed-n60-v1")
    assert loaded.total_episodes == 60
    assert loaded.storage.metadata["ref_max_score"] == pytest.approx(REF_MAX)
    assert loaded.storage.metadata["ref_min_score"] == pytest.approx(task.ref_min_score)
    for ep in loaded.iterate_episodes():
        assert ep.terminations[-1] and not ep.truncations.any()
        assert len(ep.actions) % 5 == 0 and -6 <= ep.rewards.sum() <= 0
    assert main(["data", "show", "textrl/wordle/mixed-n60-v1", "--examples", "1"]) == 0
    assert "wordle" in capsys.readouterr().out


@pytest.mark.parametrize("agent_cls", [BCAgent, ILQLAgent])
def test_bc_and_ilql_fit_end_to_end(agent_cls, small_data, tmp_path):
    method = "bc" if agent_cls is BCAgent else "ilql"
    cfg = task_config("wordle", method, total_steps=4, batch_size=16, eval_interval=4, checkpoint_interval=4,
                      eval_episodes=8, progress_bar=False, checkpoint_dir=str(tmp_path / method), tracker="none")
    history = agent_cls(cfg).fit(small_data)
    assert sum("loss" in h for h in history) == 4
    assert any("eval/score" in h for h in history)
