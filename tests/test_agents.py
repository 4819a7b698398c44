"""The agents: fit, act, generate, save/load, their targets, and ILQL end to end on RandomWalks."""

import gymnasium
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from agents import AGENTS, BCAgent, CQLAgent, FilteredBCAgent, ILQLAgent, MCReturnsAgent, load_agent
from textrl import default_config, make_dataset, pack, task_config
from textrl.methods import returns_to_go, td_target, top_fraction
from textrl.rollout import evaluate
from textrl.tasks import get_task

SMALL = "textrl/randomwalks/mixed-v1"


@pytest.fixture(scope="module")
def small_data():
    return make_dataset(SMALL, num_episodes=200, progress=False)


def short(agent: str, tmp_path, **train):
    base = dict(total_steps=30, batch_size=32, eval_interval=30, checkpoint_interval=30, eval_episodes=16,
                progress_bar=False, checkpoint_dir=str(tmp_path / agent), tracker="jsonl")
    cfg = task_config("randomwalks", agent, **{**base, **train})
    return cfg.evolve(method=dict(fraction=0.5)) if agent == "filtered_bc" else cfg


@pytest.mark.parametrize("name", list(AGENTS))
def test_each_agent_fits_lowers_its_loss_and_acts(name, small_data, tmp_path) -> None:
    agent = AGENTS[name](short(name, tmp_path))
    history = agent.fit(small_data)
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 30 and np.mean(losses[-5:]) < np.mean(losses[:5])
    assert any("eval/score" in h for h in history)
    env = gymnasium.make("textrl/RandomWalks-v1")
    obs, _ = env.reset(seed=0)
    action = agent.act(obs)
    assert isinstance(action, int) and env.action_space.contains(action)
    env.step(action)
    batch = {"input_ids": np.stack([obs["input_ids"]] * 3), "length": np.full(3, obs["length"])}
    assert agent.act(batch).shape == (3,)
    texts = agent.generate(["3", "7"], max_new_tokens=4)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_save_load_round_trip_acts_identically(small_data, tmp_path) -> None:
    agent = ILQLAgent(short("ilql", tmp_path, total_steps=10, eval_interval=100))
    agent.fit(small_data)
    agent.save(tmp_path / "saved")
    again = ILQLAgent.load(tmp_path / "saved")
    assert again.config == agent.config
    obs = {"input_ids": np.array([[5, 0, 0], [7, 0, 0]], dtype=np.uint8), "length": np.array([1, 1])}
    agent.generator.manual_seed(1)
    again.generator.manual_seed(1)
    assert (agent.act(obs) == again.act(obs)).all()
    assert isinstance(load_agent(tmp_path / "saved"), ILQLAgent)
    assert isinstance(load_agent(tmp_path / "ilql" / "step_000010"), ILQLAgent)  # a checkpoint loads too
    with pytest.raises(ValueError, match="holds a 'ilql' agent, not 'bc'"):
        BCAgent.load(tmp_path / "saved")
    with pytest.raises(FileNotFoundError, match="not a saved agent"):
        ILQLAgent.load(tmp_path)


def test_agent_resume_matches_an_uninterrupted_run(small_data, tmp_path) -> None:
    straight = ILQLAgent(short("ilql", tmp_path / "a", total_steps=8, checkpoint_interval=4, eval_interval=100))
    straight.fit(small_data)
    first = ILQLAgent(short("ilql", tmp_path / "b", total_steps=4, eval_interval=100))
    first.fit(small_data)
    resumed = ILQLAgent(short("ilql", tmp_path / "b", total_steps=8, eval_interval=100,
                              resume_from_checkpoint=str(tmp_path / "b" / "ilql")))
    resumed.fit(small_data)
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_ilql_targets_move_during_training(small_data, tmp_path) -> None:
    agent = ILQLAgent(short("ilql", tmp_path, total_steps=10, eval_interval=100))
    agent.model = agent.build_model(get_task("randomwalks").vocab_size)
    before = [p.clone() for p in agent.model.heads.target_q_heads.parameters()]
    agent.fit(small_data)
    after = list(agent.model.heads.target_q_heads.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_beta_list_evaluates_every_beta_on_the_same_episodes(small_data, tmp_path) -> None:
    """gen_kwargs.beta = [0, 8] logs score@beta=0 and score@beta=8; each equals a greedy rollout at that beta."""
    cfg = short("ilql", tmp_path, total_steps=10, eval_interval=10).evolve(
        method=dict(gen_kwargs=dict(beta=[0.0, 8.0], temperature=0.0)))
    agent = ILQLAgent(cfg)
    with pytest.warns(UserWarning, match=r"best_metric 'eval/score' is not among .*\(e.g. 'eval/score@beta=0'\)"):
        history = agent.fit(small_data)
    (metrics,) = [h for h in history if "eval/episodes" in h]
    assert "eval/score" not in metrics
    task = get_task("randomwalks")
    for beta in (0.0, 8.0):
        expected = evaluate(lambda obs, rng, beta=beta: agent.act(obs, beta=beta), task,
                            num_episodes=cfg.train.eval_episodes, seed=cfg.train.seed)
        assert metrics[f"eval/score@beta={beta:g}"] == pytest.approx(expected.normalized_score)
        assert metrics[f"eval/return@beta={beta:g}"] == pytest.approx(expected.mean_return)
    with pytest.raises(ValueError, match="sweep list"):
        agent.act({"input_ids": np.array([5, 0, 0], dtype=np.uint8), "length": np.array(1)})


LORA = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["c_attn"], fan_in_fan_out=True)


