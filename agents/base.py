"""The surface every agent shares: fit, act and generate (saving in agents/saving.py, the checks of
what act/generate receive in agents/inputs.py, evaluation during training in agents/evaluation.py).

A subclass says what its model is (`build_model`), what it minimises (`loss`), what it does
after an optimizer step, and how it scores the next token (`next_token_scores`); the data
path, the training loop, evaluation and checkpoints are the same for all agents.
"""

from __future__ import annotations

import functools
import warnings
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Optional, Sequence

import gymnasium
import minari
import numpy as np
import torch
from tensordict import TensorDict

from agents.evaluation import rollout_eval_fn
from agents.inputs import (
    check_env,
    check_observation_fits,
    check_positions,
    left_padded,
    prompt_list,
    room_for_new_tokens,
    start_prefix,
)
from agents.saving import SavedAgent
from textrl.config import TRLConfig, default_config
from textrl.data import PackedDataset, load, load_tokenizer, pack
from textrl.data.env_record import EnvUnavailableError, dataset_env
from textrl.methods import MethodConfig
from textrl.models import ContextCache, ValueModel, decode, load_tokenizer_from_path, sample_next
from textrl.models.value_model import gather_positions, last_hidden_and_lm
from textrl.tasks import TASK_ENV_IDS, get_task
from textrl.trainer import Trainer, seed_everything


