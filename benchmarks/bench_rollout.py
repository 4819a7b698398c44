"""Env rollouts through `agent.policy` against `generate`'s token rate, with and without the context cache.

(1) Per task, the ILQL agent of the task preset (`task_config(task, "ilql")`, trained `--train-steps`
    steps on the mixed tier so its episodes look like a benchmark run's, then in eval mode as a run's
    evaluation has it): `textrl.rollout.evaluate(agent.policy, ...)` with `cache_contexts` on and off,
    timed over the whole loop (env construction, reset and steps included), against `decode` (what
    `agent.generate` runs: KV cache, the agent's scores) on the same model and batch from the
    prompts the rollout's rows started from (its first observation: one row per env, a task's
    evaluation starts included; prompt prefill included in its time). Token rates:
    - "agent tokens": the actions the env used (the tokens the agent chose that went into the
      episodes; not the ignored actions of autoreset steps, nor of rows past their share);
    - "chosen": every token the policy returned (calls x envs, used or not);
    - "model tokens": tokens run through the model, the env's appended ones (Wordle's feedback, a
      maze's observation, a chess reply) and the prompts included; each runs once with the cache.
    Yardsticks: generate of the mean episode length (rounded up) for every row ("gen, mean"), and
    generate of each env row's own length in its row ("gen, lengths": a row's length is the actions of
    the episodes its env played; the batch runs for the longest row, as `generate` does for rows that
    stop at different steps, and counts each row's tokens up to its length). For model
    tokens: generate for every row of as many tokens as the rollout ran per episode, counting what
    each side runs through the model (generate: the prompt and every new token but the last, which is
    never fed back; the rollout: the same, an episode's last action is not run either) ("gen model").
    And the combined yardstick, model tokens at each row's own lengths ("gen model, own lengths"):
    each env row r of the rollout ran m_r tokens through the model (its prompt, every action fed
    back, the env's appended tokens, over all the episodes its env played; `ContextCache.fed_rows`);
    generate's row r starts from its prompt of p_r tokens and makes m_r - p_r + 1 new tokens, so it
    too runs m_r tokens through the model, and the batch runs for the longest row, counting each row
    up to its own length. Both sides then do the same work in the same ragged shape. (A row whose env
    played several episodes, as 19 of the maze's 256 do, may hold more than the model's positions:
    its generate row stops there and counts the tokens it ran.) "Env setup apart": the agent-token rate with the env's
    construction and reset (timed alone) left out. The two rollouts' returns must be equal.
(2) The same at GPT-2-small shape (12x768, the task's vocabulary, untrained) on `--small-tasks`.
(3) With `--ignored-ab`: the cached rollout with the policy shown `obs["ignored"]` (the rows whose
    action goes unused, which the cache skips) and without it: seconds, model tokens, returns.
(4) The benchmark's evaluation (`agents.protocol.scoring_fn`: every ILQL beta on the validation
    episodes, then the test episodes) of the agents of (1), seconds with the cache off and on.
Timings alternate between the sides and report medians over `--repeats` (a shared machine spreads
by about 20%).

    python benchmarks/bench_rollout.py [--tasks wordle ...] [--num-envs 256] [--episodes 256] [--repeats 3]
                                       [--train-steps 40] [--untrained endgames] [--speed-tasks ...] [--small-tasks wordle] [--small-envs 32] [--small-uncached] [--threads 1]
                                       [--no-preset-speed]
                                       [--ignored-ab maze ...] [--no-protocol] [--protocol-tasks ...]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from agents import ILQLAgent
from agents.benchmark import dataset_id
from agents.protocol import ILQL_BETAS, scoring_fn
from textrl import TokenVectorEnv, make_dataset, task_config
from textrl.models import decode
from textrl.models.value_model import transformers_model
from textrl.presets import tiny_model_config
from textrl.rollout import evaluate
from textrl.tasks import TASKS, Task, get_task

DEFAULT_TASKS = [name for name in TASKS if name != "endgames_stockfish"]
BETA = 4.0
"""The acting beta of the rollouts and generation (any value: it changes the scores, not the work)."""


def trained_agent(task: Task, steps: int) -> ILQLAgent:
    """The task preset's ILQL agent, trained `steps` steps on 1000 mixed-tier episodes (untrained with 0)."""
    config = task_config(task.name, "ilql", progress_bar=False, total_steps=max(steps, 1), eval_interval=10**9,
                         checkpoint_interval=10**9, checkpoint_dir=tempfile.mkdtemp(prefix=f"bench_rollout_{task.name}_"), save_best=False)
    agent = ILQLAgent(config)
    if steps:
        agent.fit(make_dataset(dataset_id(task.name, "mixed"), num_episodes=1000, progress=False), rollout_eval=False)
    else:
        agent.tokenizer = task.tokenizer
        agent.model = agent.build_model(task.vocab_size)
    agent.model.eval()  # as the trainer's evaluation has it (acting on a training-mode model switches per call)
    return agent


