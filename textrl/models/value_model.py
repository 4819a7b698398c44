"""A causal LM with value heads, evaluated at the action and state positions of packed batches.

Saved as a directory that plain `AutoModelForCausalLM.from_pretrained` opens (the base model),
with the heads beside it in `value_heads.safetensors` and their settings in `value_heads.json`;
a LoRA model keeps its base weights there and its adapter in `adapter/` (PEFT's own format).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from textrl.io import atomic_directory
from textrl.models.heads import ValueHeads

HEADS_FILE = "value_heads.safetensors"
HEADS_CONFIG = "value_heads.json"
ADAPTER_DIR = "adapter"


@dataclass
class ValueOutput:
    """What the losses need from one batch (A = actions per row)."""

    actions: torch.Tensor  # [B, A] token taken at each action
    logits: torch.Tensor  # [B, A, V] LM logits at the action positions
    hidden: torch.Tensor  # [B, A, H] last hidden state at the action positions
    vs: Optional[torch.Tensor]  # [B, A + 1] V at the state positions
    qs: list[torch.Tensor]  # each [B, A, V]
    target_q: Optional[torch.Tensor]  # [B, A] min_j Qbar_j at the taken actions
    next_hidden: torch.Tensor  # [B, A + 1, H] hidden state at the state positions


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' per-file progress bars while saving or loading small checkpoints."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def gather_positions(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, index[b, k]] for x of shape [B, T, ...] and index of shape [B, K]."""
    return x[torch.arange(x.shape[0], device=x.device)[:, None], index]


def is_peft(backbone: Any) -> bool:
    """Whether the backbone is wrapped with PEFT adapters (peft is only imported if something did)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(backbone, peft.PeftModel)


def transformers_model(backbone: Any) -> Any:
    """The transformers model itself: the backbone, or the model inside a PEFT wrapper."""
    return backbone.get_base_model() if is_peft(backbone) else backbone


def last_hidden_and_lm(backbone: Any) -> tuple[nn.Module, nn.Module]:
    """The base transformer (returns last hidden states) and the LM head of a causal LM."""
    model = transformers_model(backbone)
    return model.base_model, model.get_output_embeddings()


def _base_weights(backbone: Any) -> dict[str, torch.Tensor]:
    """The state dict of a PEFT-wrapped model without its adapters, under the plain transformers names."""
    return {k.replace(".base_layer.", "."): v for k, v in transformers_model(backbone).state_dict().items()
            if ".lora_" not in k and "lora_embedding" not in k}


class ValueModel(nn.Module):
    """`backbone` (a transformers causal LM) plus `ValueHeads`; heads=None for plain behaviour cloning."""

    def __init__(self, backbone: Any, heads: Optional[ValueHeads]) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = heads

    @classmethod
    def build(cls, backbone: Any, num_qs: int = 2, with_v: bool = True, with_targets: bool = True,
              with_heads: bool = True) -> "ValueModel":
        """Fresh heads sized to the backbone's hidden width and vocabulary."""
        if not with_heads:
            return cls(backbone, None)
        hidden = backbone.config.get_text_config().hidden_size
        vocab = backbone.get_output_embeddings().weight.shape[0]
        heads = ValueHeads(hidden, vocab, num_qs=num_qs, with_v=with_v, with_targets=with_targets)
        return cls(backbone, heads.to(next(backbone.parameters()).dtype))

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last-layer hidden states [B, T, H] (no KV cache)."""
        base, _ = last_hidden_and_lm(self.backbone)
        return base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, action_ixs: torch.Tensor,
                state_ixs: torch.Tensor) -> ValueOutput:
        """LM logits and heads at the action positions, V at the state positions."""
        _, lm_head = last_hidden_and_lm(self.backbone)
        h = self.hidden_states(input_ids, attention_mask)
        actions = gather_positions(input_ids, (action_ixs + 1).clamp(max=input_ids.shape[1] - 1))
        h_act = gather_positions(h, action_ixs)
        h_state = gather_positions(h, state_ixs)
        heads = self.heads
        return ValueOutput(
            actions=actions,
            logits=lm_head(h_act),
            hidden=h_act,
            vs=heads.v(h_state) if heads is not None and heads.v_head is not None else None,
            qs=heads.qs(h_act) if heads is not None else [],
            target_q=(heads.target_q_at(h_act.detach(), actions)  # Qbar: no gradient anywhere
                      if heads is not None and heads.target_q_heads is not None else None),
            next_hidden=h_state,
        )

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """The base model (plain transformers layout) plus the heads in safetensors, written atomically."""
        with atomic_directory(directory) as tmp, quiet_transformers():
            if is_peft(self.backbone):
                transformers_model(self.backbone).save_pretrained(str(tmp), state_dict=_base_weights(self.backbone))
                self.backbone.save_pretrained(str(tmp / ADAPTER_DIR))
            else:
                self.backbone.save_pretrained(str(tmp))
            if self.heads is None:
                return
            state = {k: v.detach().contiguous().cpu() for k, v in self.heads.state_dict().items()}
            save_file(state, str(tmp / HEADS_FILE))
            settings = dict(num_qs=len(self.heads.q_heads), with_v=self.heads.v_head is not None,
                            with_targets=self.heads.target_q_heads is not None)
            (tmp / HEADS_CONFIG).write_text(json.dumps(settings))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "ValueModel":
        """Restore a model written by `save_pretrained`."""
        from transformers import AutoModelForCausalLM

        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"{directory} holds no saved model (config.json missing)")
        with quiet_transformers():
            backbone = AutoModelForCausalLM.from_pretrained(str(directory), attn_implementation="eager")
        if (directory / ADAPTER_DIR).is_dir():
            from peft import PeftModel

            backbone = PeftModel.from_pretrained(backbone, str(directory / ADAPTER_DIR), is_trainable=True)
        if not (directory / HEADS_CONFIG).is_file():
            return cls(backbone, None)
        model = cls.build(backbone, **json.loads((directory / HEADS_CONFIG).read_text()))
        model.heads.load_state_dict(load_file(str(directory / HEADS_FILE)))
        return model
