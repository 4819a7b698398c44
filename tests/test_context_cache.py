"""Acting with each row's cached context: the same tokens as running every context in full, only new tokens run."""

import functools

import numpy as np
import pytest
import torch

from agents import BCAgent, ILQLAgent
from textrl import task_config
from textrl.env import TokenEnv, TokenVectorEnv
from textrl.models import ContextCache
from textrl.rollout import collect_episodes, evaluate
from textrl.tasks import get_task


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread for these many small forwards: on a shared 2-core machine two threads mostly wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def untrained(task_name: str, agent_cls=ILQLAgent, seed: int = 0):
    """A task preset's agent with fresh seeded weights (no training: acting is what is tested)."""
    task = get_task(task_name)
    agent = agent_cls(task_config(task_name, agent_cls.method_cls.name))
    torch.manual_seed(seed)
    agent.tokenizer, agent.model = task.tokenizer, agent.build_model(task.vocab_size)
    return agent, task


def full_hidden(agent, ids: np.ndarray, length: np.ndarray) -> torch.Tensor:
    """The last hidden state of each row from a full forward (the uncached path)."""
    agent.cache_contexts = False
    try:
        return agent._last_hidden(agent.model.eval(), ids, length)
    finally:
        agent.cache_contexts = True


def rollout_actions(agent, task, cache: bool, episodes: int = 12, num_envs: int = 4):
    """Every episode of a seeded rollout through `agent.policy`, with the context cache on or off."""
    agent.cache_contexts = cache
    agent.forget_contexts()
    agent.generator.manual_seed(123)
    return collect_episodes(task, functools.partial(agent.policy, beta=4.0), episodes, seed=5, num_envs=num_envs)


@pytest.mark.parametrize("name", ["randomwalks", "maze", "maze_po", "brackets", "wordle", "endgames"])
def test_rollouts_choose_the_same_tokens_with_the_cache_on_and_off(name: str) -> None:
    agent, task = untrained(name)
    off = rollout_actions(agent, task, cache=False)
    on = rollout_actions(agent, task, cache=True)
    fed = agent._contexts.fed_tokens
    assert [len(e.actions) for e in on] == [len(e.actions) for e in off]
    for a, b in zip(on, off):  # the same tokens, hence the same observations and rewards
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.observations["input_ids"], b.observations["input_ids"])
        np.testing.assert_array_equal(a.rewards, b.rewards)
    lengths = [e.observations["length"] for e in on]
    if name in ("randomwalks", "brackets"):  # 4 envs play 12 episodes: autoresets, rows ending at different steps
        assert len({len(x) for x in lengths}) > 1
    # each token ran once, and none for the ignored rows (autoreset steps, rows past their share): the cached
    # run fed at most the tokens of the episodes' contexts
    shown = sum(int(x[-1]) for x in lengths)
    assert fed <= shown


@pytest.mark.parametrize("name", ["wordle", "endgames"])
def test_the_env_s_appended_tokens_run_once_and_give_the_uncached_tokens(name: str) -> None:
    """The task's own policy plays (Wordle's feedback after each guess, Endgames' replies after each move);
    the agent is shown every step's observations of all episodes as one batch."""
    agent, task = untrained(name)
    episodes = collect_episodes(task, task.behaviour_policy(task.tiers["mixed"]), 3, seed=2, num_envs=3)
    steps = max(len(e.actions) for e in episodes) + 1
    batches = [{k: np.stack([e.observations[k][min(t, len(e.actions))] for e in episodes]) for k in ("input_ids", "length")}
               for t in range(steps)]
    assert max(int(np.diff(e.observations["length"]).max()) for e in episodes) > 1  # multi-token appends
    tokens = {}
    for cache in (True, False):
        agent.cache_contexts = cache
        agent.forget_contexts()
        agent.generator.manual_seed(1)
        tokens[cache] = [agent.act(obs, beta=4.0).tolist() for obs in batches]
        if cache:
            assert agent._contexts.fed_tokens == sum(int(e.observations["length"][-1]) for e in episodes)
            torch.testing.assert_close(agent._contexts.hidden, full_hidden(agent, **{
                "ids": batches[-1]["input_ids"], "length": batches[-1]["length"]}), rtol=1e-4, atol=1e-5)
    assert tokens[True] == tokens[False]


@pytest.mark.parametrize("name", ["randomwalks", "maze"])
def test_ignored_rows_run_nothing_and_the_used_actions_stay_the_same(name: str) -> None:
    """`evaluate` flags the rows whose action goes unused; the agent's cache skips them, and the episodes
    played are those of a policy that never sees the flags (each row samples from its own draws)."""
    agent, task = untrained(name)
    results, fed = {}, {}
    for flags in (True, False):
        agent.forget_contexts()
        agent.generator.manual_seed(9)

        def policy(obs, rng, flags=flags):
            return agent.policy(obs if flags else {k: obs[k] for k in ("input_ids", "length")}, rng, beta=4.0)

        results[flags] = evaluate(policy, task, 24, seed=3, num_envs=8)
        fed[flags] = agent._contexts.fed_tokens
    np.testing.assert_array_equal(results[True].returns, results[False].returns)
    np.testing.assert_array_equal(results[True].lengths, results[False].lengths)
    assert fed[True] < fed[False]