def small_agent(task: Task) -> ILQLAgent:
    """An untrained ILQL agent on a GPT-2-small-shaped model (12 layers, 768 wide) at the task's vocabulary."""
    tok = task.tokenizer
    model = tiny_model_config(task.vocab_size, task.max_length, tok.pad_token_id, tok.eos_token_id,
                              n_layer=12, n_embd=768, n_head=12)
    agent = ILQLAgent(task_config(task.name, "ilql").evolve(model=dict(model_path=model)))
    torch.manual_seed(0)
    agent.tokenizer, agent.model = tok, agent.build_model(task.vocab_size)
    return agent


def rollout(agent: ILQLAgent, task: Task, episodes: int, num_envs: int, cache: bool,
            flags: bool = True) -> tuple[float, Any, int, dict[str, np.ndarray]]:
    """Seconds of `evaluate(agent.policy)`, its result, the number of policy calls and the first observation (the
    rows' first prompts), with the cache on or off; without `flags` the policy is not shown `obs["ignored"]` (as
    before the rollout flagged those rows)."""
    agent.cache_contexts = cache
    agent.forget_contexts()
    agent.generator.manual_seed(0)
    calls: list[dict[str, np.ndarray]] = []

    def policy(obs: dict[str, np.ndarray], rng: Any) -> np.ndarray:
        calls.append(obs if not calls else {})
        return agent.policy(obs if flags else {k: obs[k] for k in ("input_ids", "length")}, rng, beta=BETA)

    start = time.perf_counter()
    result = evaluate(policy, task, episodes, seed=0, num_envs=num_envs)
    return time.perf_counter() - start, result, len(calls), calls[0]


def env_setup(task: Task, num_envs: int) -> float:
    """Seconds to build the vector env and reset it (one seeded rng per env): what `evaluate` pays before its
    first step, and `decode`'s prompts do not."""
    start = time.perf_counter()
    TokenVectorEnv(task, num_envs).reset(seed=0)
    return time.perf_counter() - start


