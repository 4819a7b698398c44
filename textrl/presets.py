"""Ready configs: the default config evolved to a task's tokenizer and a tiny GPT-2 (`task_config`), or
to your own tokenizer and a small local model (`text_config`).

The default config names `gpt2` with trlx's values; a task dataset carries its own small tokenizer,
so the benchmark and the demo train a tiny model built from a `GPT2Config` sized to that vocabulary.
"""

from __future__ import annotations

from typing import Any

from textrl.config import TRLConfig, default_config
from textrl.tasks import get_task

# Per-task training settings that differ from the defaults. Steps come from BC's learning curves
# (benchmarks/RESULTS.md section 0, "BC learning curves"): Maze, MazePO and Brackets are flat from 50 to
# 150 steps, so their budgets stay. RandomWalks' random tier, scored exactly (every path enumerated,
# `benchmarks/exact_randomwalks.py`), has BC's sampling policy at 29.0 (mean of 3 seeds) against its data's
# 34.5 (34.3 in expectation) at 400 steps, and around the data from 600 on: 800 (was 400). Wordle trains on 10,000 episodes (`agents.protocol.EPISODES`;
# on 1,000 BC flattened below its data), where BC passes its data's gate from about 5,000 steps on both tiers:
# 6,000 (was 200, then 2,500); three seeds trained on past it show the medium tier still rising to about 9,000
# (86.0 -> 92.8), the next budget to try. Endgames has no curve yet (it needs a GPU). Wordle and Endgames split each
# batch into length-sorted minibatches (`minibatch_size`: the same gradient, less padding; on this CPU a
# step costs 1/1.25 of the whole batch's on Wordle, 1/2.4 on Endgames, whose episodes run from 66 to 1,320 tokens).
_TASK_TRAIN: dict[str, dict[str, Any]] = {
    "randomwalks": dict(batch_size=64, total_steps=800, eval_interval=200, checkpoint_interval=800),
    "maze": dict(batch_size=32, total_steps=200, eval_interval=100, checkpoint_interval=200),
    "maze_po": dict(batch_size=32, total_steps=200, eval_interval=100, checkpoint_interval=200),
    "brackets": dict(batch_size=32, total_steps=200, eval_interval=100, checkpoint_interval=200),
    "wordle": dict(batch_size=32, minibatch_size=16, total_steps=6000, eval_interval=3000, checkpoint_interval=6000),
    "endgames": dict(batch_size=32, minibatch_size=4, total_steps=150, eval_interval=75, checkpoint_interval=150),
}

# Per-method settings for the tiny models (values that differ from each method's defaults).
# `method.beta` is ILQL's AWAC temperature in training; `gen_kwargs.beta` the advantage weight when acting.
_METHOD: dict[str, dict[str, Any]] = {
    "ilql": dict(tau=0.8, alpha=0.1, gen_kwargs=dict(beta=100.0, top_k=0, temperature=1.0)),
    "mc_returns": dict(gen_kwargs=dict(beta=1.0, top_k=0, temperature=1.0)),  # untuned tasks: see below
    "cql": dict(cql_scale=1.0, target_update_rate=0.1, gen_kwargs=dict(top_k=0, temperature=0.0)),
    "bc": dict(gen_kwargs=dict(top_k=0, temperature=1.0)),
    "filtered_bc": dict(gen_kwargs=dict(top_k=0, temperature=1.0)),
}

# Per-task overrides of the method settings above: MC returns' acting beta (its Q of tokens the data
# never took is untrained, so a large beta follows noise), chosen on validation episodes with
# `python benchmarks/sweep_beta.py --task T --agent mc_returns --betas 0 1 4 16 100 --eval-seed 12345`
# (RandomWalks with `--tier random`): RandomWalks 4 (validation 79.0; beta 100 gave 20.7), Maze 0
# (88.5; beta 100 -7.9); other tasks act with 1. `textrl bench` does not use these acting betas: it
# chooses every agent's beta per run on its own validation episodes (agents/protocol.py).
_TASK_METHOD: dict[str, dict[str, dict[str, Any]]] = {
    "randomwalks": {"mc_returns": dict(gen_kwargs=dict(beta=4.0))},
    "maze": {"mc_returns": dict(gen_kwargs=dict(beta=0.0))},
}


TEXT_ILQL_BETA = 4.0
"""`text_config`'s acting beta for ILQL: of 0, 1, 4, 16 and 100 in examples/own_text.py, the one with the
highest mean reward whose reviews stayed well formed (+0.09, 32 of 32; beta 0 -0.34, the data -0.26)."""