def _in_eval_mode(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run an acting method with the agent's model in eval mode (deterministic: no dropout), restoring
    the mode it had; without a model the method runs as is (and says so)."""

    @functools.wraps(method)
    def run(self: "OfflineAgent", *args: Any, **kwargs: Any) -> Any:
        model = self.model
        if model is None:
            return method(self, *args, **kwargs)
        was_training = model.training
        switch = any(m.training for m in model.modules())  # (switching costs more: not on every call of a loop)
        if switch:
            model.eval()
        try:
            return method(self, *args, **kwargs)
        finally:
            if switch:
                model.train(was_training)

    return run


class OfflineAgent(SavedAgent, ABC):
    """Base class of the offline agents (BC, filtered BC, MC returns, CQL, ILQL).

    `act` and `policy` keep each observation row's KV cache between calls (`textrl.models.ContextCache`),
    so an env loop runs each token through the model once. Set `agent.cache_contexts = False` to run
    every context in full at every call instead; the actions are the same either way (up to float
    rounding, see `act`). After changing the model's weights outside `fit`, call `forget_contexts()`.
    """

    method_cls: ClassVar[type[MethodConfig]]
    agent_name: ClassVar[str]

    def __init__(self, config: Optional[TRLConfig] = None, tokenizer: Any = None) -> None:
        config = config if config is not None else default_config(self.method_cls.name)
        if not isinstance(config, TRLConfig):
            raise TypeError(f"{type(self).__name__} takes a TRLConfig, got {type(config).__name__}")
        if not isinstance(config.method, self.method_cls):
            raise ValueError(
                f"{type(self).__name__} needs a '{self.method_cls.name}' method config, got "
                f"'{config.method.name}': use textrl.default_config('{self.method_cls.name}')"
            )
        self.config = config
        self.tokenizer = tokenizer
        self.model: Optional[ValueModel] = None
        self.env_id: Optional[str] = None  # the env of the data it was fitted on (observations are checked against it)
        self.generator = torch.Generator().manual_seed(config.train.seed)
        self.prompt_prefix: list[int] = []  # the start token of every training episode, put before prompts
        self.cache_contexts = True
        self._contexts: Optional[ContextCache] = None

    # ------------------------------------------------------------------ to override

    @abstractmethod
    def build_model(self, vocab_size: int) -> ValueModel:
        """A fresh model for a vocabulary of `vocab_size` tokens (subclasses choose the heads)."""

    @abstractmethod
    def loss(self, model: ValueModel, batch: TensorDict) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss (a mean over valid actions) and its stats."""

    def next_token_scores(self, hidden: torch.Tensor, logits: torch.Tensor, beta: float) -> torch.Tensor:
        """Scores over the vocabulary from the last hidden state and LM logits (higher = preferred)."""
        return torch.log_softmax(logits.float(), dim=-1)

    def after_optimizer_step(self, model: torch.nn.Module, step: int) -> None:  # noqa: B027 (optional hook)
        """Work after each optimizer step (target sync for Q-learning agents)."""

    def prepare_data(self, packed: PackedDataset) -> PackedDataset:
        """The rows this agent trains on (all of them, unless a subclass filters)."""
        return packed

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        dataset: Any,
        *,
        evaluate_every: Optional[int] = None,
        metric_fn: Optional[Callable[["OfflineAgent"], dict[str, float]]] = None,
        rollout_eval: bool = True,
        **train: Any,
    ) -> list[dict[str, Any]]:
        """Train on a Minari dataset, a dataset id, a path or a packed dataset; return the logged history.

        Every `train.eval_interval` steps the agent is scored by rollouts in the dataset's env
        (`rollout_eval=False` skips them) and by `metric_fn(agent)` (a dict of numbers), if given.

        Keyword arguments override `config.train` fields for this call only (e.g. `total_steps=200`):
        checkpoints written during it record them, `self.config` is as before once it returns.
        """
        if evaluate_every is not None:
            train = {**train, "eval_interval": evaluate_every}
        configured = self.config
        if train:
            self.config = configured.evolve(train=train)
        self.forget_contexts()  # the weights are about to change
        try:
            return self._fit(dataset, metric_fn, rollout_eval)
        finally:
            self.config = configured
            self.forget_contexts()

    def _fit(self, dataset: Any, metric_fn: Optional[Callable[["OfflineAgent"], dict[str, float]]],
             rollout_eval: bool) -> list[dict[str, Any]]:
        """`fit` with `self.config` holding this call's settings."""
        data = None if isinstance(dataset, PackedDataset) else load(dataset)  # resolved once, here
        packed = dataset if data is None else pack(data, reward_normalization=self.config.train.reward_normalization)
        task = _task_or_none(packed.env_id, data)
        self.env_id = packed.env_id if task is not None else None  # the id the env is registered under
        if self.tokenizer is None:
            self.tokenizer = self._resolve_tokenizer(data)
        if len(self.tokenizer) != packed.vocab_size:
            raise ValueError(
                f"the tokenizer has {len(self.tokenizer)} tokens but the dataset's action space has "
                f"{packed.vocab_size}: use the dataset's own tokenizer (tokenizer.tokenizer_path: null)"
            )
        if packed.max_tokens > self.config.train.seq_length:
            raise ValueError(
                f"the dataset's episodes are up to {packed.max_tokens} tokens long but train.seq_length is "
                f"{self.config.train.seq_length}: raise train.seq_length to at least {packed.max_tokens}"
            )
        td = packed.td
        self.prompt_prefix = start_prefix(td["tokens"][td["token_offsets"][:-1][packed.rows]], self.tokenizer)
        if self.model is None:
            seed_everything(self.config.train.seed)  # the same seed gives the same initial weights
            self.model = self.build_model(packed.vocab_size)
        check_positions(self.model, packed.max_tokens, self.config.train.seq_length)
        eval_fn = rollout_eval_fn(self, task if rollout_eval else None, metric_fn)
        trainer = Trainer(self, self.prepare_data(packed), self.config, eval_fn=eval_fn)
        return trainer.train()

    def _resolve_tokenizer(self, dataset: Optional[minari.MinariDataset]) -> Any:
        """The configured tokenizer, or the (already opened) dataset's own when `tokenizer.tokenizer_path` is None."""
        path = self.config.tokenizer.tokenizer_path
        if path is not None:
            return load_tokenizer_from_path(path, self.config.tokenizer)
        if dataset is None:
            raise ValueError("tokenizer.tokenizer_path is null and a packed dataset carries no tokenizer: "
                             "pass tokenizer=... to the agent")
        return load_tokenizer(dataset)

    # ------------------------------------------------------------------ acting

    def _require_model(self) -> torch.nn.Module:
        if self.model is None:
            raise RuntimeError(f"{type(self).__name__} has no model yet: call fit(dataset) or load(directory) first")
        return self.model

    def forget_contexts(self) -> None:
        """Drop the cached contexts of `act` (the next call runs every row in full): needed after the model's
        weights change other than through `fit` or `load`, which drop them themselves."""
        self._contexts = None

    @torch.no_grad()
    @_in_eval_mode
    def act(self, obs: dict[str, np.ndarray], *, beta: Optional[float] = None,
            temperature: Optional[float] = None, env: Any = None) -> Any:
        """The next token for an env observation (an int) or a batch of them (an int64 array).

        `beta` and `temperature` override `gen_kwargs` for this call (temperature 0: greedy). The
        network runs in eval mode (no dropout), whatever mode training left it in. With
        `cache_contexts` (the default) each row keeps its KV cache from the previous call: when the
        row's observation extends the context it was last shown, only the new tokens run; otherwise
        (a reset, another env, any other observation) the row starts over; a row flagged in
        `obs["ignored"]` (what `textrl.rollout` adds: its action goes unused) runs nothing and gets a
        token from the hidden state the cache held for it. The cached and the full
        forward differ only in float rounding (last bits of the scores), so they choose the same
        tokens except where two tokens' scores, or a sample's draw and a cumulative probability,
        lie within that rounding of each other. An observation of another env than the agent's data
        came from (by its width, or by `env`: an env id or env) is refused.
        """
        model = self._require_model()
        if model.seq2seq:
            raise ValueError("a seq2seq agent cannot act on env observations: they do not mark where the prompt "
                             "for its encoder ends. Use generate(prompts), or a causal model for env rollouts")
        if not isinstance(obs, dict) or "input_ids" not in obs or "length" not in obs:
            raise ValueError("act expects an env observation: a dict with 'input_ids' and 'length' arrays")
        ids, length = np.asarray(obs["input_ids"]), np.asarray(obs["length"])
        single = ids.ndim == 1
        if single:
            ids, length = ids[None], length.reshape(1)
        if ids.ndim != 2 or length.shape != (ids.shape[0],):
            raise ValueError(
                f"act expects input_ids of shape [L] or [N, L] and length of shape [] or [N]; got "
                f"{obs['input_ids'].shape} and {np.shape(obs['length'])}"
            )
        if (length < 1).any() or (length > ids.shape[1]).any():
            raise ValueError(f"observation lengths must lie in [1, {ids.shape[1]}], got {length.tolist()}")
        ignored = obs.get("ignored")
        if ignored is not None:
            ignored = np.asarray(ignored).reshape(-1)
            if ignored.dtype != bool or ignored.shape != length.shape:
                raise ValueError(f"obs['ignored'] must be a bool array with one flag per row ({len(length)}), got "
                                 f"{ignored.dtype} {ignored.shape}")
        check_observation_fits(model, ids, length)
        check_env(self.env_id, ids, env)
        gen = self.config.method.gen_kwargs
        beta = gen.beta if beta is None else beta
        if isinstance(beta, list):
            raise ValueError("gen_kwargs.beta is a sweep list: pass act(obs, beta=...) with one value")
        temperature = gen.temperature if temperature is None else temperature
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature < 0:
            raise ValueError(f"temperature must be a number >= 0 (0: greedy), got {temperature!r}")
        hidden = self._last_hidden(model, ids, length, ignored)
        scores = self._used_scores(model, hidden, beta, ignored)
        tokens = sample_next(scores, top_k=gen.top_k, temperature=temperature, generator=self.generator)
        tokens = tokens.cpu().numpy().astype(np.int64)
        return int(tokens[0]) if single else tokens

    def policy(self, obs: dict[str, np.ndarray], rng: Optional[np.random.Generator] = None, *,
               beta: Optional[float] = None, temperature: Optional[float] = None,
               env: Any = None) -> np.ndarray:
        """The agent as a batched policy for `textrl.rollout` (rng is unused: the agent has its own)."""
        return self.act(obs, beta=beta, temperature=temperature, env=env)

    def _used_scores(self, model: ValueModel, hidden: torch.Tensor, beta: float,
                     ignored: Optional[np.ndarray]) -> torch.Tensor:
        """Next-token scores [N, V] of the rows whose action is used; `ignored` rows get zeros (a uniform draw,
        its token unused) without running the LM and value heads. Sampling draws each row's noise from its own
        place in the generator's stream, so the used rows' tokens do not depend on the ignored rows' scores."""
        lm_head = last_hidden_and_lm(model.backbone)[1]
        if ignored is None or not ignored.any():
            return self.next_token_scores(hidden, lm_head(hidden), beta)
        used = torch.as_tensor(np.flatnonzero(~ignored), device=hidden.device)
        part = self.next_token_scores(hidden[used], lm_head(hidden[used]), beta)
        scores = part.new_zeros(len(hidden), part.shape[-1])
        scores[used] = part
        return scores

    def _last_hidden(self, model: ValueModel, ids: np.ndarray, length: np.ndarray,
                     ignored: Optional[np.ndarray] = None) -> torch.Tensor:
        """Last-layer hidden state [N, H] at each row's last token: from the rows' cached contexts, or (with
        `cache_contexts` off) from a full forward of the right-padded observations. The cache runs nothing for
        `ignored` rows it holds (their hidden state is the one it held)."""
        if self.cache_contexts:
            if self._contexts is None or self._contexts.backbone is not model.backbone:
                self._contexts = ContextCache(model.backbone)
            return self._contexts.last_hidden(ids, length, ignored)
        self._contexts = None
        device = next(model.parameters()).device
        width = int(length.max())
        input_ids = torch.as_tensor(ids[:, :width].astype(np.int64), device=device)
        lengths = torch.as_tensor(length.astype(np.int64), device=device)
        attention_mask = (torch.arange(width, device=device)[None] < lengths[:, None]).long()
        return gather_positions(model.hidden_states(input_ids, attention_mask), (lengths - 1)[:, None])[:, 0]

    @torch.no_grad()
    @_in_eval_mode
    def generate(self, prompts: Optional[Sequence[str]], **gen_kwargs: Any) -> list[str]:
        """Continue each prompt (a string) and return the generated text (without the prompt).

        Each prompt gets the start token the training data began with (`prompt_prefix`: the BOS
        that `from_samples` puts before a string sample), so `generate([""])` or `generate(None)`
        writes fresh text as the data's samples were written.

        The network runs in eval mode (no dropout); the tokenizer's own settings are left as they were.
        A row stops at EOS, after `max_new_tokens`, or when its context fills the model's positions;
        no prompts give no texts.
        """
        model = self._require_model()
        prompts = prompt_list(prompts, self.tokenizer)
        if not prompts:
            return []
        settings = self.config.method.gen_kwargs
        if gen_kwargs:
            settings = self.config.evolve(method=dict(gen_kwargs=gen_kwargs)).method.gen_kwargs
        if isinstance(settings.beta, list):
            raise ValueError("gen_kwargs.beta is a sweep list: call generate once per beta")
        tok = self.tokenizer
        enc = left_padded(tok, prompts, self.prompt_prefix)
        max_new_tokens = room_for_new_tokens(model, prompts, enc["attention_mask"], settings.max_new_tokens)
        device = next(model.parameters()).device
        out = decode(
            model.backbone, enc["input_ids"].to(device), enc["attention_mask"].to(device),
            max_new_tokens=max_new_tokens, top_k=settings.top_k, temperature=settings.temperature,
            score_fn=lambda hidden, logits: self.next_token_scores(hidden, logits, settings.beta),
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, generator=self.generator,
        )
        return tok.batch_decode(out, skip_special_tokens=True)


def _task_or_none(env_id: Optional[str], data: Optional[minari.MinariDataset]) -> Any:
    """The task of a dataset's env id: a built-in task, the task of an env registered with gymnasium (a
    `TextEnv` with your reward function, registered from the dataset's record if need be), or None for
    datasets without an env (or one that cannot be made here: a warning says why)."""
    if not env_id:
        return None
    if env_id in TASK_ENV_IDS:
        return get_task(env_id)
    try:
        if data is not None:
            dataset_env(data)
        if env_id not in gymnasium.registry:
            raise EnvUnavailableError(f"the dataset names env {env_id!r}, which is not registered in this process: "
                                      "run the gymnasium.register(...) of that env before fit")
    except EnvUnavailableError as e:
        warnings.warn(f"{e}; fit does not evaluate by rollouts", stacklevel=4)
        return None
    env = gymnasium.make(env_id)
    task = getattr(env.unwrapped, "task", None)
    env.close()
    return task