def test_ignored_rows_get_no_scores_and_the_used_rows_keep_their_tokens() -> None:
    """The LM and value heads run only for the rows whose action is used; sampling draws each row's noise from
    its own place in the stream, so the used rows' tokens are those of a call without the flags."""
    agent, task = untrained("brackets")
    ids = np.random.default_rng(4).integers(2, task.vocab_size, size=(5, task.max_length)).astype(task.obs_dtype)
    length = np.array([3, 5, 2, 4, 6], dtype=np.int32)
    ignored = np.array([True, False, True, False, False])
    scored, score = [], agent.next_token_scores
    agent.next_token_scores = lambda h, logits, beta: (scored.append(len(h)), score(h, logits, beta))[1]
    tokens = {}
    for flags in (True, False):
        agent.forget_contexts()
        agent.generator.manual_seed(4)
        tokens[flags] = agent.act({"input_ids": ids, "length": length, **({"ignored": ignored} if flags else {})})
    assert scored == [3, 5]
    np.testing.assert_array_equal(tokens[True][~ignored], tokens[False][~ignored])
    assert ((0 <= tokens[True]) & (tokens[True] < task.vocab_size)).all()


def test_an_ignored_row_keeps_its_context_and_hidden_state() -> None:
    agent, task = untrained("wordle")
    cache = ContextCache(agent.model.backbone)
    ids = np.random.default_rng(3).integers(1, task.vocab_size, size=(3, task.max_length)).astype(task.obs_dtype)
    first = cache.last_hidden(ids, np.array([2, 3, 4], dtype=np.int32), np.array([True, False, False]))
    assert cache.fed_tokens == 9  # a row the cache does not hold yet runs, flagged or not
    other = ids.copy()
    other[0, 0] += 1  # row 0 would start over (another episode) if it were not ignored
    before = cache.fed_tokens
    got = cache.last_hidden(other, np.array([5, 4, 5], dtype=np.int32), np.array([True, False, False]))
    assert cache.fed_tokens - before == 2 and int(cache.held[0]) == 2
    torch.testing.assert_close(got[0], first[0])
    torch.testing.assert_close(got[1:], full_hidden(agent, other[1:], np.array([4, 5])), rtol=1e-4, atol=1e-5)
    obs = {"input_ids": ids, "length": np.array([2, 3, 4], dtype=np.int32), "ignored": np.array([1, 0, 0])}
    with pytest.raises(ValueError, match="ignored.*bool"):
        agent.act(obs)


def test_contexts_that_extend_run_only_their_new_tokens_and_match_a_full_forward() -> None:
    agent, task = untrained("wordle")
    cache = ContextCache(agent.model.backbone)
    rng = np.random.default_rng(0)
    width = task.max_length
    ids = rng.integers(1, task.vocab_size, size=(4, width)).astype(task.obs_dtype)
    calls = [  # lengths per row; ids change where a row starts over
        ([3, 1, 5, 2], None, 11),  # every row starts: all tokens run
        ([4, 7, 5, 3], None, 1 + 6 + 0 + 1),  # one token, a 6-token append, the same context again, one token
        ([5, 8, 9, 3], 2, 1 + 1 + 4),  # row 2's context changes at token 0: it starts over (9 tokens)
        ([2, 9, 12, 20], None, 2 + 1 + 3 + 17),  # row 0 shrinks to a prefix: it starts over
    ]
    for lengths, changed, expected in calls:
        if changed is not None:
            ids[changed, 0] = (ids[changed, 0] % (task.vocab_size - 1)) + 1
            expected = expected - 4 + 9
        before = cache.fed_tokens
        length = np.array(lengths, dtype=np.int32)
        got = cache.last_hidden(ids, length)
        assert cache.fed_tokens - before == expected
        assert cache.fed_rows.sum() == cache.fed_tokens
        torch.testing.assert_close(got, full_hidden(agent, ids, length), rtol=1e-4, atol=1e-5)
    assert cache.fed_rows.tolist() == [3 + 1 + 1 + 2, 1 + 6 + 1 + 1, 5 + 0 + 9 + 3, 2 + 1 + 0 + 17]  # per row
    assert cache.capacity <= width  # memory: rows x context at most
    other = rng.integers(1, task.vocab_size, size=(3, width)).astype(task.obs_dtype)  # another batch size
    length = np.array([4, 2, 6], dtype=np.int32)
    torch.testing.assert_close(cache.last_hidden(other, length), full_hidden(agent, other, length), rtol=1e-4, atol=1e-5)
    assert cache.fed_rows.tolist() == [4, 2, 6]  # counted anew for the new batch size


