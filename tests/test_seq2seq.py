"""The seq2seq (T5-style) variant: heads on the decoder, trained from the decoder start token as generated."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, GPT2Config, T5Config

from agents import ILQLAgent
from textrl import make_dataset, pack, task_config
from textrl.config import ModelConfig
from textrl.methods import shifted_log_probs
from textrl.models import ValueModel, decode, load_backbone
from textrl.models.value_model import split_prompt
from textrl.tasks import get_task

VOCAB = 12
START, PAD, EOS = 0, 0, 1


def t5_config(vocab: int = VOCAB, **kw) -> T5Config:
    ids = {"decoder_start_token_id": START, "pad_token_id": PAD, "eos_token_id": EOS, **kw}
    return T5Config(vocab_size=vocab, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2, dropout_rate=0.0, **ids)


@pytest.fixture()
def model() -> ValueModel:
    torch.manual_seed(0)
    backbone = load_backbone(ModelConfig(model_path=t5_config(), model_arch_type="seq2seq"), VOCAB)
    return ValueModel.build(backbone).eval()


def test_split_prompt_by_hand() -> None:
    ids = torch.tensor([[3, 4, 5, 6, 7], [8, 9, 10, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    enc, enc_mask, dec, dec_mask = split_prompt(ids, mask, torch.tensor([2, 1]), start_token_id=11, pad_token_id=0)
    assert enc.tolist() == [[3, 4], [8, 0]] and enc_mask.tolist() == [[1, 1], [1, 0]]
    assert dec.tolist() == [[11, 5, 6, 7], [11, 9, 10, 0]] and dec_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]


def test_forward_equals_encoding_the_prompt_and_decoding_from_the_start_token(model: ValueModel) -> None:
    """Row 0: prompt [3, 4], actions 5 6 7. Row 1: prompt [8], actions 9 10 (one padded action slot)."""
    ids = torch.tensor([[3, 4, 5, 6, 7], [8, 9, 10, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    action_ixs = torch.tensor([[1, 2, 3], [0, 1, 0]])
    state_ixs = torch.tensor([[1, 2, 3, 4], [0, 1, 2, 0]])
    out = model(ids, mask, action_ixs, state_ixs)
    assert out.actions[0].tolist() == [5, 6, 7] and out.actions[1, :2].tolist() == [9, 10]
    for b, prompt, rest, n in ((0, [3, 4], [5, 6, 7], 3), (1, [8], [9, 10], 2)):
        direct = model.backbone(input_ids=torch.tensor([prompt]), decoder_input_ids=torch.tensor([[START] + rest]),
                                output_hidden_states=True)
        h = direct.decoder_hidden_states[-1][0]
        torch.testing.assert_close(out.logits[b, :n], direct.logits[0, :n])  # predicts rest[k] at decoder k
        torch.testing.assert_close(out.vs[b, : n + 1], model.heads.v(h[: n + 1]))
        torch.testing.assert_close(out.qs[0][b, :n], model.heads.qs(h[:n])[0])


def test_greedy_beta_zero_equals_generate_and_cache_changes_nothing(model: ValueModel) -> None:
    ids = torch.tensor([[0, 3, 4], [5, 6, 7]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])

    def greedy(use_cache: bool) -> torch.Tensor:
        return decode(model.backbone, ids, mask, max_new_tokens=6, top_k=0, temperature=0.0,
                      score_fn=lambda h, logits: shifted_log_probs(model.heads, h, logits, 0.0),
                      eos_token_id=EOS, pad_token_id=PAD, use_cache=use_cache)

    ours = greedy(True)
    reference = model.backbone.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                                        eos_token_id=EOS, pad_token_id=PAD)[:, 1:]  # drop the start token
    assert torch.equal(ours, reference[:, : ours.shape[1]])
    assert torch.equal(greedy(False), ours)
    shifted = decode(model.backbone, ids, mask, max_new_tokens=6, top_k=0, temperature=0.0,
                     score_fn=lambda h, logits: shifted_log_probs(model.heads, h, logits, 1e4),
                     eos_token_id=None, pad_token_id=PAD)
    h = model.backbone(input_ids=ids, attention_mask=mask, decoder_input_ids=torch.full((2, 1), START),
                       output_hidden_states=True).decoder_hidden_states[-1][:, 0]
    advantage = model.heads.q_heads[0](h).minimum(model.heads.q_heads[1](h)) - model.heads.v(h)[:, None]
    assert torch.equal(shifted[:, 0], advantage.argmax(-1))  # a large beta follows the advantage


def test_num_layers_unfrozen_freezes_the_encoder_and_bottom_decoder_blocks() -> None:
    backbone = load_backbone(ModelConfig(model_path=t5_config(), model_arch_type="seq2seq", num_layers_unfrozen=1))
    assert not any(p.requires_grad for p in backbone.get_encoder().parameters())
    trains = [any(p.requires_grad for p in b.parameters()) for b in backbone.get_decoder().block]
    assert trains == [False, True]


def test_arch_type_must_match_the_model() -> None:
    with pytest.raises(ValueError, match="set model.model_arch_type to seq2seq"):
        load_backbone(ModelConfig(model_path=t5_config()))
    with pytest.raises(ValueError, match="set model.model_arch_type to causal"):
        load_backbone(ModelConfig(model_path=GPT2Config(vocab_size=VOCAB, n_layer=1, n_embd=8, n_head=2),
                                  model_arch_type="seq2seq"))


def test_seq2seq_ilql_fits_saves_loads_and_generates_as_trained(tmp_path) -> None:
    task = get_task("randomwalks")
    data = make_dataset("textrl/randomwalks/mixed-v1", num_episodes=200, progress=False)
    cfg = task_config("randomwalks", "ilql", total_steps=30, batch_size=32, checkpoint_interval=30,
                      eval_interval=30, progress_bar=False, checkpoint_dir=str(tmp_path / "run")).evolve(
        model=dict(model_path=t5_config(task.vocab_size, eos_token_id=task.tokenizer.eos_token_id,
                                        pad_token_id=task.tokenizer.pad_token_id,
                                        decoder_start_token_id=task.tokenizer.pad_token_id),
                   model_arch_type="seq2seq"))
    agent = ILQLAgent(cfg)
    with pytest.warns(UserWarning, match="not evaluated by env rollouts"):
        history = agent.fit(data)
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 30 and np.mean(losses[-5:]) < np.mean(losses[:5])

    # Training and generation agree: the first action's logits in training are decoding's first-step logits.
    batch = pack(data).batch(torch.arange(2))
    out = agent.model(batch["input_ids"], batch["attention_mask"], batch["action_ixs"], batch["state_ixs"])
    seen = []
    for b in range(2):
        prompt = batch["input_ids"][b : b + 1, : int(batch["action_ixs"][b, 0]) + 1]
        decode(agent.model.backbone, prompt, torch.ones_like(prompt), max_new_tokens=1, top_k=0, temperature=0.0,
               score_fn=lambda h, logits: seen.append(logits) or logits, eos_token_id=None, pad_token_id=0)
    torch.testing.assert_close(torch.cat(seen), out.logits[:, 0])

    agent.save(tmp_path / "saved")
    plain = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "saved" / "model")
    assert plain.config.is_encoder_decoder
    again = ILQLAgent.load(tmp_path / "saved")
    for a, b in zip(agent.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    texts = again.generate(["3", "7"], max_new_tokens=4, temperature=0.0)
    assert texts == agent.generate(["3", "7"], max_new_tokens=4, temperature=0.0)
    with pytest.raises(ValueError, match="cannot act on env observations"):
        agent.act({"input_ids": np.array([5, 0, 0], dtype=np.uint8), "length": np.array(1)})
