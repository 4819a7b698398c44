"""TextEnv: your own text as an env (prompts, a reward function, a token budget), recorded with the data so
that fit evaluates on it; generate and act see the start token training saw."""

from __future__ import annotations

import math

import gymnasium
import numpy as np
import pytest
import word_tokens
from gymnasium.utils.env_checker import check_env

from agents import BCAgent, ILQLAgent, load_agent
from agents.inputs import left_padded
from textrl import (
    RewardFunctionError,
    TextEnv,
    TokenVectorEnv,
    evaluate,
    from_samples,
    get_task,
    pack,
    text_config,
)

WORDS = ["<pad>", "<eos>", "the", "blender", "is", "great", "awful", "fine", "i", "bought"]
GOOD, BAD = WORDS.index("great"), WORDS.index("awful")


def tokenizer():
    """A whitespace word-level tokenizer built locally (ids = positions in WORDS)."""
    return word_tokens.word_tokenizer(WORDS)


def review_reward(prompt: str, completion: str) -> float:
    return 1.0 if "great" in completion.split() else -1.0 if "awful" in completion.split() else 0.0


PROMPTS = ["", "i bought the blender"]


@pytest.fixture(scope="module")
def registered():
    """A TextEnv registered under its own id, as README shows."""
    env_id = "reviews/Review-v0"
    gymnasium.register(env_id, entry_point="textrl:TextEnv",
                       kwargs=dict(tokenizer=tokenizer(), prompts=PROMPTS, reward_fn=review_reward, max_new_tokens=4,
                                   ref_scores=(-1.0, 1.0)))
    yield env_id
    del gymnasium.registry[env_id]


def test_episodes_end_at_eos_or_the_budget_and_the_reward_function_scores_the_completion() -> None:
    env = gymnasium.make("textrl/Text-v0", tokenizer=tokenizer(), prompts=PROMPTS, reward_fn=review_reward,
                         max_new_tokens=3)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0, options={"prompt": "the blender"})
    assert obs["input_ids"][:obs["length"]].tolist() == [1, 2, 3]  # <eos> (the BOS stand-in), then the prompt
    steps = [env.step(a) for a in (WORDS.index("is"), GOOD, 1)]
    assert [s[1:4] for s in steps] == [(0.0, False, False), (0.0, False, False), (1.0, True, False)]
    env.reset(options={"prompt": "the blender"})
    steps = [env.step(a) for a in (WORDS.index("is"), BAD, WORDS.index("fine"))]
    assert steps[-1][1:4] == (-1.0, False, True)  # the budget: scored, and truncated


def test_a_batched_reward_function_gets_the_episodes_that_ended_on_a_step() -> None:
    calls = []

    def batched(prompts, completions):
        calls.append((list(prompts), list(completions)))
        return np.array([len(c.split()) for c in completions], dtype=float)

    env = TextEnv(tokenizer(), ["the blender"], batched, max_new_tokens=2, batched=True)
    venv = TokenVectorEnv(env.task, 3)
    venv.reset(seed=0)
    venv.step(np.array([GOOD, 1, BAD]))
    _, reward, terminated, truncated, _ = venv.step(np.array([GOOD, 0, BAD]))
    assert calls == [(["the blender"], [""]), (["the blender"] * 2, ["great great", "awful awful"])]
    assert reward.tolist() == [2.0, 0.0, 2.0] and truncated.tolist() == [True, False, True]


@pytest.mark.parametrize("reward_fn, error, message", [
    (lambda p, c: 1 / 0, RewardFunctionError, r"reward_fn raised ZeroDivisionError: division by zero \(on prompt "
                                              r"'the blender' and completion 'great'\)"),
    (lambda p, c: math.nan, ValueError, "reward_fn returned nan for prompt 'the blender' and completion 'great': "
                                        "rewards must be finite"),
    (lambda p, c: "good", TypeError, "reward_fn returned 'good'"),
])
def test_the_reward_function_contract(reward_fn, error, message) -> None:
    env = TextEnv(tokenizer(), ["the blender"], reward_fn, max_new_tokens=1)
    env.reset(seed=0)
    with pytest.raises(error, match=message):
        env.step(GOOD)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(TypeError, match="reward_fn must be callable"):
        TextEnv(tokenizer(), [""], None)
    with pytest.raises(ValueError, match="give max_prompt_tokens"):
        TextEnv(tokenizer(), lambda rng: "the", review_reward)
    with pytest.raises(ValueError, match="one reward per completion"):
        env = TextEnv(tokenizer(), [""], lambda p, c: [1.0, 2.0], max_new_tokens=1, batched=True)
        env.reset(seed=0)
        env.step(GOOD)


