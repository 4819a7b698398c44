"""Value heads, the ILQL loss, decoding, loading and saving (tiny GPT-2 models built from configs)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from tensordict import TensorDict
from transformers import AutoModelForCausalLM, GPT2Config

from textrl.config import ModelConfig
from textrl.methods import ilql_loss, taken_and_logsumexp, token_cross_entropy
from textrl.models import (
    MLPHead,
    ValueHeads,
    ValueModel,
    ValueOutput,
    decode,
    load_backbone,
    sample_next,
)
from textrl.models.value_model import gather_positions

VOCAB = 12


def tiny_config(**kw) -> GPT2Config:
    return GPT2Config(vocab_size=VOCAB, n_layer=2, n_embd=16, n_head=2, n_positions=32, bos_token_id=1,
                      eos_token_id=1, pad_token_id=0, **kw)


@pytest.fixture()
def model() -> ValueModel:
    torch.manual_seed(0)
    return ValueModel.build(load_backbone(ModelConfig(model_path=tiny_config()), VOCAB)).eval()


def _ce(logits: torch.Tensor, target: int) -> float:
    return float(-torch.log_softmax(logits, -1)[target])


def test_ilql_loss_matches_a_hand_computation() -> None:
    torch.manual_seed(1)
    B, A, V = 2, 3, 4
    # Row 0: three actions with environment tokens between them (multi-turn), truncated (bootstrap at the end).
    # Row 1: two actions, terminated (no bootstrap), one padded action slot.
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    rewards = torch.tensor([[0.5, -1.0, 2.0], [0.0, 1.0, 0.0]])
    notdone = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    actions = torch.tensor([[1, 3, 0], [2, 2, 0]])
    out = ValueOutput(
        actions=actions, logits=torch.randn(B, A, V),
        vs=torch.randn(B, A + 1), qs=[torch.randn(B, A, V), torch.randn(B, A, V)],
        target_q=torch.randn(B, A), state_hidden=torch.zeros(B, A + 1, 1),
    )
    batch = TensorDict({"action_mask": mask, "rewards": rewards, "notdone": notdone}, batch_size=[B])
    tau, gamma, cql, awac, beta = 0.7, 0.9, 0.1, 1.0, 0.5
    loss, stats = ilql_loss(out, batch, tau=tau, gamma=gamma, cql_scale=cql, awac_scale=awac, beta=beta)

    valid = [(b, k) for b in range(B) for k in range(A) if mask[b, k]]
    n = len(valid)
    lq = lv = lc = la = 0.0
    for b, k in valid:
        a = int(actions[b, k])
        y = float(rewards[b, k]) + gamma * float(out.vs[b, k + 1]) * float(notdone[b, k])
        lq += sum((float(q[b, k, a]) - y) ** 2 for q in out.qs) / n
        d = float(out.target_q[b, k]) - float(out.vs[b, k])
        lv += abs(tau - (1.0 if d < 0 else 0.0)) * d * d / n
        lc += sum(_ce(q[b, k], a) for q in out.qs) / n
        la += math.exp(beta * d) * _ce(out.logits[b, k], a) / n
    assert stats["loss_q"] == pytest.approx(lq, rel=1e-5)
    assert stats["loss_v"] == pytest.approx(lv, rel=1e-5)
    assert stats["loss_cql"] == pytest.approx(lc, rel=1e-5)
    assert stats["loss_awac"] == pytest.approx(la, rel=1e-5)
    assert float(loss) == pytest.approx(lq + lv + cql * lc + awac * la, rel=1e-5)


@pytest.mark.parametrize("used", ["both", "taken", "lse"])
def test_taken_and_logsumexp_equals_gather_and_cross_entropy(used: str) -> None:
    """Values and gradients equal autograd's gather + logsumexp (float64, so exact to rounding)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(0, 7, (2, 3))
    weights = torch.randn(2, 2, 3, dtype=torch.float64)

    def objective(taken, lse):
        return ((weights[0] * taken).sum() if used != "lse" else 0) + ((weights[1] * lse).sum() if used != "taken" else 0)

    taken, lse = taken_and_logsumexp(x, idx)
    (grad,) = torch.autograd.grad(objective(taken, lse), x)
    ref_taken, ref_lse = x.gather(-1, idx[..., None]).squeeze(-1), torch.logsumexp(x, -1)
    (ref_grad,) = torch.autograd.grad(objective(ref_taken, ref_lse), x)
    torch.testing.assert_close(taken, ref_taken)
    torch.testing.assert_close(lse, ref_lse)
    torch.testing.assert_close(grad, ref_grad)
    ce = F.cross_entropy(x.flatten(0, 1), idx.flatten(), reduction="none").view(2, 3)
    torch.testing.assert_close(token_cross_entropy(x, idx), ce)


