"""Parity of `textrl.methods.ilql_loss` with trlx's ILQL equations, written here independently in float64.

The reference follows trlx's formulation: heads evaluated at every position, then gathered at the
action and state indices; a done mask whose first A entries mark the loss's actions and whose
shifted entries decide the bootstrap; sums divided by the number of those actions. Indices, rewards
and ends are rebuilt from the stored episodes (not read from the packed batch), on a real packed batch
of multi-turn maze episodes, some terminated by the task and some truncated by a TimeLimit.
"""

import gymnasium
import numpy as np
import pytest
import torch
from recorded import record_episode

import textrl  # noqa: F401  (registers the env ids)
from textrl.config import ModelConfig
from textrl.data import pack
from textrl.data.writer import write_dataset
from textrl.env import observation_space
from textrl.methods import ilql_loss
from textrl.models import ValueModel, load_backbone
from textrl.presets import tiny_model_config
from textrl.rollout import Episode

TAU, GAMMA, CQL, AWAC, BETA = 0.7, 0.9, 0.1, 1.0, 0.5


def _random_episode(env: gymnasium.Env, seed: int) -> Episode:
    """Random moves until the env ends the episode (by the task, or by the TimeLimit wrapper)."""
    task = env.unwrapped.task
    moves = [task.token_to_id[m] for m in ("up", "down", "left", "right")]
    rng = np.random.default_rng(seed)
    return record_episode(env, seed, lambda: int(rng.choice(moves)))


@pytest.fixture(scope="module")
def episodes_and_batch():
    ended = gymnasium.make("textrl/Maze-v1", max_steps=4)  # the task's budget: terminations
    limited = gymnasium.make("textrl/Maze-v1", max_steps=4, max_episode_steps=3)  # a TimeLimit: truncations
    task = ended.unwrapped.task
    episodes = [_random_episode(ended, s) for s in range(6)] + [_random_episode(limited, s) for s in range(6, 12)]
    assert any(ep.terminations[-1] for ep in episodes) and any(ep.truncations[-1] for ep in episodes)
    assert len({len(ep.actions) for ep in episodes}) > 1  # rows of different lengths: padding is exercised
    dataset = write_dataset("user/maze-parity-v0", [episodes], observation_space(task), ended.action_space,
                            task.tokenizer, {"env": None, "algorithm_name": "random"}, {"source": "test"})
    stored = {ep.id: ep for ep in dataset.iterate_episodes()}
    rows = [stored[int(i)] for i in dataset.episode_indices]
    batch = pack(dataset).batch(np.arange(len(rows)))
    return task, rows, batch