def test_evaluation_plays_a_prompt_list_equally_and_a_sampler_draws() -> None:
    seen = []
    env = TextEnv(tokenizer(), ["the", "the blender", "i bought the blender"],
                  lambda p, c: seen.append(p) or 0.0, max_new_tokens=1)
    evaluate(lambda obs, rng: np.full(len(obs["length"]), GOOD), env.task, num_episodes=7, seed=0)
    assert sorted(seen) == sorted(["the", "the blender", "i bought the blender"] * 3)  # 7 rounded up to 9
    sampled = TextEnv(tokenizer(), lambda rng: "the " * int(rng.integers(1, 3)), review_reward, max_prompt_tokens=2)
    assert sampled.task.evaluation_prompts() is None and sampled.observation_space["input_ids"].shape == (1 + 2 + 32,)


def test_from_samples_refuses_an_env_it_cannot_name(registered) -> None:
    tok = tokenizer()
    with pytest.raises(ValueError, match="register it under its own id"):
        from_samples(["great"], [1.0], tok, "reviews/bad-v0", env=gymnasium.make(
            "textrl/Text-v0", tokenizer=tok, prompts=[""], reward_fn=review_reward), progress=False)
    with pytest.raises(ValueError, match="'reviews/Nope-v0' is not registered in this process"):
        from_samples(["great"], [1.0], tok, "reviews/bad-v0", env="reviews/Nope-v0", progress=False)
    maze = get_task("maze")
    with pytest.raises(ValueError, match=f"has {maze.vocab_size} actions but the tokenizer has 10 tokens"):
        from_samples(["great"], [1.0], tok, "reviews/bad-v0", env=maze.env_id, progress=False)


def _samples(n: int = 64) -> tuple[list[str], list[float]]:
    rng = np.random.default_rng(0)
    texts = [f"the blender is {rng.choice(['great', 'awful', 'fine'])}" for _ in range(n)]
    return texts, [review_reward("", t) for t in texts]


def test_fit_evaluates_on_the_recorded_env_with_a_beta_sweep_and_keeps_the_best(registered, tmp_path) -> None:
    tok = tokenizer()
    texts, rewards = _samples()
    dataset = from_samples(texts, rewards, tok, "reviews/data-v0", env=registered, progress=False)
    config = text_config("ilql", tok, max_length=9, total_steps=4, eval_interval=4, checkpoint_interval=4,
                         eval_episodes=8, progress_bar=False, checkpoint_dir=str(tmp_path / "ilql"),
                         best_metric="eval/return@beta=4").evolve(method=dict(gen_kwargs=dict(beta=[0.0, 4.0])))
    agent = ILQLAgent(config)
    history = agent.fit(dataset)
    (record,) = [h for h in history if "eval/episodes" in h]
    assert {"eval/return@beta=0", "eval/return@beta=4", "eval/score@beta=4"} <= set(record)
    assert record["eval/score@beta=4"] == pytest.approx(50 * (record["eval/return@beta=4"] + 1))
    assert (tmp_path / "ilql" / "best").is_dir()
    # a fresh process (here: the registration forgotten) makes the env again from the dataset's record
    del gymnasium.registry[registered]
    again = ILQLAgent(config.evolve(train=dict(checkpoint_dir=str(tmp_path / "again")))).fit("reviews/data-v0")
    assert "eval/return@beta=4" in [h for h in again if "eval/episodes" in h][0]
    assert gymnasium.spec(registered).kwargs["reward_fn"] is review_reward  # imported by its path
    # a reward function without an import path (a lambda) leaves only the id: fit says why it cannot evaluate
    gymnasium.register("reviews/Lambda-v0", entry_point="textrl:TextEnv",
                       kwargs=dict(tokenizer=tok, prompts=PROMPTS, reward_fn=lambda p, c: 0.0, max_new_tokens=4))
    from_samples(texts, rewards, tok, "reviews/lambda-v0", env="reviews/Lambda-v0", progress=False)
    del gymnasium.registry["reviews/Lambda-v0"]
    with pytest.warns(UserWarning, match=r"cannot make it \(its reward_fn: .*lambda.*; fit does not evaluate by "
                                         "rollouts"):
        ILQLAgent(config.evolve(train=dict(checkpoint_dir=str(tmp_path / "lambda")))).fit("reviews/lambda-v0")