def test_taken_and_logsumexp_reduces_low_precision_scores_in_float32() -> None:
    x = (torch.randn(4, 50) * 3).bfloat16().requires_grad_()
    idx = torch.randint(0, 50, (4,))
    taken, lse = taken_and_logsumexp(x, idx)
    assert taken.dtype == lse.dtype == torch.float32
    torch.testing.assert_close(lse, torch.logsumexp(x.float(), -1))
    (lse - taken).sum().backward()
    assert x.grad.dtype == torch.bfloat16
    expected = torch.softmax(x.float(), -1) - F.one_hot(idx, 50)
    torch.testing.assert_close(x.grad.float(), expected, atol=4e-3, rtol=0)


def test_low_rank_q_head_output_has_that_rank() -> None:
    """q_rank=3: Q(h) - bias spans at most 3 directions over the vocabulary, whatever the inputs."""
    torch.manual_seed(0)
    head = ValueHeads(8, 50, num_qs=1, q_rank=3).q_heads[0]
    out = head(torch.randn(40, 8)) - head.down.bias
    assert int(torch.linalg.matrix_rank(out.detach())) == 3
    assert sum(p.numel() for p in head.parameters()) == 8 * 16 + 16 + 16 * 3 + 3 * 50 + 50
    with pytest.raises(ValueError, match="rank = 0: must be at least 1"):
        MLPHead(8, 50, rank=0)


def test_loss_gradient_does_not_flow_through_next_value() -> None:
    vs = torch.zeros(1, 3, requires_grad=True)
    out = ValueOutput(actions=torch.tensor([[0, 0]]), logits=torch.zeros(1, 2, 2),
                      vs=vs, qs=[torch.zeros(1, 2, 2)], target_q=torch.zeros(1, 2), state_hidden=torch.zeros(1, 3, 1))
    batch = TensorDict({"action_mask": torch.tensor([[True, True]]), "rewards": torch.ones(1, 2),
                        "notdone": torch.ones(1, 2)}, batch_size=[1])
    loss, _ = ilql_loss(out, batch, tau=0.7, gamma=0.99, cql_scale=0.0, awac_scale=0.0, beta=0.0)
    loss.backward()
    assert vs.grad[0, 2] == 0  # V(s_{n+1}) only appears as a (detached) target


@pytest.mark.parametrize("rank", [None, 3])
def test_gathered_head_equals_full_head_then_gather(rank) -> None:
    torch.manual_seed(0)
    head = MLPHead(8, 50, rank=rank)
    h = torch.randn(3, 5, 8)
    idx = torch.randint(0, 50, (3, 5))
    torch.testing.assert_close(head.at(h, idx), head(h).gather(-1, idx[..., None]).squeeze(-1))
    heads = ValueHeads(8, 50, num_qs=2, q_rank=rank)
    for q in heads.q_heads:
        torch.nn.init.normal_(q.down.weight)
    heads.sync_target_q_heads(0.3)
    full = torch.stack([q(h) for q in heads.target_q_heads]).amin(0).gather(-1, idx[..., None]).squeeze(-1)
    torch.testing.assert_close(heads.target_q_at(h, idx), full)


def test_heads_at_indices_equal_heads_everywhere_then_gathered(model: ValueModel) -> None:
    ids = torch.randint(2, VOCAB, (2, 7))
    mask = torch.ones_like(ids)
    action_ixs = torch.tensor([[0, 2, 5], [1, 3, 4]])
    state_ixs = torch.tensor([[0, 2, 5, 6], [1, 3, 4, 6]])
    out = model(ids, mask, action_ixs, state_ixs)
    h = model.hidden_states(ids, mask)
    for b in range(2):
        torch.testing.assert_close(out.qs[0][b], model.heads.q_heads[0](h[b, action_ixs[b]]))
        torch.testing.assert_close(out.vs[b], model.heads.v(h[b, state_ixs[b]]))
        torch.testing.assert_close(out.logits[b], model.backbone.lm_head(h[b, action_ixs[b]]))
        assert torch.equal(out.actions[b], ids[b, action_ixs[b] + 1])
    batch = TensorDict({"input_ids": ids, "attention_mask": mask, "action_ixs": action_ixs, "state_ixs": state_ixs},
                       batch_size=[2])
    packed = model(batch)  # the packed batch itself, as the agents call it
    for x, y in [(out.logits, packed.logits), (out.vs, packed.vs), (out.qs[0], packed.qs[0]),
                 (out.target_q, packed.target_q), (out.state_hidden, packed.state_hidden)]:
        assert torch.equal(x, y)
    torch.testing.assert_close(out.state_hidden, gather_positions(h, state_ixs))
    with pytest.raises(TypeError, match="takes a packed batch"):
        model(ids, mask)


