"""benchmarks/exact_randomwalks.py: a model's exact RandomWalks score, checked against the task's own references."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from textrl.tasks import get_task


class MarkovModel(torch.nn.Module):
    """A stand-in for a ValueModel whose backbone's next-token logits depend on the current node only."""

    def __init__(self, logits_by_node: np.ndarray) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.as_tensor(logits_by_node, dtype=torch.float32), requires_grad=False)
        self.backbone = self._backbone

    def _backbone(self, input_ids: torch.Tensor) -> SimpleNamespace:
        nodes = (input_ids - 2).clamp(min=0)
        return SimpleNamespace(logits=self.table[nodes])


def test_uniform_steps_along_edges_score_the_random_walk_reference_and_the_best_steps_score_100(
        benchmark_script) -> None:
    exact = benchmark_script("exact_randomwalks")
    task = get_task("randomwalks")
    logits = np.full((task.n_nodes, task.vocab_size), -np.inf)
    logits[:, 2:] = np.where(task.adj, 0.0, -np.inf)
    # Sampling uniformly among the edges is trlx's behaviour policy, whose exact return the task computes by DP.
    assert exact.exact_score(MarkovModel(logits), 1.0) == pytest.approx(
        task.normalized_score(task.random_walk_return), abs=1e-9)

    best = np.zeros((task.n_nodes, task.vocab_size))
    for v in range(1, task.n_nodes):  # one edge to a node one step closer to node 0
        closer = [u for u in np.flatnonzero(task.adj[v]) if task.dist[v] > 0 and task.dist[u] == task.dist[v] - 1]
        best[v, task.node_token(closer[0] if closer else np.flatnonzero(task.adj[v])[0])] = 5.0
    assert exact.exact_score(MarkovModel(best), 0.0) == pytest.approx(100.0)
    # Sampling the same logits puts some probability on non-edges (episodes ending with 0): below the optimum.
    assert exact.exact_score(MarkovModel(best), 1.0) < 90.0