def test_lora_trains_only_adapters_and_heads_and_round_trips(small_data, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    cfg = short("ilql", tmp_path, total_steps=6, checkpoint_interval=3, eval_interval=100).evolve(
        model=dict(peft_config=LORA))
    agent = ILQLAgent(cfg)
    agent.fit(small_data)
    trainable = [n for n, p in agent.model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n or n.startswith("heads.") for n in trainable)
    assert any(".lora_B." in n for n in trainable) and any(n.startswith("heads.q_heads") for n in trainable)
    lora_b = [p for n, p in agent.model.named_parameters() if ".lora_B." in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: the adapters trained

    torch.manual_seed(cfg.train.seed)
    fresh = ILQLAgent(cfg).build_model(get_task("randomwalks").vocab_size)
    agent.save(tmp_path / "saved")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "saved" / "model")  # the frozen base weights
    base = {k: v for k, v in plain.state_dict().items()}
    for name, value in fresh.backbone.get_base_model().state_dict().items():
        if ".lora_" not in name:
            assert torch.equal(base[name.replace(".base_layer.", ".")], value), name

    again = ILQLAgent.load(tmp_path / "saved")
    assert again.model.state_dict().keys() == agent.model.state_dict().keys()
    for a, b in zip(agent.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)

    resumed = ILQLAgent(cfg.evolve(train=dict(checkpoint_dir=str(tmp_path / "b"),
                                              resume_from_checkpoint=str(tmp_path / "ilql" / "step_000003"))))
    resumed.fit(small_data)
    for a, b in zip(agent.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("q_rank", [None, 8])
def test_ilql_end_to_end_beats_the_data_on_randomwalks(q_rank, tmp_path, built_dataset) -> None:
    """Tiny GPT-2, 1000 random walks, 150 steps: optimality >= 0.7 with beta = 100 (the preset), with trlx's
    Q heads and with their output layer at rank 8 (below the 23-token vocabulary). The data's mean is 0.35;
    one run of each (500 episodes, seed 123) reached at steps 50/100/150/300: trlx's heads 0.49/0.98/0.93/0.93,
    rank 8 0.27/0.92/0.97/0.88, so the test fails at 50 steps and passes at 150 with a margin of 0.2."""
    built_dataset("textrl/randomwalks/random-v1")
    dataset = make_dataset("textrl/randomwalks/random-v1", progress=False)
    data_mean = float(pack(dataset).returns.mean())
    cfg = task_config("randomwalks", "ilql", total_steps=150, checkpoint_interval=150, progress_bar=False,
                      checkpoint_dir=str(tmp_path / "run"))
    agent = ILQLAgent(cfg.evolve(model=dict(q_head_rank=q_rank)))
    agent.fit(dataset, rollout_eval=False)  # scored below, on 500 episodes
    result = evaluate(agent.policy, get_task("randomwalks"), num_episodes=500, seed=123)
    assert cfg.method.gen_kwargs.beta >= 1
    assert result.mean_return >= 0.7 and result.mean_return > data_mean + 0.2


def test_filtered_bc_keeps_exactly_the_top_fraction_with_stable_ties() -> None:
    returns = torch.tensor([0.5, 1.0, 0.2, 1.0, 0.7, 0.5])
    assert top_fraction(returns, 0.5).tolist() == [1, 3, 4]
    assert top_fraction(returns, 0.6).tolist() == [0, 1, 3, 4]  # ceil(3.6) = 4; tie 0.5 -> earlier row 0
    assert top_fraction(returns, 0.01).tolist() == [1]


def test_filtered_bc_trains_on_the_selected_rows(small_data, tmp_path) -> None:
    agent = FilteredBCAgent(short("filtered_bc", tmp_path).evolve(method=dict(fraction=0.25)))  # 50 of 200
    packed = pack(small_data)
    kept = agent.prepare_data(packed)
    assert len(kept) == 50
    assert float(kept.returns.min()) >= float(packed.returns.sort(descending=True).values[49])


def test_returns_to_go_by_hand() -> None:
    rewards = torch.tensor([[1.0, 0.0, 2.0, 9.0], [0.5, -1.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.float)
    g = returns_to_go(rewards, mask, gamma=0.5)
    assert g.tolist() == [[1.0 + 0.5 * 0.0 + 0.25 * 2.0, 0.0 + 0.5 * 2.0, 2.0, 0.0], [0.5 - 0.5, -1.0, 0.0, 0.0]]


def test_td_target_masks_terminals() -> None:
    rewards = torch.tensor([[1.0, 2.0]])
    next_q = torch.tensor([[3.0, 5.0]])
    notdone = torch.tensor([[1.0, 0.0]])
    torch.testing.assert_close(td_target(rewards, next_q, notdone, gamma=0.9), torch.tensor([[1.0 + 0.9 * 3.0, 2.0]]))


def test_cql_loss_target_is_double_dqn(tmp_path) -> None:
    agent = CQLAgent(short("cql", tmp_path))
    agent.model = agent.build_model(get_task("randomwalks").vocab_size)
    heads = agent.model.heads
    with torch.no_grad():  # targets apart from the online head, so the two choices of a* differ
        for p in heads.target_q_heads.parameters():
            p.add_(torch.randn_like(p))
    batch = pack(make_dataset(SMALL, progress=False)).batch(torch.arange(4))
    out = agent.model(batch)
    h_next = out.state_hidden[:, 1:]
    online_best = heads.qs(h_next)[0].argmax(-1)
    next_q = heads.target_q_heads[0](h_next).gather(-1, online_best[..., None]).squeeze(-1)
    assert not torch.equal(online_best, heads.target_q(h_next).argmax(-1))  # double DQN != max of the target
    target = batch["rewards"] + 0.99 * next_q * batch["notdone"]
    q = out.qs[0].gather(-1, out.actions[..., None]).squeeze(-1)
    mask = batch["action_mask"].float()
    expected_td = (((q - target) ** 2 * mask).sum() / mask.sum()).detach().item()
    _, stats = agent.loss(agent.model, batch)
    assert stats["loss_td"] == pytest.approx(expected_td, rel=1e-5)


def test_mc_returns_regresses_on_returns_to_go(tmp_path) -> None:
    agent = MCReturnsAgent(short("mc_returns", tmp_path))
    agent.model = agent.build_model(get_task("randomwalks").vocab_size)
    batch = pack(make_dataset(SMALL, progress=False)).batch(torch.arange(4))
    out = agent.model(batch["input_ids"], batch["attention_mask"], batch["action_ixs"], batch["state_ixs"])
    mask = batch["action_mask"].float()
    g = returns_to_go(batch["rewards"], mask, agent.config.method.gamma)
    expected = (((out.vs[:, :-1] - g) ** 2 * mask).sum() / mask.sum()).detach().item()
    _, stats = agent.loss(agent.model, batch)
    assert stats["loss_v"] == pytest.approx(expected, rel=1e-5)


def test_agent_input_errors(small_data, tmp_path) -> None:
    with pytest.raises(ValueError, match="needs a 'ilql' method config"):
        ILQLAgent(default_config("bc"))
    agent = BCAgent(short("bc", tmp_path))
    with pytest.raises(RuntimeError, match="call fit"):
        agent.act({"input_ids": np.zeros(10, np.uint8), "length": np.array(1)})
    agent.fit(small_data)
    with pytest.raises(ValueError, match="act expects an env observation"):
        agent.act(np.zeros(10))
    with pytest.raises(ValueError, match="shape"):
        agent.act({"input_ids": np.zeros((2, 3, 4), np.uint8), "length": np.array([1, 1])})
    with pytest.raises(ValueError, match="lengths must lie in"):
        agent.act({"input_ids": np.zeros(10, np.uint8), "length": np.array(0)})
    with pytest.raises(TypeError, match="list of prompt strings"):
        agent.generate("3")
    big = BCAgent(short("bc", tmp_path / "big", batch_size=512))
    with pytest.raises(ValueError, match="larger than the dataset"):
        big.fit(small_data)
    short_seq = BCAgent(short("bc", tmp_path / "seq", seq_length=4))
    with pytest.raises(ValueError, match="raise train.seq_length"):
        short_seq.fit(small_data)


def test_tokenizer_that_does_not_match_the_dataset(small_data, tmp_path) -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0, "a": 1}, unk_token="<pad>")),
                                  pad_token="<pad>")
    agent = BCAgent(short("bc", tmp_path), tokenizer=tok)
    with pytest.raises(ValueError, match="the tokenizer has 2 tokens but the dataset's action space has 23"):
        agent.fit(small_data)


