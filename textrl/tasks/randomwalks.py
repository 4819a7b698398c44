"""RandomWalks, trlx's ILQL example: the graph, its dynamics, policies and exact references."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np

from textrl.tasks.base import EOS, PAD, Task, Transition

GOAL = 0


def random_graph(n_nodes: int = 21, p_edge: float = 0.1, seed: int = 1000) -> np.ndarray:
    """trlx's graph: `rand > 1 - p`, no self-loops, resampled until every node has an out-edge; node 0 absorbing."""
    rng = np.random.RandomState(seed)
    while True:
        adj = rng.rand(n_nodes, n_nodes) > (1 - p_edge)
        np.fill_diagonal(adj, False)
        if adj.any(axis=1).all():
            break
    adj[GOAL, :] = False
    adj[GOAL, GOAL] = True
    return adj


def distances_to_goal(adj: np.ndarray) -> np.ndarray:
    """Edges on a shortest path from each node to the goal (BFS on reversed edges); -1 if unreachable."""
    dist = np.full(len(adj), -1)
    dist[GOAL] = 0
    queue = deque([GOAL])
    while queue:
        v = queue.popleft()
        for u in np.flatnonzero(adj[:, v]):
            if dist[u] < 0:
                dist[u] = dist[v] + 1
                queue.append(u)
    return dist