def test_generate_and_act_see_the_start_token_training_saw(registered, tmp_path) -> None:
    tok = tokenizer()
    texts, rewards = _samples()
    dataset = from_samples(texts, rewards, tok, "reviews/prefix-v0", env=registered, progress=False)
    packed = pack(dataset)
    trained_start = packed.td["tokens"][:1].tolist()  # the first episode's first token
    agent = BCAgent(text_config("bc", tok, max_length=9, total_steps=2, progress_bar=False,
                                checkpoint_dir=str(tmp_path / "bc")))
    agent.fit(dataset, rollout_eval=False)
    assert agent.prompt_prefix == trained_start == [tok.eos_token_id]
    # generate's ids for a prompt = the training episode's tokens up to where the agent starts writing
    generated = left_padded(tok, ["the blender"], agent.prompt_prefix)["input_ids"][0].tolist()
    assert generated == packed.td["tokens"][:3].tolist()
    # act sees the env's observation, which starts the same way
    obs, _ = gymnasium.make(registered).reset(seed=0, options={"prompt": "the blender"})
    assert obs["input_ids"][:obs["length"]].tolist() == generated
    assert len(agent.generate([""])) == 1 and len(agent.generate(None)) == 1
    agent.save(tmp_path / "saved")
    assert load_agent(tmp_path / "saved").prompt_prefix == [tok.eos_token_id]


def test_text_config_holds_the_task_benchmark_values_on_a_model_sized_to_the_tokenizer() -> None:
    from textrl import default_config, task_config
    from textrl.presets import TEXT_ILQL_BETA

    tok = tokenizer()
    config, task = text_config("ilql", tok, max_length=9), task_config("randomwalks", "ilql")
    assert config.model.model_path.vocab_size == len(tok) and config.model.model_path.n_positions == 9
    assert config.train.seq_length == 9 and config.tokenizer.tokenizer_path is None
    assert (config.optimizer, config.scheduler, config.train.reward_normalization) == (
        task.optimizer, task.scheduler, task.train.reward_normalization)  # lr 1e-3 constant, returns as stored
    assert config.optimizer.kwargs["lr"] == 1e-3 and config.train.reward_normalization == "none"
    same = config.evolve(method=dict(gen_kwargs=dict(beta=task.method.gen_kwargs.beta,
                                                     max_new_tokens=task.method.gen_kwargs.max_new_tokens)))
    assert same.method == task.method and (same.method.tau, same.method.alpha) == (0.8, 0.1)
    assert config.method.gen_kwargs.beta == TEXT_ILQL_BETA == 4.0 and config.method.gen_kwargs.max_new_tokens == 9
    assert config.method.gen_kwargs.top_k == 0 and default_config("ilql").optimizer.kwargs["lr"] == 5e-5  # trlx's


def test_the_recipe_script_runs_end_to_end(tmp_path) -> None:
    """examples/own_text.py (the README's numbers) on a few samples and steps: every row of its table."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "MINARI_DATASETS_PATH": str(tmp_path / "minari"), "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, str(root / "examples" / "own_text.py"), "--steps", "1", "--samples", "40",
                          "--episodes", "2", "--out", str(tmp_path / "runs")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[:2] for r in rows] == [["| BC, lr 1e-3", "-"]] + [
        [f"| ILQL, {name}", b] for name in ("task-benchmark values", "trlx values", "trlx values, lr 1e-3")
        for b in ("0", "1", "4", "16", "100")]
    assert all(0 <= int(r.split(" | ")[3]) <= 2 for r in rows)  # well-formed reviews of 2