def test_batch_source_contract_keys(small_data) -> None:
    batch = pack(small_data).batch(torch.arange(3))
    assert isinstance(batch, TensorDict)
    assert set(batch.keys()) >= {"input_ids", "attention_mask", "action_ixs", "state_ixs", "action_mask", "rewards",
                                 "notdone", "returns"}


def test_acting_is_deterministic_in_the_network_after_fit(small_data, tmp_path) -> None:
    """A GPT-2 with dropout 0.5 left in train mode (as fit on a dataset without env leaves it): act and
    generate run it in eval mode."""
    task = get_task("randomwalks")
    cfg = short("ilql", tmp_path, total_steps=3)
    model_path = cfg.model.model_path.to_dict()
    model_path.update(resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5)
    from transformers import GPT2Config

    agent = ILQLAgent(cfg.evolve(model=dict(model_path=GPT2Config(**model_path))))
    agent.fit(small_data)
    agent.model.train()
    seen = []
    scores = agent.next_token_scores
    agent.next_token_scores = lambda h, logits, beta: seen.append(scores(h, logits, beta)) or seen[-1]
    obs = {"input_ids": np.array([[5, 0, 0], [7, 0, 0]], dtype=np.uint8), "length": np.array([1, 1])}
    agent.act(obs)
    agent.act(obs)
    agent.generate(["3"], max_new_tokens=1)
    agent.generate(["3"], max_new_tokens=1)
    assert len(seen) == 4 and torch.equal(seen[0], seen[1]) and torch.equal(seen[2], seen[3])
    assert agent.model.training  # the mode it had is restored
    assert task.vocab_size == seen[0].shape[-1]


