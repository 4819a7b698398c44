"""Acting and generation: what empty, tiny or diverged inputs do (the errors themselves are in test_bad_input)."""

import math

import gymnasium
import pytest
import torch

from agents import BCAgent
from textrl import make_dataset, task_config
from textrl.models import sample_next
from textrl.models.decoding import NonFiniteScoresError
from textrl.trainer import NonFiniteLossError


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    agent = BCAgent(task_config("randomwalks", "bc", total_steps=2, batch_size=16, progress_bar=False,
                                checkpoint_dir=str(run), eval_interval=100))
    agent.fit(make_dataset("textrl/randomwalks/mixed-v1", num_episodes=40, progress=False))
    return agent


def test_no_prompts_give_no_texts(agent) -> None:
    assert agent.generate([]) == []
    assert agent.generate(()) == []


def test_generation_stops_when_the_context_fills_the_model_positions(agent, monkeypatch) -> None:
    positions = agent.model.backbone.config.n_positions
    eos = agent.tokenizer.eos_token_id

    def never_eos(hidden, logits, beta):  # rows can only end by filling the context
        return torch.log_softmax(logits.float(), -1).index_fill(-1, torch.tensor([eos]), float("-inf"))

    monkeypatch.setattr(agent, "next_token_scores", never_eos)
    texts = agent.generate(["2", "2 3 4 5"], max_new_tokens=5000)
    new = [len(agent.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert new[1] == positions - 4 and new[0] >= new[1]  # the longest prompt sets how many tokens fit
    (short,) = agent.generate(["2"], max_new_tokens=3)
    assert len(short.split()) == 3


def test_a_tiny_temperature_is_greedy_not_an_error() -> None:
    scores = torch.tensor([[0.5, 3.0, -1.0, 2.9], [100.0, -100.0, 0.0, float("-inf")]])
    assert sample_next(scores, top_k=0, temperature=1e-45).tolist() == [1, 0]
    assert sample_next(scores, top_k=2, temperature=math.ulp(0.0)).tolist() == [1, 0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_scores_raise_a_non_finite_error(bad: float) -> None:
    scores = torch.zeros(3, 5)
    scores[1, 2] = bad
    with pytest.raises(NonFiniteScoresError, match="NaN or infinite in 1 of 3 rows"):
        sample_next(scores, top_k=0, temperature=1.0)
    with pytest.raises(NonFiniteLossError, match="NaN or infinite in 1 of 3 rows"):  # the trainer's error family: one except clause catches both
        sample_next(scores, top_k=0, temperature=0.0)
    with pytest.raises(NonFiniteScoresError, match="NaN or infinite in 1 of 1 rows"):
        sample_next(torch.full((1, 4), float("-inf")), top_k=0, temperature=1.0)


def test_an_observation_of_another_task_is_refused_before_torch_sees_it(agent) -> None:
    obs = gymnasium.make("textrl/Maze-v1").reset(seed=0)[0]
    with pytest.raises(ValueError, match="observation of another task's env"):
        agent.act(obs)
    rw = gymnasium.make("textrl/RandomWalks-v1").reset(seed=0)[0]
    assert 0 <= agent.act(rw) < agent.tokenizer.vocab_size


def test_acting_temperature_overrides_the_config_per_call(agent) -> None:
    env = gymnasium.vector.SyncVectorEnv([lambda: gymnasium.make("textrl/RandomWalks-v1")] * 1)
    obs = {k: v.repeat(256, 0) for k, v in env.reset(seed=0)[0].items()}
    assert agent.config.method.gen_kwargs.temperature == 1.0
    greedy = agent.act(obs, temperature=0.0)
    with torch.no_grad():
        logits = agent.model.backbone(torch.as_tensor(obs["input_ids"][:, :1].astype("int64"))).logits[:, -1]
    assert (greedy == logits.argmax(-1).numpy()).all()  # greedy: the most likely token, on every row
    assert len(set(agent.act(obs).tolist())) > 1  # the config's temperature 1 samples
    with pytest.raises(ValueError, match="temperature must be a number >= 0"):
        agent.act(obs, temperature=-1.0)