def test_awac_weight_cap_clamps_exp_beta_advantage() -> None:
    torch.manual_seed(2)
    B, A, V = 1, 3, 4
    actions = torch.tensor([[0, 1, 2]])
    vs = torch.zeros(B, A + 1)
    out = ValueOutput(actions=actions, logits=torch.randn(B, A, V), vs=vs, qs=[torch.randn(B, A, V)],
                      target_q=torch.tensor([[10.0, 0.0, -1.0]]), state_hidden=torch.zeros(B, A + 1, 1))
    batch = TensorDict({"action_mask": torch.ones(B, A, dtype=torch.bool), "rewards": torch.zeros(B, A),
                        "notdone": torch.ones(B, A)}, batch_size=[B])
    kw = dict(tau=0.7, gamma=0.99, cql_scale=0.0, awac_scale=1.0, beta=1.0)
    _, free = ilql_loss(out, batch, **kw)
    _, capped = ilql_loss(out, batch, **kw, awac_weight_max=100.0)
    assert free["awac_weight_max"] == pytest.approx(math.exp(10.0), rel=1e-5)  # trlx: uncapped by default
    assert capped["awac_weight_max"] == pytest.approx(100.0)
    ce = [_ce(out.logits[0, k], int(actions[0, k])) for k in range(A)]
    expected = (100.0 * ce[0] + 1.0 * ce[1] + math.exp(-1.0) * ce[2]) / A
    assert capped["loss_awac"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("q_rank", [None, 3])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_polyak_sync_moves_targets_towards_online(alpha: float, q_rank) -> None:
    heads = ValueHeads(4, 6, num_qs=2, q_rank=q_rank)
    for q in heads.q_heads:
        for p in q.parameters():
            torch.nn.init.normal_(p)
    online = [p.clone() for p in heads.q_heads.parameters()]
    before = [p.clone() for p in heads.target_q_heads.parameters()]
    heads.sync_target_q_heads(alpha)
    for o, b, t in zip(online, before, heads.target_q_heads.parameters()):
        torch.testing.assert_close(t, alpha * o + (1 - alpha) * b)
    assert not any(p.requires_grad for p in heads.target_q_heads.parameters())


def test_beta_zero_greedy_decoding_equals_generate(model: ValueModel) -> None:
    ids = torch.tensor([[0, 0, 5, 6], [3, 4, 5, 6]])  # left padded
    mask = (ids != 0).long()
    ours = decode(model.backbone, ids, mask, max_new_tokens=6, top_k=0, temperature=0.0,
                  score_fn=lambda h, logits: torch.log_softmax(logits, -1) + 0.0 * model.heads.v(h)[:, None],
                  eos_token_id=None, pad_token_id=0)
    ref = model.backbone.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0,
                                  eos_token_id=None)
    assert torch.equal(ours, ref[:, ids.shape[1]:])


def test_cached_decoding_equals_uncached(model: ValueModel) -> None:
    ids = torch.tensor([[0, 7, 5, 6], [3, 4, 5, 6]])
    mask = (ids != 0).long()
    kwargs = dict(max_new_tokens=8, top_k=5, temperature=1.0, eos_token_id=1, pad_token_id=0,
                  score_fn=lambda h, logits: torch.log_softmax(logits, -1))
    a = decode(model.backbone, ids, mask, generator=torch.Generator().manual_seed(3), use_cache=True, **kwargs)
    b = decode(model.backbone, ids, mask, generator=torch.Generator().manual_seed(3), use_cache=False, **kwargs)
    assert torch.equal(a, b)


def test_large_beta_follows_the_advantage(model: ValueModel) -> None:
    heads = model.heads
    ids = torch.randint(2, VOCAB, (3, 5))
    mask = torch.ones_like(ids)
    score = lambda h, logits: torch.log_softmax(logits, -1) + 1e4 * (heads.target_q(h) - heads.v(h)[:, None])  # noqa: E731
    tokens = decode(model.backbone, ids, mask, max_new_tokens=1, top_k=0, temperature=1.0, score_fn=score,
                    eos_token_id=None, pad_token_id=0, generator=torch.Generator().manual_seed(0))
    h = model.hidden_states(ids, mask)[:, -1]
    assert torch.equal(tokens[:, 0], (heads.target_q(h) - heads.v(h)[:, None]).argmax(-1))