def test_rows_with_different_appends_are_run_in_at_most_two_padded_forwards() -> None:
    agent, task = untrained("wordle")
    cache = ContextCache(agent.model.backbone)
    ids = np.random.default_rng(1).integers(1, task.vocab_size, size=(6, task.max_length)).astype(task.obs_dtype)
    cache.last_hidden(ids, np.full(6, 2, dtype=np.int32))
    padded = cache.padded_tokens
    length = np.array([3, 3, 3, 3, 3, 30], dtype=np.int32)  # five rows add one token, one adds 28
    torch.testing.assert_close(cache.last_hidden(ids, length), full_hidden(agent, ids, length), rtol=1e-4, atol=1e-5)
    assert cache.padded_tokens - padded == 5 + 28  # not 6 x 28


def test_a_user_acting_on_unrelated_observations_gets_the_uncached_tokens() -> None:
    agent, task = untrained("maze", BCAgent)
    envs = [TokenVectorEnv(task, 5), TokenVectorEnv(get_task("maze_po"), 5)]
    rng = np.random.default_rng(0)
    latest = [env.reset(seed=s)[0] for s, env in enumerate(envs)]
    shown = []  # two envs in turn, now and then one row of a batch as a single observation, or a shuffled batch
    for i in range(16):
        k = i % 2
        latest[k] = envs[k].step(task.exploration_policy(latest[k], rng))[0]
        obs = latest[k]
        shown.append(obs)
        shown.append({"input_ids": obs["input_ids"][i % 5], "length": obs["length"][i % 5]})
        order = rng.permutation(5)
        shown.append({"input_ids": obs["input_ids"][order], "length": obs["length"][order]})
    tokens = {}
    for cache in (True, False):
        agent.cache_contexts = cache
        agent.forget_contexts()
        agent.generator.manual_seed(7)
        tokens[cache] = [np.asarray(agent.act(obs)).tolist() for obs in shown]
    assert tokens[True] == tokens[False]


def test_a_single_env_loop_caches_its_context() -> None:
    agent, task = untrained("wordle")
    env = TokenEnv(task)
    actions = {}
    for cache in (True, False):
        agent.cache_contexts = cache
        agent.forget_contexts()
        agent.generator.manual_seed(3)
        obs, _ = env.reset(seed=11)
        taken, steps = [], 0
        while steps < 60:
            action = agent.act(obs, beta=4.0)
            taken.append(action)
            obs, _, terminated, truncated, _ = env.step(action)
            steps += 1
            if terminated or truncated:
                obs, _ = env.reset()
        actions[cache] = taken
        if cache:
            fed = agent._contexts.fed_tokens
    assert actions[True] == actions[False]
    assert all(isinstance(a, int) for a in actions[True])
    assert fed < 60 + 8 * task.max_length  # each token once (not the O(T^2) of rerunning every context)


def test_fit_and_a_new_model_drop_the_cached_contexts(tmp_path) -> None:
    from textrl import make_dataset

    agent = BCAgent(task_config("randomwalks", "bc", total_steps=2, batch_size=16, progress_bar=False,
                                checkpoint_dir=str(tmp_path), eval_interval=100))
    data = make_dataset("textrl/randomwalks/mixed-v1", num_episodes=40, progress=False)
    agent.fit(data)
    obs = TokenVectorEnv(get_task("randomwalks"), 4).reset(seed=0)[0]
    agent.act(obs)
    assert agent._contexts is not None and agent._contexts.fed_tokens > 0
    agent.fit(data, total_steps=3, checkpoint_dir=str(tmp_path / "more"))  # the weights change: what was cached ran through the old ones
    assert agent._contexts is None
    agent.act(obs)
    stale = agent._contexts
    agent.model = BCAgent(agent.config).build_model(len(agent.tokenizer))  # another model object
    agent.act(obs)
    assert agent._contexts is not stale and agent._contexts.backbone is agent.model.backbone


def test_a_cast_model_or_a_failed_call_starts_every_row_over(monkeypatch) -> None:
    agent, task = untrained("wordle", BCAgent)
    cache = ContextCache(agent.model.backbone)
    ids = np.random.default_rng(2).integers(1, task.vocab_size, size=(3, task.max_length)).astype(task.obs_dtype)
    cache.last_hidden(ids, np.array([2, 3, 4], dtype=np.int32))
    agent.model.double()  # cached keys are float32: the rows start over in float64
    length = np.array([3, 4, 5], dtype=np.int32)
    before = cache.fed_tokens
    got = cache.last_hidden(ids, length)
    assert got.dtype == torch.float64 and cache.fed_tokens - before == 12
    torch.testing.assert_close(got, full_hidden(agent, ids, length))

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(cache, "_run", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        cache.last_hidden(ids, length + 1)
    assert cache.ids is None and cache.capacity == 0  # nothing half written is kept