def _trlx_reference(model: ValueModel, rows, batch) -> dict[str, float]:
    """trlx's ILQL loss terms, in float64, from per-position heads and indices rebuilt from the episodes."""
    B, A = len(rows), max(len(ep.actions) for ep in rows)
    actions_ixs = torch.zeros(B, A, dtype=torch.long)
    states_ixs = torch.zeros(B, A + 1, dtype=torch.long)
    rewards = torch.zeros(B, A, dtype=torch.float64)
    dones = torch.zeros(B, A + 1, dtype=torch.float64)  # 1 = the state continues (trlx's `dones` convention)
    for b, ep in enumerate(rows):
        lengths = np.asarray(ep.observations["length"], dtype=np.int64)
        n = len(ep.actions)
        actions_ixs[b, :n] = torch.as_tensor(lengths[:-1] - 1)  # the context's last token predicts the action
        states_ixs[b, : n + 1] = torch.as_tensor(lengths - 1)
        rewards[b, :n] = torch.as_tensor(ep.rewards, dtype=torch.float64)
        dones[b, :n] = 1.0
        dones[b, n] = 0.0 if ep.terminations[-1] else 1.0  # truncated: bootstrap from the last state
    assert torch.equal(actions_ixs, batch["action_ixs"].long())
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        h = model.hidden_states(ids, mask)
        logits = model.backbone.get_output_embeddings()(h).double()
        qs = [q(h).double() for q in model.heads.q_heads]
        target_qs = [q(h).double() for q in model.heads.target_q_heads]
        vs = model.heads.v(h).double()
    labels = ids[:, 1:].long()
    actions = labels.gather(1, actions_ixs)

    def at_actions(x: torch.Tensor) -> torch.Tensor:
        return x.gather(1, actions_ixs[..., None].expand(-1, -1, x.shape[-1]))

    Q = [at_actions(q).gather(-1, actions[..., None]).squeeze(-1) for q in qs]
    targetQ = torch.minimum(*[at_actions(q).gather(-1, actions[..., None]).squeeze(-1) for q in target_qs])
    V_all = vs.gather(1, states_ixs)
    terminal_mask = torch.zeros(B, A, dtype=torch.float64)
    for b, ep in enumerate(rows):
        terminal_mask[b, : len(ep.actions)] = 1.0
    n_nonterminal = terminal_mask.sum().clamp(min=1)
    V_next = V_all[:, 1:] * dones[:, 1:]
    Q_ = rewards + GAMMA * V_next
    loss_q = sum((((q - Q_) * terminal_mask) ** 2).sum() / n_nonterminal for q in Q)
    V = V_all[:, :-1]
    upper = (targetQ >= V).double() * TAU * (targetQ - V) ** 2
    lower = (targetQ < V).double() * (1 - TAU) * (targetQ - V) ** 2
    loss_v = ((upper + lower) * terminal_mask).sum() / n_nonterminal

    def cross_entropy(x: torch.Tensor) -> torch.Tensor:
        ce = torch.nn.functional.cross_entropy(x.reshape(-1, x.shape[-1]), actions.reshape(-1), reduction="none")
        return ce.reshape(actions.shape)

    loss_cql = sum((cross_entropy(at_actions(q)) * terminal_mask).sum() / n_nonterminal for q in qs)
    awac_weight = torch.exp(BETA * (targetQ - V))
    loss_awac = (cross_entropy(at_actions(logits)) * awac_weight * terminal_mask).sum() / n_nonterminal
    total = loss_q + loss_v + CQL * loss_cql + AWAC * loss_awac
    return {"loss_q": float(loss_q), "loss_v": float(loss_v), "loss_cql": float(loss_cql),
            "loss_awac": float(loss_awac), "loss": float(total)}


def test_ilql_loss_equals_trlx_equations_on_a_packed_multi_turn_batch(episodes_and_batch) -> None:
    task, rows, batch = episodes_and_batch
    torch.manual_seed(0)
    config = tiny_model_config(task.vocab_size, task.max_length, task.tokenizer.pad_token_id,
                               task.tokenizer.eos_token_id, n_layer=1, n_embd=32, n_head=2)
    model = ValueModel.build(load_backbone(ModelConfig(model_path=config), task.vocab_size)).eval()
    with torch.no_grad():  # targets apart from the online heads and from each other, V on a useful scale
        for p in model.heads.target_q_heads.parameters():
            p.add_(0.3 * torch.randn_like(p))
        model.heads.v_head.down.bias.fill_(0.5)
    loss, stats = ilql_loss(model(batch), batch, tau=TAU, gamma=GAMMA, cql_scale=CQL, awac_scale=AWAC, beta=BETA)
    reference = _trlx_reference(model, rows, batch)
    for key in ("loss_q", "loss_v", "loss_cql", "loss_awac"):
        assert stats[key] == pytest.approx(reference[key], rel=1e-5), key
    assert float(loss.detach()) == pytest.approx(reference["loss"], rel=1e-5)
    # the truncated rows' last targets bootstrap, the terminated rows' do not: both kinds are in the batch
    notdone_last = [float(batch["notdone"][b, len(ep.actions) - 1]) for b, ep in enumerate(rows)]
    assert notdone_last == [0.0 if ep.terminations[-1] else 1.0 for ep in rows]
