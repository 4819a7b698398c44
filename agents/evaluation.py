"""How an agent is evaluated while it trains: rollouts of its policy through the task's vector env."""

from __future__ import annotations

import functools
import warnings
from typing import Any, Optional

import numpy as np

from textrl.rollout import evaluate
from textrl.trainer import EvalFn


def rollout_eval_fn(agent: Any, task: Any, metric_fn: Any) -> Optional[EvalFn]:
    """The trainer's `eval_fn` of an agent: rollouts through the task's vector env (per-episode return and
    normalised score), plus `metric_fn(agent)`; None when there is neither.

    With a list in `gen_kwargs.beta` every beta is evaluated on the same episodes and the
    keys get a suffix: `score@beta=4`, `return@beta=4`.
    """
    if task is not None and agent._require_model().seq2seq:
        warnings.warn("a seq2seq agent is not evaluated by env rollouts (observations do not mark where the "
                      "prompt for its encoder ends): pass metric_fn to fit to evaluate it", stacklevel=3)
        task = None
    if task is None and metric_fn is None:
        return None
    beta = agent.config.method.gen_kwargs.beta
    betas = beta if isinstance(beta, list) else [None]  # None: act with the configured beta, no suffix

    def run(num_episodes: int, seed: int) -> dict[str, np.ndarray]:
        agent.forget_contexts()  # contexts cached at the previous evaluation ran through older weights
        out: dict[str, np.ndarray] = {}
        for b in betas if task is not None else []:
            suffix = "" if b is None else f"@beta={b:g}"
            result = evaluate(functools.partial(agent.policy, beta=b), task, num_episodes=num_episodes, seed=seed)
            returns = np.asarray(result.returns, dtype=np.float64)
            out["return" + suffix] = returns
            out["score" + suffix] = task.normalized_score(returns)
        if metric_fn is not None:
            out.update({k: np.asarray(v, dtype=np.float64) for k, v in metric_fn(agent).items()})
        return out

    return run
