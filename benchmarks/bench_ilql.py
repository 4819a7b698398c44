"""ILQL speed against its yardsticks, on the same model, batch and sequence length in one run.

(1) training step (forward + backward + the trainer's fused AdamW): ILQL (V, two Q heads, two target
    Q heads, the full loss, Polyak sync every `--sync-every` steps) vs a plain causal-LM step
    (`labels=input_ids`), the heads at trlx's shape or, for the `-rankN` shapes, at `q_head_rank` N;
(2) decoding: advantage-shifted sampling (`textrl.models.decode`, KV cache, score = log-probs +
    beta * (Qbar - V)) vs `model.generate(do_sample=True)` with the same top-k and length.
Timings alternate between the two sides and report medians over `--repeats`, because a shared
machine spreads by about 20%. Every position after the prompt is an action (the worst case), except in
the `endgames` shapes, which lay their actions out as `textrl/Endgames-v1` does: one move token per 66-token turn.

    python benchmarks/bench_ilql.py [--shapes tiny small small-rank128 endgames ...] [--repeats 3] [--device cpu]
                                    [--dtype fp32|bf16]

On a GPU (`--device cuda --dtype bf16`) it also prints training tokens/s and model FLOPs utilisation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from tensordict import TensorDict
from transformers import GPT2Config, GPT2LMHeadModel

from textrl.config import OptimizerConfig
from textrl.methods import ilql_loss, shifted_log_probs
from textrl.models import ValueModel, decode
from textrl.optim import build_optimizer

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core peaks


@dataclass(frozen=True)
class Shape:
    """A model and batch size to time."""

    name: str
    layers: int
    width: int
    heads: int
    vocab: int
    batch: int
    seq: int
    prompt: int  # tokens before the first action
    new_tokens: int  # decoding length
    turn: int = 1  # tokens from one action to the next (1: every position after the prompt is an action)
    q_rank: Optional[int] = None  # model.q_head_rank: None is trlx's full Q head
    dropout: float = 0.1  # GPT2Config's default; the task presets' tiny models train without dropout


_SMALL = Shape("GPT-2-small shape (12x768, vocab 50257)", 12, 768, 12, 50257, 8, 64, 1, 48)
# The Endgames-v1 benchmark's model (`textrl.presets.tiny_model_config` at the task's 1,984-token vocabulary) and
# the preset's batch of 32, at the mixed data's mean game of 12 white moves: a 65-token board prompt, then a
# move token and the 65-token board after black's reply per turn, the last move (mate) with no board after it.
_ENDGAMES = Shape("Endgames-v1 model (GPT-2 2x128, vocab 1984)", 2, 128, 4, 1984, 32, 65 + 66 * 11 + 1, 65, 64,
                  turn=66, dropout=0.0)

SHAPES = {
    "tiny": Shape("tiny (GPT-2 2x128, vocab 50)", 2, 128, 4, 50, 128, 64, 1, 48),
    "small": _SMALL,
    "small-rank128": replace(_SMALL, name="GPT-2-small shape, q_head_rank 128", q_rank=128),
    "endgames": _ENDGAMES,
    **{f"endgames-rank{r}": replace(_ENDGAMES, name=f"Endgames-v1 model, q_head_rank {r}", q_rank=r) for r in (32, 128)},
}


def build(shape: Shape, device: str, seed: int = 0) -> ValueModel:
    """A GPT-2 from a config (nothing downloaded) with ILQL heads."""
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=shape.vocab, n_layer=shape.layers, n_embd=shape.width, n_head=shape.heads,
                        n_positions=max(1024, shape.seq + shape.new_tokens), bos_token_id=0, eos_token_id=0,
                        pad_token_id=0, resid_pdrop=shape.dropout, embd_pdrop=shape.dropout, attn_pdrop=shape.dropout)
    backbone = GPT2LMHeadModel._from_config(config, attn_implementation="eager")
    return ValueModel.build(backbone, q_rank=shape.q_rank).to(device)


def action_positions(shape: Shape) -> torch.Tensor:
    """The hidden-state positions that predict an action: one every `shape.turn` tokens from the prompt's end."""
    return torch.arange(shape.prompt - 1, shape.seq - 1, shape.turn)


