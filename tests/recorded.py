"""Test helper: one episode of a (possibly wrapped) single env recorded as a textrl `Episode`."""

from collections.abc import Callable

import gymnasium
import numpy as np

from textrl.rollout import Episode


def record_episode(env: gymnasium.Env, seed: int, choose: Callable[[], int]) -> Episode:
    """Step `env` with `choose()` actions from `reset(seed=seed)` until it terminates or truncates."""
    obs, info = env.reset(seed=seed)
    observations, actions, rewards, terms, truncs = [obs], [], [], [], []
    done = False
    while not done:
        action = choose()
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        terms.append(terminated)
        truncs.append(truncated)
        done = terminated or truncated
    stacked = {k: np.stack([o[k] for o in observations]) for k in observations[0]}
    return Episode(stacked, np.array(actions), np.array(rewards), np.array(terms), np.array(truncs),
                   info["prompt"], info["text"])
