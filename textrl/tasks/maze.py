"""The double-T maze of LMRL-Gym as a multi-turn text task: fully observed (Maze) and walls only (MazePO)."""

from __future__ import annotations

from collections import deque
from functools import cached_property
from importlib import resources

import numpy as np

from textrl.tasks.base import EOS, PAD, Task, Transition

GOAL = (8, 6)
MOVES = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
STEP_REWARD, GOAL_REWARD, INVALID_REWARD = -1.0, 0.0, -4.0


def load_layout() -> np.ndarray:
    """The maze grid shipped with the package (True = wall)."""
    text = resources.files("textrl.tasks").joinpath("data/double_t_maze.txt").read_text()
    return np.array([[c == "1" for c in line.strip()] for line in text.splitlines() if line.strip()])


class MazeTask(Task):
    """Walk the double-T maze to its goal; each observation gives the goal, the position and the adjacent walls.

    ## Description
    LMRL-Gym's double-T maze (26 free cells, goal (8, 6)), multi-turn: each turn the agent emits
    one move token and the env answers with the observation of the new cell.

    ## Action Space
    `Discrete(50)`: `<pad>`, `<eos>`, the moves `up down left right`, `goal`, `pos`, the 26 cells
    `r,c` and the 16 wall patterns `wUDLR`. Only the four moves move; every token is accepted.

    ## Observation Space
    `Dict(input_ids=Box(0, 49, (85,), uint8), length=Box(0, 85, (), int32))` with 20 steps: the
    prompt `goal 8,6 pos r,c wUDLR`, then `<move> pos r,c wUDLR` per turn (`w` and the wall bits
    up, down, left, right of the cell), so `max_length` = 5 + 4 * max_steps.

    ## Rewards
    -1 per move, 0 on the move that reaches the goal, -4 for a token that is not a move (the
    position stays and the env still answers).

    ## Starting State
    A cell drawn uniformly among the 25 free cells other than the goal; a prompt given in reset
    options must be the start observation of one of them.

    ## Episode End
    Every end is a termination (`terminated=True`, `truncated=False`):
    1. the move that reaches the goal (no observation follows it);
    2. the `max_steps`-th token without reaching the goal (a token that is not a move counts as a
       step). The budget is part of the task: the reference scores are computed with it and the
       context length shows how much is left, so there is no future to bootstrap from.

    ## Arguments
    `max_steps=20`; also through `gymnasium.make("textrl/Maze-v1", max_steps=10)`.

    ## Reference scores
    Exact, with 20 steps: `ref_max_score` -6.84 (BFS shortest paths, the mean over the 25 starts);
    `ref_min_score` -74.67347740001391 (the uniform policy over the 50 tokens, by dynamic
    programming over (cell, steps left)).

    ## Version History
    - v1: the step budget ends with `terminated=True` (datasets -v1).
    - v0 (refused): the budget ended with `truncated=True`, so learners bootstrapped there (datasets -v0).
    """

    name = "maze"
    env_id = "textrl/Maze-v1"
    retired_env_ids = {"textrl/Maze-v0": "the step budget ended episodes with truncated=True; since v1 it is a "
                                          "termination (the budget is part of the task)"}
    observe_position = True

    def __init__(self, max_steps: int = 20) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        self.max_steps = max_steps
        self.walls = load_layout()
        self.cells = [tuple(map(int, c)) for c in np.argwhere(~self.walls)]
        self.cell_index = {c: i for i, c in enumerate(self.cells)}
        self.goal = self.cell_index[GOAL]
        self.starts = np.array([i for i in range(len(self.cells)) if i != self.goal])
        moves = np.array(list(MOVES.values()))
        # next_cell[c, m]: the cell after move m from cell c (unchanged into a wall).
        self.next_cell = np.array([[self.cell_index.get((r + dr, c + dc), i) for dr, dc in moves]
                                   for i, (r, c) in enumerate(self.cells)])
        self.wall_bits = np.array([[int(self.next_cell[i, m] == i) for m in range(4)] for i in range(len(self.cells))])
        self.dist = self._bfs()
        per_turn = len(self._observe(np.array([0]))[0])
        self.max_length = len(self._prompt(0)) + max_steps * (1 + per_turn)
        self.ref_max_score = float(np.mean([-max(self.dist[s] - 1, 0) for s in self.starts]))
        self.ref_min_score = self._uniform_return()

    @cached_property
    def vocab(self) -> list[str]:
        cells = [f"{r},{c}" for r, c in self.cells]
        walls = [f"w{b:04b}" for b in range(16)]
        return [PAD, EOS, *MOVES, "goal", "pos", *cells, *walls]

    # ------------------------------------------------------------------ observations

    def _observe(self, cell: np.ndarray) -> np.ndarray:
        """The observation tokens after arriving at `cell` (batched): [pos, r,c,] walls."""
        wall_tok = self._wall_token[cell]
        if not self.observe_position:
            return wall_tok[:, None]
        cell_tok = self._cell_token[cell]
        return np.stack([np.full(len(cell), self.token_to_id["pos"]), cell_tok, wall_tok], axis=1)

    @cached_property
    def _wall_token(self) -> np.ndarray:
        """Per cell, the token of its wall pattern (bits up, down, left, right)."""
        bits = self.wall_bits @ np.array([8, 4, 2, 1])
        return np.array([self.token_to_id[f"w{b:04b}"] for b in bits])

    @cached_property
    def _cell_token(self) -> np.ndarray:
        return np.array([self.token_to_id[f"{r},{c}"] for r, c in self.cells])

    def _prompt(self, cell: int) -> list[int]:
        goal = [self.token_to_id["goal"], self.token_to_id["{},{}".format(*GOAL)]] if self.observe_position else []
        return goal + self._observe(np.array([cell]))[0].tolist()

    # ------------------------------------------------------------------ dynamics

    @cached_property
    def _starts_of_prompt(self) -> dict[tuple[int, ...], list[int]]:
        """Start prompt -> the start cells that show it (one each when the position is observed)."""
        table: dict[tuple[int, ...], list[int]] = {}
        for s in self.starts:
            table.setdefault(tuple(self._prompt(int(s))), []).append(int(s))
        return table

    def sample_prompt(self, rng: np.random.Generator) -> list[int]:
        return self._prompt(int(self.starts[rng.integers(len(self.starts))]))  # rng.choice's draw, cheaper

    def evaluation_prompts(self) -> list[list[int]] | None:
        """The 25 start prompts, when each names one start cell (fully observed); MazePO's do not."""
        table = self._starts_of_prompt
        return [list(p) for p in table] if all(len(cells) == 1 for cells in table.values()) else None

    def check_prompt(self, prompt: list[int]) -> None:
        if tuple(prompt) not in self._starts_of_prompt:
            raise ValueError(f"not a start observation of {self.name}: {self.decode(prompt)!r} "
                             f"(e.g. {self.decode(self._prompt(int(self.starts[0])))!r})")

    def initial_state(self, prompts: list[list[int]], rngs: list[np.random.Generator]) -> dict[str, np.ndarray]:
        cells = [self._starts_of_prompt[tuple(p)][0] for p in prompts]
        return {"cell": np.array(cells, dtype=np.int64), "steps": np.zeros(len(prompts), dtype=np.int64)}

    def transition(self, state: dict[str, np.ndarray], actions: np.ndarray, active: np.ndarray) -> Transition:
        cell, steps = state["cell"], state["steps"]
        move = actions - self.token_to_id["up"]
        is_move = (move >= 0) & (move < 4)
        new = np.where(is_move, self.next_cell[cell, np.clip(move, 0, 3)], cell)
        cell[active] = new[active]
        steps[active] += 1
        arrived = active & is_move & (cell == self.goal)
        reward = np.where(is_move, np.where(arrived, GOAL_REWARD, STEP_REWARD), INVALID_REWARD) * active
        # the step budget is part of the task (inside its reference scores), so using it up terminates
        terminated = arrived | active & (steps >= self.max_steps)
        response = np.where((active & ~terminated)[:, None], self._observe(cell), -1)
        return Transition(response, reward, terminated, np.zeros(len(actions), dtype=bool))

    # ------------------------------------------------------------------ policies

    def _bfs(self) -> np.ndarray:
        dist = np.full(len(self.cells), -1)
        dist[self.goal] = 0
        queue = deque([self.goal])
        while queue:
            v = queue.popleft()
            for u in range(len(self.cells)):
                if dist[u] < 0 and v in self.next_cell[u]:
                    dist[u] = dist[v] + 1
                    queue.append(u)
        return dist

    @cached_property
    def _best_move(self) -> np.ndarray:
        """The first move (index into MOVES) that gets one step closer to the goal."""
        return np.array([int(np.argmin(np.where(self.next_cell[i] == i, 10**6, self.dist[self.next_cell[i]])))
                         for i in range(len(self.cells))])

    def _position(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The current cell, read from the last position token of each observation."""
        ids = np.asarray(obs["input_ids"], dtype=np.int64)
        first_cell = self.token_to_id["{},{}".format(*self.cells[0])]
        is_cell = (ids >= first_cell) & (ids < first_cell + len(self.cells))
        is_cell &= np.arange(ids.shape[1])[None] < np.asarray(obs["length"])[:, None]
        last = ids.shape[1] - 1 - np.argmax(is_cell[:, ::-1], axis=1)
        return ids[np.arange(len(ids)), last] - first_cell

    def optimal_policy(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """A shortest-path move from the observed position (BFS)."""
        return self._best_move[self._position(obs)] + self.token_to_id["up"]

    def exploration_policy(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """A uniformly random move (the behaviour data stays parseable)."""
        return rng.integers(0, 4, size=len(obs["length"])) + self.token_to_id["up"]

    def _uniform_return(self) -> float:
        """Exact mean return of the uniform-over-vocabulary policy, by dynamic programming over (cell, steps)."""
        p_move = 1.0 / self.vocab_size
        p_other = 1.0 - 4 * p_move
        value = np.zeros(len(self.cells))  # value with no moves left
        for _ in range(self.max_steps):
            new = p_other * (INVALID_REWARD + value)
            for m in range(4):
                nxt = self.next_cell[:, m]
                new = new + p_move * np.where(nxt == self.goal, GOAL_REWARD, STEP_REWARD + value[nxt])
            value = new
        return float(value[self.starts].mean())


class MazePOTask(MazeTask):
    """The double-T maze seen through its walls only: no goal and no position in the observations.

    ## Description
    MazeTask's maze, moves and dynamics; the agent must infer where it is from the wall patterns
    along its path. It tracks the set of cells consistent with its history (its belief), and
    `optimal_policy` minimises the expected number of moves by value iteration over the
    reachable beliefs, which is exact for this deterministic maze.

    ## Action Space
    MazeTask's: `Discrete(50)`.

    ## Observation Space
    `Dict(input_ids=Box(0, 49, (41,), uint8), length=Box(0, 41, (), int32))` with 20 steps: the
    prompt `wUDLR`, then `<move> wUDLR` per turn, so `max_length` = 1 + 2 * max_steps.

    ## Rewards
    MazeTask's: -1 per move, 0 on reaching the goal, -4 for a token that is not a move.

    ## Starting State
    Uniform over the 25 start cells, as in MazeTask: a cell's wall pattern is the prompt, and the
    env draws the cell among those that show it (so a prompt given in reset options stands for
    each of its cells with equal probability).

    ## Episode End
    MazeTask's: reaching the goal or using up the `max_steps` budget, both terminations.

    ## Arguments
    `max_steps=20`.

    ## Reference scores
    Exact, with 20 steps: `ref_max_score` -7.24 (the belief policy's mean return);
    `ref_min_score` -74.67347740001391 (MazeTask's: the uniform policy does not read observations).

    ## Version History
    - v1: the step budget ends with `terminated=True` (datasets -v1), as MazeTask's v1.
    - v0 (refused): the budget ended with `truncated=True` (datasets -v0).
    """

    name = "maze_po"
    env_id = "textrl/MazePO-v1"
    retired_env_ids = {"textrl/MazePO-v0": "the step budget ended episodes with truncated=True; since v1 it is a "
                                            "termination (the budget is part of the task)"}
    observe_position = False

    def __init__(self, max_steps: int = 20) -> None:
        super().__init__(max_steps)
        self.ref_max_score = -(float(np.mean([self._moves_to_goal[self._start_belief(s)] for s in self.starts])) - 1)

    def initial_state(self, prompts: list[list[int]], rngs: list[np.random.Generator]) -> dict[str, np.ndarray]:
        table = self._starts_of_prompt
        cells = [int(table[tuple(p)][rng.integers(len(table[tuple(p)]))]) for p, rng in zip(prompts, rngs)]  # rng.choice's draw
        return {"cell": np.array(cells, dtype=np.int64), "steps": np.zeros(len(prompts), dtype=np.int64)}

    def _start_belief(self, cell: int) -> frozenset[int]:
        return frozenset(int(s) for s in self.starts if self._wall_token[s] == self._wall_token[cell])

    def _successors(self, belief: frozenset[int], move: int) -> list[tuple[float, frozenset[int]]]:
        """(probability, next belief) per observation after `move`; cells reaching the goal leave."""
        groups: dict[int, set[int]] = {}
        for c in belief:
            nxt = int(self.next_cell[c, move])
            if nxt != self.goal:
                groups.setdefault(int(self._wall_token[nxt]), set()).add(nxt)
        return [(len(g) / len(belief), frozenset(g)) for g in groups.values()]

    @cached_property
    def _move_values(self) -> dict[frozenset[int], np.ndarray]:
        """Expected moves to the goal after each move, per reachable belief (value iteration)."""
        beliefs, frontier = set(), [self._start_belief(int(s)) for s in self.starts]
        while frontier:
            b = frontier.pop()
            if b and b not in beliefs:
                beliefs.add(b)
                frontier += [nb for m in range(4) for _, nb in self._successors(b, m)]
        value = dict.fromkeys(beliefs, 0.0)
        for _ in range(10 * len(self.cells)):
            q = {b: np.array([1 + sum(p * value[nb] for p, nb in self._successors(b, m)) for m in range(4)])
                 for b in beliefs}
            new = {b: float(v.min()) for b, v in q.items()}
            if new == value:
                break
            value = new
        return q

    @cached_property
    def _moves_to_goal(self) -> dict[frozenset[int], float]:
        return {b: float(v.min()) for b, v in self._move_values.items()}

    @cached_property
    def _best_move_of_belief(self) -> dict[int, int]:
        """Belief, as a bit mask over cells -> its optimal move (the first of equals, as np.argmin)."""
        return {sum(1 << c for c in b): int(np.argmin(q)) for b, q in self._move_values.items()}

    def _beliefs(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Bit masks of the cells consistent with each walls-only history [w0, a1, w1, a2, w2, ...] (batched)."""
        ids = np.asarray(obs["input_ids"], dtype=np.int64)
        length = np.asarray(obs["length"])
        cells = np.arange(len(self.cells))
        is_start = np.isin(cells, self.starts)
        belief = is_start[None] & (self._wall_token[None] == ids[:, :1])  # [N, cells]
        rows = np.broadcast_to(np.arange(len(ids))[:, None], belief.shape)
        up = self.token_to_id["up"]
        for k in range(1, int(length.max()) - 1, 2):
            move = ids[:, k] - up
            step = (k + 1 < length) & (move >= 0) & (move < 4)  # a non-move token leaves the belief as it is
            nxt = self.next_cell[cells[None], np.clip(move, 0, 3)[:, None]]
            keep = belief & (self._wall_token[nxt] == ids[:, k + 1, None]) & step[:, None]
            moved = np.zeros_like(belief)
            moved[rows[keep], nxt[keep]] = True
            belief = np.where(step[:, None], moved, belief)
        return belief @ (1 << cells)

    def optimal_policy(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """The move with the fewest expected moves to the goal from the current belief."""
        best = self._best_move_of_belief
        return np.array([best.get(int(m), 0) for m in self._beliefs(obs)], dtype=np.int64) + self.token_to_id["up"]