def synthetic_batch(shape: Shape, device: str, seed: int = 0) -> TensorDict:
    """A batch in the packed contract: actions at `action_positions`; half the rows terminate."""
    g = torch.Generator().manual_seed(seed)
    B, T = shape.batch, shape.seq
    action_ixs = action_positions(shape).expand(B, -1)
    A = action_ixs.shape[1]
    notdone = torch.ones(B, A)
    notdone[: B // 2, -1] = 0.0
    return TensorDict({
        "input_ids": torch.randint(1, shape.vocab, (B, T), generator=g),
        "attention_mask": torch.ones(B, T, dtype=torch.long),
        "action_ixs": action_ixs,
        "state_ixs": torch.cat([action_ixs, torch.full((B, 1), T - 1)], dim=1),
        "action_mask": torch.ones(B, A, dtype=torch.bool),
        "rewards": torch.randn(B, A, generator=g),
        "notdone": notdone,
        "returns": torch.randn(B, generator=g),
    }, batch_size=[B]).to(device)


def optimizer(params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The trainer's optimizer (the default config's AdamW, fused) for both sides of the comparison."""
    return build_optimizer([p for p in params if p.requires_grad], OptimizerConfig())


def lm_step_fn(model: ValueModel, batch: TensorDict, autocast: Callable) -> Callable[[], None]:
    """One plain causal-LM step of the backbone."""
    opt = optimizer(model.backbone.parameters())

    def step() -> None:
        with autocast():
            loss = model.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                  labels=batch["input_ids"], use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def ilql_step_fn(model: ValueModel, batch: TensorDict, autocast: Callable, sync_every: int) -> Callable[[], None]:
    """One ILQL step (the default method settings), with the target sync on its cadence."""
    opt = optimizer(model.parameters())
    count = [0]

    def step() -> None:
        with autocast():
            out = model(batch["input_ids"], batch["attention_mask"], batch["action_ixs"], batch["state_ixs"])
            loss, _ = ilql_loss(out, batch, tau=0.7, gamma=0.99, cql_scale=0.1, awac_scale=1.0, beta=0.0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        count[0] += 1
        if count[0] % sync_every == 0:
            model.heads.sync_target_q_heads(0.001)

    return step


def timed(fn: Callable[[], None], calls: int, device: str) -> float:
    """Seconds per call of `fn`, averaged over `calls` calls."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls


def alternate(a: Callable[[], None], b: Callable[[], None], repeats: int, calls: int, device: str) -> tuple[float, float]:
    """Median seconds per call of `a` and of `b`, timed in turns after one warm-up call each."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(timed(a, calls, device))
        tb.append(timed(b, calls, device))
    return statistics.median(ta), statistics.median(tb)


def train_flops(model: ValueModel, shape: Shape) -> float:
    """Model FLOPs of one ILQL step: 6 x params x tokens (blocks, LM head and online heads at the actions),
    12 x layers x seq x width per token for attention, 2 x params for the target heads' forward up to
    their gathered output rows."""
    d, L, T, B = shape.width, shape.layers, shape.seq, shape.batch
    actions = B * len(action_positions(shape))
    blocks = sum(p.numel() for p in model.backbone.transformer.h.parameters())
    heads = model.heads
    online = sum(p.numel() for m in [heads.v_head, *heads.q_heads] for p in m.parameters())
    target_up = sum(p.numel() for q in heads.target_q_heads for m in (q.up, q.low) if m is not None
                    for p in m.parameters())
    transformer = 6 * blocks * B * T + 12 * L * T * d * B * T + 6 * d * shape.vocab * actions  # LM head at actions
    return transformer + 6 * online * actions + 2 * target_up * actions


@torch.no_grad()
def decode_rates(model: ValueModel, shape: Shape, device: str, repeats: int, autocast: Callable) -> tuple[float, float]:
    """New tokens per second of `model.generate` sampling and of ILQL advantage-shifted decoding."""
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(1, shape.vocab, (shape.batch, 8), generator=g).to(device)
    mask = torch.ones_like(prompt)
    top_k = 20

    def ilql_score(hidden: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return shifted_log_probs(model.heads, hidden, logits, beta=1.0)

    def ours() -> None:
        with autocast():
            decode(model.backbone, prompt, mask, max_new_tokens=shape.new_tokens, top_k=top_k, temperature=1.0,
                   score_fn=ilql_score, eos_token_id=None, pad_token_id=0, generator=torch.Generator().manual_seed(0))

    def reference() -> None:
        with autocast():
            model.backbone.generate(prompt, attention_mask=mask, do_sample=True, top_k=top_k, temperature=1.0,
                                    max_new_tokens=shape.new_tokens, min_new_tokens=shape.new_tokens, pad_token_id=0)

    t_ref, t_ours = alternate(reference, ours, repeats, 1, device)
    n = shape.batch * shape.new_tokens
    return n / t_ref, n / t_ours


def main() -> None:
    """Run the benchmark and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sync-every", type=int, default=5, help="target sync cadence (the default config's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args()

    device = args.device

    def autocast():
        return torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=args.dtype == "bf16")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, {args.dtype}")
    print("| shape | batch | Q head params | LM step | ILQL step | ratio | generate tok/s | ILQL decode tok/s | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for key in args.shapes:
        shape = SHAPES[key]
        model = build(shape, device)
        batch = synthetic_batch(shape, device)
        model.train()
        t_lm, t_ilql = alternate(lm_step_fn(model, batch, autocast), ilql_step_fn(model, batch, autocast, args.sync_every),
                                 args.repeats, args.sync_every, device)
        model.eval()
        dec_row = decode_rates(model, shape, device, args.repeats, autocast)
        q_params = sum(p.numel() for p in model.heads.q_heads[0].parameters())  # each of 2 online, 2 target
        print(f"| {shape.name} | {shape.batch}x{shape.seq} | {q_params / 1e6:.3f}M | {t_lm * 1e3:.0f} ms | "
              f"{t_ilql * 1e3:.0f} ms | {t_ilql / t_lm:.2f} | {dec_row[0]:.0f} | {dec_row[1]:.0f} | {dec_row[1] / dec_row[0]:.2f} |")
        if device.startswith("cuda"):
            tokens_per_s = shape.batch * shape.seq / t_ilql
            name = torch.cuda.get_device_name()
            peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
            mfu = f"{100 * train_flops(model, shape) / t_ilql / peak:.1f}%" if peak else "unknown peak"
            print(f"  ILQL training: {tokens_per_s:.0f} tokens/s, MFU {mfu} on {name}")
        del model, batch


if __name__ == "__main__":
    main()