def left_padded(task: Task, obs: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """The rollout's first prompts (its first observation: what each env row started from, a task's evaluation
    starts included), left-padded as `generate` takes them: ids and attention mask [N, width]."""
    ids, length = obs["input_ids"].astype(np.int64), obs["length"].astype(np.int64)
    num_envs = len(length)
    width = int(length.max())
    left = np.full((num_envs, width), task.pad_id, dtype=np.int64)
    for r in range(num_envs):
        left[r, width - length[r]:] = ids[r, :length[r]]
    return torch.as_tensor(left), torch.as_tensor(np.arange(width)[None] >= width - length[:, None]).long()


def generation(agent: ILQLAgent, task: Task, prompts: tuple[torch.Tensor, torch.Tensor], new_tokens: int) -> float:
    """Seconds of `decode` (generate's loop) of `new_tokens` per row from `prompts` (ids, mask), no early stop."""
    ids, mask = prompts
    gen = agent.config.method.gen_kwargs
    agent.generator.manual_seed(0)
    model = agent.model.eval()
    start = time.perf_counter()
    decode(model.backbone, ids, mask, max_new_tokens=new_tokens, top_k=gen.top_k,
           temperature=gen.temperature, score_fn=lambda h, lg: agent.next_token_scores(h, lg, BETA),
           eos_token_id=None, pad_token_id=task.pad_id, generator=agent.generator)
    return time.perf_counter() - start


def paired(repeats: int, sides: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Median seconds of each side, the sides alternating within each repeat."""
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(repeats):
        for k, fn in sides.items():
            times[k].append(fn())
    return {k: statistics.median(v) for k, v in times.items()}


def speed_row(label: str, agent: ILQLAgent, task: Task, episodes: int, num_envs: int, repeats: int,
              uncached: bool = True) -> str:
    """One table row (see the module's docstring for the rates and yardsticks)."""
    _, on, calls, first = rollout(agent, task, episodes, num_envs, True)
    start = left_padded(task, first)
    used, chosen, fed = int(on.lengths.sum()), calls * num_envs, agent._contexts.fed_tokens
    fed_rows = agent._contexts.fed_rows.copy()  # model tokens per env row
    rows = len(on.lengths)
    mean_new = max(1, math.ceil(on.lengths.mean()))
    quota = np.full(num_envs, rows // num_envs) + (np.arange(num_envs) < rows % num_envs)  # evaluate's shares
    longest = int(np.add.reduceat(on.lengths, np.concatenate([[0], np.cumsum(quota)[:-1]])).max())
    prompts = start[1].sum(1).numpy()  # the generate side's prompt tokens per row
    prompt = int(prompts.sum())
    # each generate row runs as many model tokens as its env row did (prompt + new tokens - 1)
    # (one env row per generate row: episodes >= envs here); a row never runs past the model's positions
    room = transformers_model(agent.model.backbone).config.max_position_embeddings - int(prompts.max())
    row_new = np.clip(fed_rows - prompts + 1, 1, room)
    longest_model = int(row_new.max())
    gen_rows_model = int((prompts + row_new - 1).sum())
    # generate of n tokens runs the prompt and n - 1 of them (the last is never fed back), as an episode's last
    # action is not: n matches the rollout's model tokens per episode
    model_new = max(1, round(fed / rows - prompt / num_envs) + 1)
    sides = {"gen mean": lambda: generation(agent, task, start, mean_new),
             "gen longest": lambda: generation(agent, task, start, longest),
             "gen model": lambda: generation(agent, task, start, model_new),
             "gen model lengths": lambda: generation(agent, task, start, longest_model),
             "on": lambda: rollout(agent, task, episodes, num_envs, True)[0],
             "setup": lambda: env_setup(task, num_envs)}
    if uncached:
        sides["off"] = lambda: rollout(agent, task, episodes, num_envs, False)[0]
    t = paired(repeats, sides)
    t.setdefault("off", float("nan"))
    same = "-"
    if uncached:
        _, off, _, _ = rollout(agent, task, episodes, num_envs, False)
        same = "yes" if np.array_equal(off.returns, on.returns) and np.array_equal(off.lengths, on.lengths) else "NO"
    gen_mean = num_envs * mean_new / t["gen mean"]
    gen_lengths = used / t["gen longest"]
    gen_model = (prompt + num_envs * (model_new - 1)) / t["gen model"]
    gen_model_lengths = gen_rows_model / t["gen model lengths"]
    agent_rate = used / t["on"]
    return (f"| {label} | {num_envs} | {rows} | {mean_new} / {longest} | {gen_mean:,.0f} | {gen_lengths:,.0f} | "
            f"{agent_rate:,.0f} | **{agent_rate / gen_mean:.2f}** | **{agent_rate / gen_lengths:.2f}** | "
            f"{used / (t['on'] - t['setup']) / gen_mean:.2f} | {chosen / t['on'] / gen_mean:.2f} | "
            f"{fed / used:.2f} | {gen_model:,.0f} | **{fed / t['on'] / gen_model:.2f}** | "
            f"{longest_model} | {gen_model_lengths:,.0f} | **{fed / t['on'] / gen_model_lengths:.2f}** | "
            f"{used / t['off']:,.0f} | {t['off'] / t['on']:.1f}x | {same} |")


def ignored_row(agent: ILQLAgent, task: Task, episodes: int, num_envs: int, repeats: int) -> str:
    """Seconds of the cached rollout with the policy shown `obs["ignored"]` and without, and the model tokens run."""
    fed, results = {}, {}

    def timed(flags: bool) -> float:
        seconds, results[flags], _, _ = rollout(agent, task, episodes, num_envs, True, flags)
        fed[flags] = agent._contexts.fed_tokens
        return seconds

    t = paired(repeats, {"without": lambda: timed(False), "with": lambda: timed(True)})
    same = "yes" if np.array_equal(results[True].returns, results[False].returns) else "NO"
    return (f"| {task.name} | {t['without']:.2f} | {t['with']:.2f} | **{t['without'] / t['with']:.2f}x** | "
            f"{fed[False]:,} | {fed[True]:,} | {same} |")


def protocol_row(agent: ILQLAgent, task: Task, repeats: int) -> str:
    """Seconds of one benchmark evaluation (every ILQL beta on validation, then test) with the cache off and on."""
    score = scoring_fn(task.name, ILQL_BETAS)

    def timed(cache: bool) -> float:
        agent.cache_contexts = cache
        agent.forget_contexts()
        agent.generator.manual_seed(0)
        start = time.perf_counter()
        score(agent)
        return time.perf_counter() - start

    t = paired(repeats, {"off": lambda: timed(False), "on": lambda: timed(True)})
    return f"| {task.name} | {t['off']:.2f} | {t['on']:.2f} | **{t['off'] / t['on']:.1f}x** |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS)
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--episodes", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument("--untrained", nargs="*", default=[],
                        help="tasks whose agent keeps its fresh preset weights (Endgames' training is slow on a CPU)")
    parser.add_argument("--speed-tasks", nargs="*", default=None, help="table 1's tasks (default: --tasks)")
    parser.add_argument("--small-tasks", nargs="*", default=["wordle"])
    parser.add_argument("--small-envs", type=int, default=32)
    parser.add_argument("--small-uncached", action="store_true",
                        help="time the uncached rollouts at GPT-2-small shape too (slow on a CPU)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared machine more threads mostly wait for each other)")
    parser.add_argument("--no-preset-speed", action="store_true", help="skip table 1 (its agents still train)")
    parser.add_argument("--no-protocol", action="store_true", help="skip the benchmark evaluation timing (table 3)")
    parser.add_argument("--ignored-ab", nargs="*", default=[],
                        help="tasks (of --tasks) on which to time the cached rollout with and without obs['ignored']")
    parser.add_argument("--protocol-tasks", nargs="*", default=None, help="table 3's tasks (default: --tasks)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    head = ("| model | envs | episodes | gen tokens per row: mean / longest | gen tok/s, mean | gen tok/s, lengths | "
            "agent tok/s, cached | / gen, mean | / gen, lengths | / gen mean, env setup apart | chosen tok/s / gen, mean | "
            "model tokens per agent token | gen model tok/s | model tok/s / gen model tok/s | "
            "gen model tokens, longest row | gen model tok/s, own lengths | model tok/s / gen, own lengths | "
            "agent tok/s, uncached | cached / uncached | same returns |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
            "| ---: | ---: | ---: | ---: | ---: | --- |")
    if not args.no_preset_speed or args.small_tasks:
        print(head)
    agents = {}
    for name in args.tasks:
        task = get_task(name)
        agents[name] = trained_agent(task, 0 if name in args.untrained else args.train_steps)
        if not args.no_preset_speed and (args.speed_tasks is None or name in args.speed_tasks):
            print(speed_row(f"{name} preset", agents[name], task, args.episodes, args.num_envs, args.repeats), flush=True)
    for name in args.small_tasks:
        task = get_task(name)
        print(speed_row(f"{name}, GPT-2-small shape", small_agent(task), task, args.small_envs * 2, args.small_envs,
                        args.repeats, uncached=args.small_uncached), flush=True)
    if args.ignored_ab:
        print("\n| task | cached rollout s, flags stripped | with flags | saving | model tokens, stripped | with flags "
              "| same returns |\n| --- | ---: | ---: | ---: | ---: | ---: | --- |")
        for name in args.ignored_ab:
            print(ignored_row(agents[name], get_task(name), args.episodes, args.num_envs, args.repeats), flush=True)
    if not args.no_protocol:
        print("\n| task | evaluation s, uncached | evaluation s, cached | saving |\n| --- | ---: | ---: | ---: |")
        for name in args.tasks if args.protocol_tasks is None else args.protocol_tasks:
            print(protocol_row(agents[name], get_task(name), args.repeats), flush=True)


if __name__ == "__main__":
    main()
