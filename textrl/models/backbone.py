"""The transformer under every agent: loaded by name or path, or built from a config; partly frozen on request."""

from __future__ import annotations

import copy
import os
from typing import Any, Optional

import torch

from textrl.config import ModelConfig, TokenizerConfig
from textrl.pretrained import load_pretrained

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# The two ways forward when a hub name cannot be loaded offline.
_OFFLINE_HELP = (
    "For a task dataset use textrl.task_config(task, 'ilql') (a tiny model sized to the dataset's own "
    "tokenizer); for your own model use default_ilql_config().evolve(model=dict(model_path=DIR), "
    "tokenizer=dict(tokenizer_path=DIR)) with DIR a local directory written by save_pretrained"
)


def _hub_offline(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub is off limits: HF_HUB_OFFLINE is set, or its host does not answer in
    `timeout` seconds (checked in a thread, so a hanging DNS lookup cannot stall; skipped behind a proxy)."""
    import socket
    import threading
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return True
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    reached: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            reached.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return not reached


def _from_pretrained(loader: Any, path: str, what: str, **kwargs: Any) -> Any:
    """`loader.from_pretrained(path)`, from the local cache only when the hub is off limits; a hub name that
    is not cached then fails at once (no retry loop) with `_OFFLINE_HELP`."""
    if os.path.isdir(path) or not _hub_offline():
        return load_pretrained(loader, path, **kwargs)
    try:
        return load_pretrained(loader, path, local_files_only=True, **kwargs)
    except (OSError, ValueError) as e:
        raise OSError(f"cannot load {what}={path!r}: it is not a local directory and the Hugging Face hub is "
                      f"offline (HF_HUB_OFFLINE, or no answer from the hub) with no cached copy. "
                      f"{_OFFLINE_HELP}") from e


def load_backbone(config: ModelConfig, vocab_size: Optional[int] = None) -> Any:
    """A causal or seq2seq LM from `config.model_path` (hub name, local directory, or transformers config object)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, PretrainedConfig

    seq2seq = config.model_arch_type == "seq2seq"
    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    dtype = _DTYPES[config.dtype] if config.dtype else None
    path = config.model_path
    if isinstance(path, PretrainedConfig):
        _check_arch(path, seq2seq)
        if vocab_size is not None and path.vocab_size != vocab_size:
            raise ValueError(f"model.model_path config has vocab_size {path.vocab_size} but the data has {vocab_size} "
                             "tokens: build the config with the dataset tokenizer's size")
        # transformers writes into the config it builds from: give it a copy, keep ours as configured
        model = auto.from_config(copy.deepcopy(path), attn_implementation="eager", trust_remote_code=False)
        if dtype is not None:
            model = model.to(dtype)
    else:
        try:
            model = _from_pretrained(auto, path, "model.model_path", dtype=dtype)
        except (OSError, ValueError) as e:
            if _OFFLINE_HELP in str(e):
                raise
            where = "a local directory" if os.path.isdir(path) else "a hub name or a local directory"
            raise OSError(f"cannot load model.model_path={path!r} ({where}) as a {config.model_arch_type} LM: {e}. "
                          "Give a directory written by save_pretrained, a hub name available offline, or a "
                          "transformers config object (and model.model_arch_type: seq2seq for encoder-decoders)") from e
        _check_arch(model.config, seq2seq)
        if vocab_size is not None and model.get_output_embeddings().weight.shape[0] < vocab_size:
            raise ValueError(f"the model {path!r} has {model.get_output_embeddings().weight.shape[0]} output tokens "
                             f"but the data uses {vocab_size}: use a model trained with the dataset's tokenizer")
    freeze_bottom_layers(model, config.num_layers_unfrozen)
    if config.peft_config:
        model = _apply_peft(model, config.peft_config)
    return model


def _check_arch(model_config: Any, seq2seq: bool) -> None:
    """model.model_arch_type must say what the transformers config is; a seq2seq model needs a decoder start."""
    if bool(getattr(model_config, "is_encoder_decoder", False)) != seq2seq:
        kind = "an encoder-decoder" if not seq2seq else "a decoder-only"
        raise ValueError(f"model.model_arch_type is {'seq2seq' if seq2seq else 'causal'} but the model config "
                         f"({type(model_config).__name__}) is {kind} model: set model.model_arch_type to "
                         f"{'causal' if seq2seq else 'seq2seq'}")
    if seq2seq and getattr(model_config, "decoder_start_token_id", None) is None:
        raise ValueError(f"the seq2seq model config ({type(model_config).__name__}) has no decoder_start_token_id: "
                         "set it (T5 uses its pad token, 0)")


def hidden_layers(model: Any, num_layers: Optional[int] = None) -> torch.nn.ModuleList:
    """The transformer blocks: the first ModuleList of `model` as long as its number of layers."""
    n = num_layers if num_layers is not None else model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"cannot find the {n} transformer blocks of {type(model).__name__}")


def freeze_bottom_layers(model: Any, num_layers_unfrozen: int) -> None:
    """-1: everything trains; k >= 0: only the last k (decoder) blocks and the final norm train.

    Embeddings stay frozen, and so does the whole encoder of a seq2seq model.
    """
    if num_layers_unfrozen < 0:
        return
    if model.config.is_encoder_decoder:
        cfg = model.config
        n = getattr(cfg, "num_decoder_layers", None) or getattr(cfg, "decoder_layers", None) or cfg.num_hidden_layers
        blocks, frozen = list(hidden_layers(model.get_decoder(), n)), [model.get_encoder()]
    else:
        blocks, frozen = list(hidden_layers(model)), []
    frozen += blocks[: len(blocks) - num_layers_unfrozen] if num_layers_unfrozen else blocks
    frozen += [model.get_input_embeddings(), model.get_output_embeddings()]
    for module in frozen:
        module.requires_grad_(False)


def _apply_peft(model: Any, peft_config: dict) -> Any:
    """Wrap the model with LoRA adapters; only adapters (and the value heads) then train."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise ImportError("model.peft_config needs the peft package: pip install 'textrl[peft]'") from e
    return get_peft_model(model, LoraConfig(**peft_config))


def load_tokenizer_from_path(path: str, config: Optional[TokenizerConfig] = None) -> Any:
    """A tokenizer by hub name or local directory, with a pad token and the configured sides."""
    from transformers import AutoTokenizer

    try:
        tok = _from_pretrained(AutoTokenizer, path, "tokenizer.tokenizer_path")
    except (OSError, ValueError) as e:
        if _OFFLINE_HELP in str(e):
            raise
        raise OSError(f"cannot load tokenizer.tokenizer_path={path!r}: {e}. Give a local directory or a hub name "
                      "available offline, or null to use the dataset's own tokenizer") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if config is not None:
        tok.padding_side, tok.truncation_side = config.padding_side, config.truncation_side
    return tok
