"""`textrl demo`: build the RandomWalks dataset, train BC and ILQL on a tiny GPT-2, compare them by rollouts."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Optional

import gymnasium

from agents.bc import BCAgent
from agents.ilql import ILQLAgent
from textrl.data import make_dataset, pack
from textrl.presets import task_config
from textrl.rollout import evaluate
from textrl.tasks import get_task
from textrl.trainer import ResumeWarning

DATASET = "textrl/randomwalks/random-v1"


def run_demo(steps: Optional[int] = None, episodes: int = 500, seed: int = 0, out_dir: str = "textrl_demo") -> dict:
    """Train BC and ILQL on RandomWalks random walks; print normalised scores and a few ILQL episodes."""
    started = time.perf_counter()
    task = get_task("randomwalks")
    print(f"Building or loading {DATASET} ...")
    dataset = make_dataset(DATASET)
    data_score = task.normalized_score(float(pack(dataset).returns.mean()))
    scores = {"dataset (random walks)": data_score}
    agents = {}
    for name, cls in (("BC", BCAgent), ("ILQL", ILQLAgent)):
        train = dict(seed=seed, checkpoint_dir=str(Path(out_dir) / name.lower()), eval_episodes=min(episodes, 256))
        if steps is not None:
            train.update(total_steps=steps, checkpoint_interval=steps, eval_interval=steps)
        print(f"\nTraining {name} on a tiny GPT-2 ...")
        agent = cls(task_config("randomwalks", cls.agent_name, **train))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResumeWarning)
            agent.fit(dataset)
        for w in caught:  # the demo always trains from step 0: say so in its own words, not the trainer's
            if issubclass(w.category, ResumeWarning):
                print(f"{train['checkpoint_dir']} holds an earlier demo run: the demo starts it over (use --out "
                      "for another folder)")
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        scores[name] = evaluate(agent.policy, task, num_episodes=episodes, seed=seed + 1).normalized_score
        agents[name] = agent
    scores["optimal"] = 100.0
    print("\nNormalised score (100 = optimal paths, 0 = uniform random tokens), "
          f"{episodes} evaluation episodes:")
    width = max(len(k) for k in scores)
    for k, v in scores.items():
        print(f"  {k:<{width}}  {v:6.1f}")
    print("\nA few ILQL episodes through env.step (start node, then the agent's path):")
    env = gymnasium.make(task.env_id)
    for i in range(3):
        obs, info = env.reset(seed=seed + i)
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(agents["ILQL"].act(obs))
            done = terminated or truncated
        print(f"  {info['text']:<30} reward {reward:.2f}")
    print(f"\nDone in {time.perf_counter() - started:.0f} s; checkpoints and logs under {out_dir}/")
    return scores