def tiny_model_config(vocab_size: int, max_length: int, pad_token_id: int, eos_token_id: int,
                      n_layer: int = 2, n_embd: int = 128, n_head: int = 4) -> Any:
    """A small GPT-2 config for a task vocabulary (built from scratch, nothing downloaded)."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size, n_positions=max(max_length, 8), n_layer=n_layer, n_embd=n_embd, n_head=n_head,
        bos_token_id=eos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        # GPT-2's tanh GELU as one fused op (the default "gelu_new" runs it as six elementwise ops,
        # about 40% of a tiny model's forward time on CPU); the same function up to float rounding
        activation_function="gelu_pytorch_tanh",
    )


def task_config(task: str, method: str = "ilql", **train: Any) -> TRLConfig:
    """The default config of `method`, evolved for `task` (a short name or env id) and a tiny model.

    `**train` overrides `config.train` fields. A `batch_size` given without `minibatch_size` keeps the
    preset's number of minibatches per step where it divides the batch evenly (else one minibatch).
    """
    t = get_task(task)
    preset = dict(_TASK_TRAIN.get(t.name, {}))
    if "batch_size" in train and "minibatch_size" in preset and "minibatch_size" not in train:
        splits = preset["batch_size"] // preset["minibatch_size"]
        preset["minibatch_size"] = train["batch_size"] // splits if train["batch_size"] % splits == 0 else None
    tok = t.tokenizer
    model = tiny_model_config(t.vocab_size, t.max_length, tok.pad_token_id, tok.eos_token_id)
    gen = dict(max_new_tokens=t.max_length)
    changes = _METHOD.get(method, {})
    task_changes = _TASK_METHOD.get(t.name, {}).get(method, {})
    changes = {**changes, **task_changes,
               "gen_kwargs": {**changes.get("gen_kwargs", {}), **task_changes.get("gen_kwargs", {})}}
    # total_steps, not epochs, ends training, so every agent gets the same number of updates
    # (filtered BC's smaller data would otherwise stop after 100 short epochs).
    return default_config(method).evolve(
        # returns as stored (the ILQL default z-scores them, as trlx does; the benchmark does not)
        train={"seq_length": t.max_length, "epochs": 1_000_000, "reward_normalization": "none",
               **preset, **train},
        model=dict(model_path=model),
        tokenizer=dict(tokenizer_path=None),
        optimizer=dict(kwargs=dict(lr=1e-3, weight_decay=0.0)),
        scheduler=dict(name="constant", kwargs=dict()),
        method={**changes, "gen_kwargs": {**gen, **changes["gen_kwargs"]}},
    )


def text_config(method: str, tokenizer: Any, max_length: int, n_layer: int = 2, n_embd: int = 128,
                n_head: int = 4, **train: Any) -> TRLConfig:
    """The default config of `method` for your own text on a small model trained from scratch.

    A tiny GPT-2 sized to `tokenizer` (its vocabulary, pad and EOS ids), trained with the task
    benchmark's values: returns as stored, AdamW at lr 1e-3 with a constant schedule and no weight
    decay, top_k 0; for ILQL tau 0.8, alpha 0.1 and acting beta 4 (`TEXT_ILQL_BETA`). Not trlx's
    values (`default_config`: z-scored returns, lr 5e-5, tau 0.7, alpha 0.001): in
    examples/own_text.py (byte-level BPE reviews, 300 steps) the model trained at lr 5e-5 wrote no
    well-formed review at any beta, so its +0.84 and +1.00 at beta 16 and 100 were the reward
    function's keywords in broken text. With these values every beta wrote well-formed reviews and
    beta 4 gained most (+0.09; beta 0 -0.34, the data -0.26); beta 16 and 100 collapsed onto
    complaints. Sweep beta on your reward function either way. The dataset's own tokenizer is used
    (`tokenizer.tokenizer_path: null`). `max_length` is the longest episode in tokens (the model's
    positions and `train.seq_length`). `**train` overrides `config.train` fields.
    """
    model = tiny_model_config(len(tokenizer), max_length, tokenizer.pad_token_id, tokenizer.eos_token_id,
                              n_layer=n_layer, n_embd=n_embd, n_head=n_head)
    changes = _METHOD.get(method, {})
    gen = {"max_new_tokens": max_length, **changes.get("gen_kwargs", {})}
    if method == "ilql":
        gen["beta"] = TEXT_ILQL_BETA
    return default_config(method).evolve(
        train={"seq_length": max_length, "epochs": 1_000_000, "reward_normalization": "none", "batch_size": 32,
               "total_steps": 1000, "eval_interval": 250, "checkpoint_interval": 1000, **train},
        model=dict(model_path=model),
        tokenizer=dict(tokenizer_path=None),
        optimizer=dict(kwargs=dict(lr=1e-3, weight_decay=0.0)),
        scheduler=dict(name="constant", kwargs=dict()),
        method={**changes, "gen_kwargs": gen},
    )