def test_fit_overrides_and_generate_leave_config_and_tokenizer_as_they_were(small_data, tmp_path) -> None:
    cfg = short("bc", tmp_path)
    agent = BCAgent(cfg)
    history = agent.fit(small_data, total_steps=4, evaluate_every=1000)
    assert len([h for h in history if "loss" in h]) == 4  # the overrides applied to that fit
    assert agent.config == cfg  # and only to it
    agent.tokenizer.padding_side = "right"
    agent.generate(["3", "7 2"], max_new_tokens=2)
    assert agent.tokenizer.padding_side == "right"


def test_default_ilql_config_offline_fails_fast_naming_both_ways_forward(small_data) -> None:
    import time

    from textrl import default_ilql_config

    started = time.perf_counter()
    with pytest.raises(OSError) as err:  # conftest sets HF_HUB_OFFLINE=1 and no gpt2 is cached
        ILQLAgent(default_ilql_config()).fit(small_data)
    assert time.perf_counter() - started < 20
    message = str(err.value)
    assert "task_config(task, 'ilql')" in message
    assert "default_ilql_config().evolve(model=dict(model_path=DIR), tokenizer=dict(tokenizer_path=DIR))" in message


def test_metric_fn_values_count_no_episodes_and_the_best_warning_names_them(small_data, tmp_path) -> None:
    """A metric_fn-only evaluation logs its numbers without an `eval/episodes` count, and a best_metric it
    lacks is answered with one of the metrics it has."""
    agent = BCAgent(short("bc", tmp_path, total_steps=4, eval_interval=4, checkpoint_interval=4))
    with pytest.warns(UserWarning, match=r"\(e.g. 'eval/my_score'\)"):
        history = agent.fit(small_data, rollout_eval=False, metric_fn=lambda a: {"my_score": 3.0})
    (record,) = [h for h in history if "eval/my_score" in h]
    assert record["eval/my_score"] == 3.0 and "eval/episodes" not in record