class RandomWalksTask(Task):
    """Reach node 0 of a random directed graph in as few nodes as possible.

    ## Description
    A graph of `n_nodes` nodes with edge probability `p_edge`, drawn as trlx draws it (`random_graph`);
    node 0, the goal, is absorbing. The prompt is a start node and each action names the next node,
    so the context is the path so far.

    ## Action Space
    `Discrete(n_nodes + 2)` (23 with the defaults): token 0 `<pad>`, 1 `<eos>`, 2 + v the node v.

    ## Observation Space
    `Dict(input_ids=Box(0, 22, (10,), uint8), length=Box(0, 10, (), int32))` with the defaults: the
    path's node tokens, right-padded to `max_nodes`.

    ## Rewards
    0 on every step but the last. Arriving at node 0 gives the path's optimality
    (max_nodes - L) / (max_nodes - L_opt) in (0, 1], where L counts the path's nodes up to and
    including node 0 and L_opt is the fewest possible from the start; any other end scores 0
    (as L = max_nodes).

    ## Starting State
    A start node drawn uniformly among the nodes other than 0 that reach it in fewer than
    `max_nodes` nodes (with the defaults every node 1..20, as in trlx). A prompt given in reset
    options may be any node but 0; one that cannot beat `max_nodes` scores 0 (the denominator is
    kept >= 1). A graph where no start qualifies is rejected when the task is built.

    ## Episode End
    Every end is a termination (`terminated=True`, `truncated=False`):
    1. arrival at node 0;
    2. a token that is not an edge from the current node (a non-edge, `<eos>`, `<pad>`);
    3. the path reaching `max_nodes` nodes without arriving. The limit is part of the task: such a
       path is scored 0 and the context length shows how much budget is left, so there is no
       future to bootstrap from.

    ## Arguments
    `n_nodes=21`, `p_edge=0.1`, `max_nodes=10`, `graph_seed=1000`; also through
    `gymnasium.make("textrl/RandomWalks-v1", max_nodes=8)`.

    ## Reference scores
    Exact, by dynamic programming over (node, path length), with the defaults: `ref_max_score`
    1.0 (the optimal policy); `ref_min_score` 0.005000454285300288 (uniform over the 23 tokens);
    `random_walk_return` 0.3462256995104408 (trlx's behaviour data, uniform steps along edges: the
    `random` tier).

    ## Version History
    - v1: a path that reaches `max_nodes` nodes ends with `terminated=True` (datasets -v1).
    - v0 (refused): that path ended with `truncated=True`, so learners bootstrapped there (datasets -v0).
    """

    name = "randomwalks"
    env_id = "textrl/RandomWalks-v1"
    retired_env_ids = {"textrl/RandomWalks-v0": "a path reaching the max_nodes limit ended with truncated=True; "
                                                 "since v1 it is a termination (the limit is scored)"}

    def __init__(self, n_nodes: int = 21, p_edge: float = 0.1, max_nodes: int = 10, graph_seed: int = 1000) -> None:
        if n_nodes < 2 or max_nodes < 2 or not 0 < p_edge <= 1:
            raise ValueError("RandomWalks needs n_nodes >= 2, max_nodes >= 2 and 0 < p_edge <= 1")
        self.n_nodes, self.p_edge, self.max_nodes, self.graph_seed = n_nodes, p_edge, max_nodes, graph_seed
        self.adj = random_graph(n_nodes, p_edge, graph_seed)
        self.dist = distances_to_goal(self.adj)
        # Nodes of the path on an optimal route (start included); starts where no path of at most
        # max_nodes nodes reaches the goal have no optimum to measure against and are not sampled.
        self.best_nodes = np.where(self.dist >= 0, self.dist + 1, max_nodes)
        self.starts = np.array([v for v in range(1, n_nodes) if 0 <= self.dist[v] and self.best_nodes[v] < max_nodes])
        if len(self.starts) == 0:
            raise ValueError(f"graph seed {graph_seed}: no start node reaches node 0 within {max_nodes} nodes")
        self.max_length = max_nodes
        self.ref_max_score = 1.0
        self.ref_min_score = float(self.expected_return(self._uniform_vocab))

    @cached_property
    def vocab(self) -> list[str]:
        return [PAD, EOS, *(str(v) for v in range(self.n_nodes))]

    def node_token(self, node: Any) -> Any:
        return np.asarray(node) + 2

    # ------------------------------------------------------------------ dynamics

    def sample_prompt(self, rng: np.random.Generator) -> list[int]:
        return [int(self.node_token(self.starts[rng.integers(len(self.starts))]))]  # rng.choice's draw, cheaper

    def check_prompt(self, prompt: list[int]) -> None:
        if len(prompt) != 1 or not 2 <= prompt[0] < 2 + self.n_nodes or prompt[0] == self.node_token(GOAL):
            raise ValueError(f"a RandomWalks prompt is one start node other than {GOAL} (tokens 1..{self.n_nodes - 1}), "
                             f"got {self.decode(prompt)!r}")

    def initial_state(self, prompts: list[list[int]], rngs: list[np.random.Generator]) -> dict[str, np.ndarray]:
        start = np.array([p[0] - 2 for p in prompts])
        return {"node": start, "start": start, "nodes": np.ones(len(prompts), dtype=np.int64)}

    def optimality(self, start: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        """(max - L) / (max - L_opt), with the denominator kept >= 1 for starts that cannot do better."""
        return (self.max_nodes - nodes) / np.maximum(self.max_nodes - self.best_nodes[start], 1)

    def transition(self, state: dict[str, np.ndarray], actions: np.ndarray, active: np.ndarray) -> Transition:
        n = len(actions)
        node, start, nodes = state["node"], state["start"], state["nodes"]
        target = actions - 2
        is_node = (target >= 0) & (target < self.n_nodes)
        valid = active & is_node & self.adj[node, np.where(is_node, target, 0)]
        arrived = valid & (target == GOAL)
        moved = valid & ~arrived
        nodes[valid] += 1
        node[valid] = target[valid]
        reward = np.where(arrived, self.optimality(start, nodes), 0.0)
        # invalid edge, EOS/pad, arrival, or the node limit (part of the task: scored 0, so a termination)
        terminated = active & (~valid | arrived) | moved & (nodes >= self.max_nodes)
        return Transition(np.full((n, 0), -1), reward, terminated, np.zeros(n, dtype=bool))

    # ------------------------------------------------------------------ policies

    def _current(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        ids = np.asarray(obs["input_ids"], dtype=np.int64)
        return ids[np.arange(len(ids)), np.asarray(obs["length"]) - 1] - 2

    def optimal_policy(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """Step to the lowest-numbered neighbour one edge closer to node 0."""
        return self.node_token(self._next_best[np.clip(self._current(obs), 0, self.n_nodes - 1)])

    @cached_property
    def _next_best(self) -> np.ndarray:
        nxt = np.zeros(self.n_nodes, dtype=np.int64)
        for v in range(self.n_nodes):
            closer = [u for u in np.flatnonzero(self.adj[v]) if self.dist[v] > 0 and self.dist[u] == self.dist[v] - 1]
            nxt[v] = closer[0] if closer else np.flatnonzero(self.adj[v])[0]
        return nxt

    def exploration_policy(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """trlx's behaviour data: a uniform step along an existing edge."""
        cur = np.clip(self._current(obs), 0, self.n_nodes - 1)
        degree = self.adj[cur].sum(1)
        pick = (rng.random(len(cur)) * degree).astype(np.int64)
        order = np.cumsum(self.adj[cur], axis=1) - 1
        return self.node_token((order == pick[:, None]).argmax(1))

    # ------------------------------------------------------------------ exact references

    def _uniform_vocab(self, node: int) -> np.ndarray:
        return np.full(self.vocab_size, 1.0 / self.vocab_size)

    def _uniform_edge(self, node: int) -> np.ndarray:
        p = np.zeros(self.vocab_size)
        p[self.node_token(np.flatnonzero(self.adj[node]))] = 1.0 / self.adj[node].sum()
        return p

    def expected_return(self, action_probs: Callable[[int], np.ndarray]) -> float:
        """Exact mean return over the start distribution of a Markov policy given as node -> token probabilities."""
        total = 0.0
        for start in self.starts:
            # value[v] with `nodes` path nodes so far, computed backwards from nodes = max_nodes - 1.
            value = np.zeros(self.n_nodes)
            for nodes in range(self.max_nodes - 1, 0, -1):
                new = np.zeros(self.n_nodes)
                for v in range(self.n_nodes):
                    p = action_probs(v)
                    for u in np.flatnonzero(self.adj[v]):
                        q = p[self.node_token(u)]
                        if u == GOAL:
                            new[v] += q * self.optimality(np.array([start]), np.array([nodes + 1]))[0]
                        elif nodes + 1 < self.max_nodes:
                            new[v] += q * value[u]
                value = new
            total += value[start]
        return total / len(self.starts)

    @cached_property
    def random_walk_return(self) -> float:
        """Exact mean optimality of trlx's behaviour data (uniform random walks along edges)."""
        return float(self.expected_return(self._uniform_edge))
