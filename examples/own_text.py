"""Your own text, end to end: templated product reviews, a reward function, a tokenizer trained here,
BC and ILQL on a tiny GPT-2, ILQL's acting beta swept on fresh rollouts scored by the reward function.

    python examples/own_text.py              # the README's numbers (10 to 12 minutes on 2 busy CPU cores)
    python examples/own_text.py --steps 60   # a quick look

Prints the data's mean reward, then BC's and ILQL's mean reward per acting beta under three sets of
training values (each spelled out below, whatever `text_config` holds): the task benchmark's (returns
as stored, lr 1e-3 constant, tau 0.8, alpha 0.1, top_k 0), trlx's (`default_config("ilql")`: z-scored
returns, lr 5e-5, tau 0.7, alpha 0.001, top_k 20), and trlx's with the task benchmark's optimizer
(lr 1e-3 constant). Beside each mean reward: how many of the fresh reviews are well formed (exactly
one of the templated reviews the data holds) and how many are distinct. A high reward with few well-formed reviews is the reward function's
shortcut (its keywords in broken text); few distinct ones are a collapse onto one sentence.
"""

from __future__ import annotations

import argparse
import time

import gymnasium
import numpy as np
import torch
from review_scenario import (  # examples/ is the script's folder
    WELL_FORMED,
    review_reward,
    reviews,
    train_tokenizer,
)

import textrl
from agents import BCAgent, ILQLAgent
from textrl import from_samples, text_config


def sampled(agent: object, beta: float | None, n: int) -> tuple[int, int]:
    """(well-formed, distinct) reviews among `n` fresh samples of the agent."""
    texts = agent.generate([""] * n, **({} if beta is None else {"beta": beta}))
    return sum(t.strip() in WELL_FORMED for t in texts), len(set(texts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per agent")
    parser.add_argument("--samples", type=int, default=2000, help="reviews in the dataset")
    parser.add_argument("--episodes", type=int, default=32, help="rollouts per evaluation (and fresh samples per row)")
    parser.add_argument("--out", default="runs/own_text", help="checkpoints and logs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    texts = reviews(args.samples, seed=0)
    rewards = [review_reward("", t) for t in texts]
    tokenizer = train_tokenizer(texts)
    longest = max(len(tokenizer(t)["input_ids"]) for t in texts) + 2  # BOS and EOS
    # The env: fresh reviews (prompt "") written after BOS, scored by the reward function.
    gymnasium.register("reviews/Review-v0", entry_point="textrl:TextEnv",
                       kwargs=dict(tokenizer=tokenizer, prompts=[""], reward_fn=review_reward,
                                   max_new_tokens=longest, ref_scores=(-1.0, 1.0)))
    gymnasium.register_envs(textrl)
    dataset = from_samples(texts, rewards, tokenizer, "reviews/templated-v0", env="reviews/Review-v0",
                           overwrite=True, progress=False)
    print(f"{len(texts)} reviews, {len(tokenizer)} tokens in the vocabulary, episodes up to {longest} tokens; "
          f"data mean reward {np.mean(rewards):+.2f}")

    betas = [0.0, 1.0, 4.0, 16.0, 100.0]
    train = dict(total_steps=args.steps, eval_interval=args.steps, checkpoint_interval=args.steps,
                 eval_episodes=args.episodes, progress_bar=False)
    fast = dict(optimizer=dict(kwargs=dict(lr=1e-3, weight_decay=0.0)), scheduler=dict(name="constant", kwargs={}))
    trlx = dict(optimizer=dict(kwargs=dict(lr=5e-5, weight_decay=1e-6)),
                scheduler=dict(name="cosine_annealing", kwargs=dict(T_max=1e12, eta_min=5e-5)))
    values = {  # name -> (train, optimizer and scheduler, method): every value that differs between them
        "task-benchmark values": (dict(reward_normalization="none"), fast, dict(tau=0.8, alpha=0.1, top_k=0)),
        "trlx values": (dict(reward_normalization="zscore"), trlx, dict(tau=0.7, alpha=0.001, top_k=20)),
        "trlx values, lr 1e-3": (dict(reward_normalization="zscore"), fast, dict(tau=0.7, alpha=0.001, top_k=20)),
    }
    base = text_config("ilql", tokenizer, longest, best_metric="eval/return@beta=4", **train)
    runs = {"BC, lr 1e-3": BCAgent(text_config("bc", tokenizer, longest, checkpoint_dir=f"{args.out}/bc", **train)
                                   .evolve(method=dict(gen_kwargs=dict(top_k=0)), **fast))}
    for k, (name, (changes, optimizer, method)) in enumerate(values.items()):
        top_k = method.pop("top_k")
        runs[f"ILQL, {name}"] = ILQLAgent(base.evolve(
            train=dict(checkpoint_dir=f"{args.out}/ilql{k}", **changes), **optimizer,
            method=dict(**method, gen_kwargs=dict(beta=betas, top_k=top_k))))
    rows = []
    for name, agent in runs.items():
        history = agent.fit(dataset)
        final = [h for h in history if "eval/episodes" in h][-1]
        if "eval/return" in final:
            rows.append((name, "-", final["eval/return"], *sampled(agent, None, args.episodes)))
        for b in betas if "eval/return" not in final else []:
            rows.append((name, f"{b:g}", final[f"eval/return@beta={b:g}"], *sampled(agent, b, args.episodes)))
        print(f"{name}: done at {time.perf_counter() - started:.0f} s", flush=True)

    print(f"\nMean reward of {args.episodes} fresh reviews after {args.steps} steps (data: {np.mean(rewards):+.2f}; "
          "best possible +1.00):\n")
    n = args.episodes
    print(f"| agent | acting beta | mean reward | well-formed reviews in {n} | distinct reviews in {n} |\n"
          "| --- | --- | ---: | ---: | ---: |")
    for name, beta, value, good, different in rows:
        print(f"| {name} | {beta} | {value:+.2f} | {good} | {different} |")
    for name, agent in runs.items():
        kwargs = {"beta": 16.0} if name.startswith("ILQL") else {}
        print(f"\nThree reviews of {name}{' at beta 16' if kwargs else ''}:", *agent.generate([""] * 3, **kwargs),
              sep="\n  ")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