def test_sample_next_respects_top_k_and_temperature_zero() -> None:
    scores = torch.tensor([[0.0, 5.0, 4.0, -1.0]]).repeat(200, 1)
    g = torch.Generator().manual_seed(0)
    picks = sample_next(scores, top_k=2, temperature=1.0, generator=g)
    assert set(picks.tolist()) <= {1, 2} and len(set(picks.tolist())) == 2
    assert sample_next(scores, top_k=0, temperature=0.0).eq(1).all()


def test_decoding_stops_rows_at_eos_and_pads_after(model: ValueModel) -> None:
    eos = 1
    ids = torch.tensor([[3, 4], [5, 6]])
    force_eos_first_row = torch.full((2, VOCAB), -1e9)
    force_eos_first_row[0, eos] = 0.0
    force_eos_first_row[1, 7] = 0.0
    tokens = decode(model.backbone, ids, torch.ones_like(ids), max_new_tokens=3, top_k=0, temperature=0.0,
                    score_fn=lambda h, logits: force_eos_first_row, eos_token_id=eos, pad_token_id=0)
    assert tokens.tolist() == [[eos, 0, 0], [7, 7, 7]]


@pytest.mark.parametrize("q_rank", [None, 4])
def test_save_load_round_trip_and_plain_transformers_open_it(q_rank, tmp_path) -> None:
    torch.manual_seed(0)
    model = ValueModel.build(load_backbone(ModelConfig(model_path=tiny_config()), VOCAB), q_rank=q_rank).eval()
    model.heads.sync_target_q_heads(0.5)
    model.save_pretrained(tmp_path)
    settings = json.loads((tmp_path / "value_heads.json").read_text())
    assert settings["q_rank"] == q_rank  # recorded whatever it is (None: trlx's full output layer)
    again = ValueModel.from_pretrained(tmp_path).eval()
    assert again.heads.q_rank == q_rank
    ids = torch.randint(2, VOCAB, (2, 6))
    mask = torch.ones_like(ids)
    ixs, sixs = torch.tensor([[0, 3], [1, 2]]), torch.tensor([[0, 3, 5], [1, 2, 5]])
    a, b = model(ids, mask, ixs, sixs), again(ids, mask, ixs, sixs)
    for x, y in [(a.logits, b.logits), (a.vs, b.vs), (a.qs[1], b.qs[1]), (a.target_q, b.target_q)]:
        assert torch.equal(x, y)
    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()  # its default attention kernel may differ
    torch.testing.assert_close(plain(ids).logits, model.backbone(ids).logits, rtol=1e-4, atol=1e-5)


def test_backbone_from_a_local_directory_and_bad_paths(tmp_path) -> None:
    AutoModelForCausalLM.from_config(tiny_config()).save_pretrained(str(tmp_path / "m"))
    model = load_backbone(ModelConfig(model_path=str(tmp_path / "m")), VOCAB)
    assert model.config.n_layer == 2
    with pytest.raises(OSError, match="cannot load model.model_path"):
        load_backbone(ModelConfig(model_path=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="vocab_size 12 but the data has 30"):
        load_backbone(ModelConfig(model_path=tiny_config()), 30)


@pytest.mark.parametrize("k,trainable_blocks", [(-1, 2), (0, 0), (1, 1)])
def test_num_layers_unfrozen(k: int, trainable_blocks: int) -> None:
    model = load_backbone(ModelConfig(model_path=tiny_config(), num_layers_unfrozen=k), VOCAB)
    blocks = model.transformer.h
    trains = [any(p.requires_grad for p in b.parameters()) for b in blocks]
    assert sum(trains) == trainable_blocks and trains[len(trains) - trainable_blocks:] == [True] * trainable_blocks
    assert model.transformer.wte.weight.requires_grad == (k == -1)


def test_hidden_states_of_right_padded_rows_skip_the_padding_mask_and_stay_the_same(model: ValueModel) -> None:
    base = model.backbone.transformer
    seen = []
    hook = base.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["attention_mask"]),
                                          with_kwargs=True)
    torch.manual_seed(1)
    ids = torch.randint(2, VOCAB, (3, 7))
    right = (torch.arange(7)[None] < torch.tensor([[7], [4], [1]])).long()
    left = right.flip(-1)
    try:
        h_right, h_left = model.hidden_states(ids, right), model.hidden_states(ids, left)
    finally:
        hook.remove()
    assert bool(seen[0].all()) and torch.equal(seen[1], left)  # right padding: all ones; left padding as given
    with torch.no_grad():
        masked = base(input_ids=ids, attention_mask=right, use_cache=False).last_hidden_state
        as_given = base(input_ids=ids, attention_mask=left, use_cache=False).last_hidden_state
    real = right.bool()
    assert torch.allclose(h_right[real], masked[real], atol=1e-6) and torch.equal(h_left, as_given)
