"""Chess endgames of LMRL-Gym made exact: white (the agent) mates with K+Q v K or K+R v K.

Rules, legality, FEN and move notation come from python-chess; the opponent and the references
come from the task's own retrograde tablebase (textrl/tasks/tablebase.py). Stepping never calls
python-chess per move: white's legal moves come from the batched generator on python-chess's
attack tables, black's reply and white's best move are table lookups per position index, so the
vector env runs at hundreds of thousands of steps per second.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
from functools import cache, cached_property

import chess
import chess.engine
import numpy as np

from textrl.tasks import tablebase as tb
from textrl.tasks.base import EOS, PAD, Task, Transition

SIDE = "w"
BOARD_CHARS = ["/", *"12345678", *"PNBRQKpnbrqk"]
PROMPT_MAX = 22
"""The longest prompt: three pieces on three ranks take at most 3 characters each ("3K4"), the
five empty ranks 1 each ("8"), the 7 slashes, and the side token: 9 + 5 + 7 + 1."""
MIN_MATE = 5
"""Start positions need at least this many white moves to mate against best defence."""
STARTS_SEED = 14
EVAL_STARTS, TRAIN_STARTS = 128, 1024
"""Start positions per material in the evaluation and training splits."""
SPLITS = ("eval", "train", "valid", "test")
""""valid" and "test" are the two halves of "eval" (64 starts per material each): the benchmark chooses
its knobs on the first and reports the second."""


def uci_moves() -> list[str]:
    """Every from-to(-promotion) move in UCI: queen and knight lines from each square, and each pawn promotion.

    1,792 queen/knight moves and 176 promotions (both colours, four pieces): 1,968 tokens.
    """
    moves = []
    for frm in chess.SQUARES:
        targets = tb.slider_attacks(chess.QUEEN, frm, 0) | chess.BB_KNIGHT_ATTACKS[frm]
        moves += [chess.Move(frm, to).uci() for to in chess.scan_forward(targets)]
    for frm_rank, to_rank in ((6, 7), (1, 0)):
        for file in range(8):
            for to_file in range(max(file - 1, 0), min(file + 2, 8)):
                frm, to = chess.square(file, frm_rank), chess.square(to_file, to_rank)
                moves += [chess.Move(frm, to, promotion=p).uci() for p in (chess.QUEEN, chess.ROOK, chess.BISHOP,
                                                                            chess.KNIGHT)]
    return moves


def _symmetries() -> np.ndarray:
    """SYM[k, s]: square s under the k-th of the board's 8 symmetries (file flip, rank flip, transpose)."""
    out = []
    for k in range(8):
        row = []
        for s in chess.SQUARES:
            f, r = chess.square_file(s), chess.square_rank(s)
            f, r = (7 - f if k & 1 else f), (7 - r if k & 2 else r)
            row.append(chess.square(r, f) if k & 4 else chess.square(f, r))
        out.append(row)
    return np.array(out)


SYM = _symmetries()


def transform(index: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Position indices under symmetry k (element-wise)."""
    wk, wx, bk = tb.split_index(index)
    return tb.position_index(SYM[k, wk], SYM[k, wx], SYM[k, bk])


@cache
def start_positions(material: str) -> dict[str, np.ndarray]:
    """The evaluation, training, validation and test start positions of a material (flat indices, white to move).

    Positions with mate in MIN_MATE or more are grouped by the 8 board symmetries; a seeded
    shuffle of the groups gives EVAL_STARTS groups to evaluation and the next TRAIN_STARTS to
    training (disjoint even up to symmetry), each represented by a seeded random symmetric image;
    validation and test split the evaluation starts in two.
    """
    table = tb.load(material)
    candidates = np.flatnonzero(table.dtm_w >= 2 * MIN_MATE - 1)
    canonical = transform(candidates[None], np.arange(8)[:, None]).min(0)
    classes = np.unique(canonical)
    rng = np.random.default_rng([STARTS_SEED, tb.MATERIALS.index(material)])
    chosen = rng.permutation(classes)[:EVAL_STARTS + TRAIN_STARTS]
    chosen = transform(chosen, rng.integers(0, 8, size=len(chosen)))
    half = EVAL_STARTS // 2
    return {"eval": chosen[:EVAL_STARTS], "train": chosen[EVAL_STARTS:], "valid": chosen[:half],
            "test": chosen[half:EVAL_STARTS]}


def board_of(piece: int, index: int) -> chess.Board:
    """The python-chess board of a position (white to move)."""
    wk, wx, bk = (int(v) for v in tb.split_index(index))
    board = chess.Board(None)
    board.set_piece_at(wk, chess.Piece(chess.KING, chess.WHITE))
    board.set_piece_at(wx, chess.Piece(tb.PIECE_TYPES[piece], chess.WHITE))
    board.set_piece_at(bk, chess.Piece(chess.KING, chess.BLACK))
    return board


@cache
def _policy_tables(material: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per position index: plies to mate with black to move, black's reply square (-1 none) and white's best slot."""
    table = tb.load(material)
    return table.dtm_b, table.reply, table.best


@cache
def _uniform_moves(material: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The game graph under white's legal moves and black's replies, for `uniform_values`.

    (white-to-move positions, their legal-move counts, their mating-move counts, and the edges
    (row, next white-to-move position) of the moves after which the game goes on).
    """
    piece = tb.MATERIALS.index(material)
    dtm_b, reply, _ = _policy_tables(material)
    legal_w = np.flatnonzero(tb.is_legal(piece, *tb.split_index(np.arange(tb.NUM_POSITIONS)), True))

    def successors(index: np.ndarray) -> np.ndarray:
        wk, wx, bk = tb.split_index(index)
        legal = tb.white_moves(np.full(len(index), piece), wk, wx, bk)
        after = tb.white_successors(wk, wx, bk)
        dest = reply[after].astype(np.int64)
        _, wx_after, _ = tb.split_index(after)
        nxt = tb.position_index(after // 4096, wx_after, np.maximum(dest, 0))
        code = np.where(dtm_b[after] == 0, -2, np.where((dest < 0) | (dest == wx_after), -3, nxt))
        return np.where(legal, code, -1).astype(np.int32)  # -1 illegal, -2 mate, -3 drawn end

    nxt = tb.chunked(successors, legal_w)
    rows, cols = np.nonzero(nxt >= 0)
    return legal_w, (nxt != -1).sum(1), (nxt == -2).sum(1), rows, nxt[rows, cols]


@cache
def uniform_values(material: str, max_moves: int, vocab_size: int) -> np.ndarray:
    """Expected return of the uniform-over-vocabulary policy from every white-to-move position.

    Dynamic programming over (position, white moves left): with k legal moves among V tokens,
    V_t(w) = -(V - k) / V + (1 / V) * sum over legal moves of (+1 mate, 0 stalemate or capture,
    else V_{t-1}(position after black's reply)), V_0 = 0. Exact up to 2e-16: the recursion
    stops after d moves once the game can go on that long only with probability below 1e-16
    (at most (most legal moves / V)^d), where further terms no longer change a float64 value.
    """
    legal_w, legal, mates, rows, targets = _uniform_moves(material)
    depth = int(np.ceil(np.log(1e-16) / np.log(max(int(legal.max()), 1) / vocab_size)))
    value = np.zeros(tb.NUM_POSITIONS)
    for _ in range(min(max_moves, depth)):
        cont = np.bincount(rows, weights=value[targets], minlength=len(legal_w))
        value[legal_w] = (mates + cont - (vocab_size - legal)) / vocab_size
    return value


class EndgamesTask(Task):
    """Mate the lone black king with king and queen or king and rook; black defends as long as it can.

    ## Description
    LMRL-Gym's "theoretical chess endgames", with exact references. The agent plays white in a
    K+Q v K or K+R v K position; the environment plays black's longest-resisting reply from a
    retrograde tablebase (depth to mate of every position; ties go to the lowest destination
    square), so optimal play is known exactly. Board rules come from python-chess.

    ## Action Space
    `Discrete(1992)`: one token per move, from a fixed UCI vocabulary of every from-to(-promotion)
    move (1,968 tokens such as "e1e2" or "a7a8q"), plus the 24 other tokens (21 board characters,
    the side token "w", <pad>, <eos>), which are illegal moves.

    ## Observation Space
    The context so far, right-padded to `max_length` = 22 + 2 * max_moves (86):
    `{"input_ids": Box(0, 1991, (86,), uint16), "length": ()}`. The prompt is the start FEN's
    board field, one token per character ("8/8/8/3k4/8/8/8/R3K3" -> "8 / 8 / ... K 3"), then "w";
    each turn appends the agent's move token and then black's reply token.

    ## Rewards
    +1 for the move that mates, -1 for an illegal move (any token that is not a legal white move
    here), 0 for every other move, stalemate, or losing the piece.

    ## Starting State
    A start position drawn uniformly from the split's fixed set: 128 K+Q v K and 128 K+R v K
    positions for "eval" (64 + 64 for each of its halves "valid" and "test"), 1,024 of each for
    "train", each a mate in 5 or more moves with best play,
    chosen by a seeded shuffle of the positions' symmetry classes (the splits share no position,
    nor any mirror or rotation of one).

    ## Episode End
    Every end is a termination (never a truncation): checkmate (+1), an illegal move (-1),
    stalemate, black taking the undefended piece (insufficient material) and the move budget of
    `max_moves` white moves (0). With the budget black's reply to the last move is not played.

    ## Arguments
    `split`: "eval" (default, the registered env's evaluation starts), "train" (the starts the
    datasets are collected on), or "valid" / "test" (the two halves of "eval", 64 starts per
    material each: the benchmark chooses knobs on one and reports the other). `max_moves`: the white-move budget (default 32, twice the longest
    K+R v K mate, so optimal play always mates).

    ## Reference scores
    Exact, over the evaluation starts: `ref_max_score` = 1.0 (optimal white against optimal
    defence mates from every start within the budget); `ref_min_score` = -0.9991827678912832 for
    the uniform policy over the 1,992 tokens, by dynamic programming over (position, moves left)
    (an illegal token ends most of its episodes at once), exact up to 2e-16: past 10 moves the
    game goes on with probability below (35 / 1992)^10 < 1e-16 (at most 35 legal white moves) and
    the recursion stops there.

    ## Version History
    v0: first version (python-chess 1.11; tablebase opponent).
    """

    name = "endgames"
    env_id = "textrl/Endgames-v0"

    def __init__(self, split: str = "eval", max_moves: int = 32) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if isinstance(max_moves, bool) or not isinstance(max_moves, int) or max_moves < 1:
            raise ValueError(f"max_moves must be an int >= 1, got {max_moves!r}")
        self.split, self.max_moves = split, max_moves
        self.max_length = PROMPT_MAX + 2 * max_moves
        self.starts = [(p, int(i)) for p, m in enumerate(tb.MATERIALS) for i in start_positions(m)[split]]
        mates = np.array([(tb.load(tb.MATERIALS[p]).dtm_w[i] + 1) // 2 for p, i in self.starts])
        self.ref_max_score = float(np.mean(mates <= max_moves))
        self.ref_min_score = float(np.mean([uniform_values(tb.MATERIALS[p], max_moves, self.vocab_size)[i]
                                            for p, i in self.starts]))

    def dataset_task(self) -> EndgamesTask:
        """Datasets are collected on the training starts; the evaluation starts stay held out."""
        from textrl.tasks import get_task

        return get_task(self.name, split="train", max_moves=self.max_moves)

    @cached_property
    def vocab(self) -> list[str]:
        return [PAD, EOS, SIDE, *BOARD_CHARS, *uci_moves()]

    # ------------------------------------------------------------------ moves as tokens

    @cached_property
    def _move_squares(self) -> tuple[np.ndarray, np.ndarray]:
        """Token id -> (from, to) squares of plain (non-promotion) moves, -1 for every other token."""
        frm = np.full(self.vocab_size, -1, dtype=np.int64)
        to = np.full(self.vocab_size, -1, dtype=np.int64)
        for i, tok in enumerate(self.vocab):
            if len(tok) == 4 and tok[0] in "abcdefgh":
                move = chess.Move.from_uci(tok)
                frm[i], to[i] = move.from_square, move.to_square
        return frm, to

    @cached_property
    def _move_token(self) -> np.ndarray:
        """(from, to) -> token id of the plain move, -1 where no piece moves that way."""
        table = np.full((64, 64), -1, dtype=np.int64)
        frm, to = self._move_squares
        ok = frm >= 0
        table[frm[ok], to[ok]] = np.flatnonzero(ok)
        return table

    def _slot_token(self, wk: np.ndarray, wx: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """Token ids of white move slots (0..7 king moves in KING_DEST order, 8 + square: piece moves)."""
        king = slot < 8
        frm = np.where(king, wk, wx)
        to = np.where(king, tb.KING_DEST[wk, np.minimum(slot, 7)], slot - 8)
        token = np.where(to >= 0, self._move_token[frm, np.maximum(to, 0)], -1)
        return np.where(token >= 0, token, self.eos_id)  # no legal move: only after the episode ended

    # ------------------------------------------------------------------ prompts

    def prompt_of(self, piece: int, index: int) -> list[int]:
        """The prompt of a position: its FEN board field (python-chess), one token per character, then "w"."""
        return [self.token_to_id[c] for c in board_of(piece, index).board_fen()] + [self.token_to_id[SIDE]]

    @cached_property
    def _start_prompts(self) -> list[list[int]]:
        return [self.prompt_of(p, i) for p, i in self.starts]

    @cached_property
    def _parsed(self) -> dict[tuple[int, ...], tuple[int, int]]:
        """Prompt -> (piece, position index); starts up front, other legal prompts added when checked."""
        return {tuple(pr): s for pr, s in zip(self._start_prompts, self.starts)}

    def _parse_prompt(self, prompt: list[int]) -> tuple[int, int]:
        """(piece, position index) of a prompt, read by python-chess; ValueError if it is no legal start."""
        key = tuple(prompt)
        if key in self._parsed:
            return self._parsed[key]
        text = "".join(self.vocab[i] for i in prompt[:-1])
        example = self.decode(self._start_prompts[0])
        if not prompt or prompt[-1] != self.token_to_id[SIDE] or any(c not in BOARD_CHARS for c in text):
            raise ValueError(f"an {self.name} prompt is a FEN board field, one token per character, then 'w'; got "
                             f"{self.decode(prompt)!r} (e.g. {example!r})")
        try:
            board = chess.Board(f"{text} w - - 0 1")
        except ValueError as e:
            raise ValueError(f"{text!r} is not a FEN board field: {e}") from e
        kinds = sorted((p.symbol(), s) for s, p in board.piece_map().items())
        symbols = "".join(k for k, _ in kinds)
        if symbols not in ("KQk", "KRk") or not board.is_valid():
            raise ValueError(f"{text!r} is not a legal K+Q v K or K+R v K position with white to move "
                             f"(e.g. {example!r})")
        squares = dict(kinds)
        piece = 0 if symbols == "KQk" else 1
        parsed = (piece, int(tb.position_index(squares["K"], squares[symbols[1]], squares["k"])))
        self._parsed[key] = parsed
        return parsed

    def sample_prompt(self, rng: np.random.Generator) -> list[int]:
        return list(self._start_prompts[int(rng.integers(len(self.starts)))])

    def check_prompt(self, prompt: list[int]) -> None:
        self._parse_prompt(prompt)

    # ------------------------------------------------------------------ dynamics

    @cached_property
    def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """[2, positions] stacks of (black-to-move plies to mate, black's reply, white's best slot)."""
        parts = [_policy_tables(m) for m in tb.MATERIALS]
        return tuple(np.stack([p[k] for p in parts]) for k in range(3))

    def initial_state(self, prompts: list[list[int]], rngs: list[np.random.Generator]) -> dict[str, np.ndarray]:
        piece, index = np.array([self._parse_prompt(p) for p in prompts], dtype=np.int64).reshape(-1, 2).T
        wk, wx, bk = tb.split_index(index)
        return {"piece": piece, "wk": wk, "wx": wx, "bk": bk, "moves": np.zeros(len(prompts), dtype=np.int64)}

    def _white_move(self, piece: np.ndarray, wk: np.ndarray, wx: np.ndarray, bk: np.ndarray,
                    actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(legal, white king after, white piece after) of action tokens in these positions."""
        frm, to = (t[actions] for t in self._move_squares)
        legal = tb.white_move_is_legal(piece, wk, wx, bk, frm, to)
        return legal, np.where(legal & (frm == wk), to, wk), np.where(legal & (frm == wx), to, wx)

    def black_reply(self, piece: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Black's king destination in these black-to-move positions (-1: no move): the tablebase's choice."""
        return self._tables[1][piece, index].astype(np.int64)

    def transition(self, state: dict[str, np.ndarray], actions: np.ndarray, active: np.ndarray) -> Transition:
        piece, bk = state["piece"], state["bk"]
        actions = np.asarray(actions, dtype=np.int64)
        legal, wk, wx = self._white_move(piece, state["wk"], state["wx"], bk, actions)
        legal &= active
        dtm_b = self._tables[0]
        after = tb.position_index(wk, wx, bk)
        mate = legal & (dtm_b[piece, after] == 0)
        reply = np.full(len(actions), -1, dtype=np.int64)
        reply[legal & ~mate] = self.black_reply(piece[legal & ~mate], after[legal & ~mate])
        stalemate = legal & ~mate & (reply < 0)
        moves = state["moves"] + active
        out_of_moves = legal & ~mate & ~stalemate & (moves >= self.max_moves)
        plays = legal & ~mate & ~stalemate & ~out_of_moves
        taken = plays & (reply == wx)
        response = np.where(plays, self._move_token[bk, np.maximum(reply, 0)], -1)[:, None]
        state["moves"] = moves
        state["wk"][legal], state["wx"][legal] = wk[legal], wx[legal]
        state["bk"][plays] = reply[plays]
        reward = mate.astype(np.float64) - (active & ~legal)
        terminated = active & (~legal | mate | stalemate | out_of_moves | taken)
        return Transition(response, reward, terminated, np.zeros(len(actions), dtype=bool))

    # ------------------------------------------------------------------ policies

    def positions(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(piece, wk, wx, bk) of each observed context: the prompt's position, then its moves replayed."""
        ids = np.asarray(obs["input_ids"], dtype=np.int64)
        length = np.asarray(obs["length"], dtype=np.int64)
        prompt_len = np.argmax(ids == self.token_to_id[SIDE], axis=1) + 1
        start = np.array([self._parse_prompt(ids[r, :prompt_len[r]].tolist()) for r in range(len(ids))],
                         dtype=np.int64).reshape(-1, 2)
        squares = np.stack(tb.split_index(start[:, 1]))  # [3, N]: wk, wx, bk
        frm_of, to_of = self._move_squares
        live = np.arange(ids.shape[1])[None] < length[:, None]
        live &= np.arange(ids.shape[1])[None] >= prompt_len[:, None]
        frm = np.where(live, frm_of[ids], -2)  # moves as from/to squares; -2: no move in this column
        to = to_of[ids]
        for j in range(int(prompt_len.min()), int(length.max())):
            squares = np.where(squares == frm[:, j], to[:, j], squares)
        return start[:, 0], squares[0], squares[1], squares[2]

    def optimal_policy(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """The tablebase's fastest mate (the first such move in slot order)."""
        piece, wk, wx, bk = self.positions(obs)
        slot = self._tables[2][piece, tb.position_index(wk, wx, bk)].astype(np.int64)
        return self._slot_token(wk, wx, slot)

    def exploration_policy(self, obs: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """A uniformly random legal white move."""
        piece, wk, wx, bk = self.positions(obs)
        legal = tb.white_moves(piece, wk, wx, bk)
        pick = rng.random(len(wk)) * legal.sum(1)
        slot = np.argmax(np.cumsum(legal, axis=1) > pick[:, None], axis=1)
        return self._slot_token(wk, wx, slot)


def find_stockfish() -> str | None:
    """The Stockfish binary: $STOCKFISH if set, else `stockfish` on PATH, else Debian's /usr/games/stockfish."""
    if os.environ.get("STOCKFISH"):
        return os.environ["STOCKFISH"]
    found = shutil.which("stockfish")
    if found:
        return found
    return DEBIAN_STOCKFISH if os.access(DEBIAN_STOCKFISH, os.X_OK) else None


DEBIAN_STOCKFISH = "/usr/games/stockfish"


def _quit_engine(loop: asyncio.AbstractEventLoop, engine: chess.engine.UciProtocol) -> None:
    """Stop the engine process at exit (it would also stop when its input closes)."""
    with contextlib.suppress(Exception):
        loop.run_until_complete(asyncio.wait_for(engine.quit(), 5))
    loop.close()


class EndgamesStockfishTask(EndgamesTask):
    """Endgames against Stockfish: black's replies come from the engine instead of the tablebase.

    Same rules, vocabulary, starts, rewards and ends as `textrl/Endgames-v0` (see there); only
    black's replies differ: Stockfish's move at a fixed node budget (`nodes`, default 5000) with
    one thread and a fresh game per query, so replies are deterministic; each is cached per
    position. Needs the `stockfish` binary ($STOCKFISH, PATH or /usr/games/stockfish; Debian
    package `stockfish`), and raises at construction without it.

    Reference scores: `ref_max_score` = 1.0 is exact (the tablebase move mates within the
    tablebase depth against any defence); `ref_min_score` is the tablebase opponent's figure,
    which the uniform policy's value against Stockfish differs from by less than
    2 (35 / 1992)^2 < 7e-4: the two opponents differ only after a legal white move (probability at
    most 35 / 1992), and from there the values of any two positions differ by at most 2 * 35 / 1992
    (Stockfish, like the tablebase, takes a hanging piece).
    """

    name = "endgames_stockfish"
    env_id = "textrl/EndgamesStockfish-v0"

    def __init__(self, split: str = "eval", max_moves: int = 32, nodes: int = 5000) -> None:
        path = find_stockfish()
        if path is None or not (os.path.isfile(path) and os.access(path, os.X_OK)):
            where = f"STOCKFISH={path!r} is not an executable file" if path else "no stockfish binary was found"
            raise RuntimeError(f"{self.env_id} needs the Stockfish engine: {where}. Install it (apt-get install "
                               "stockfish) or set STOCKFISH to the binary's path; textrl/Endgames-v0 needs no engine")
        if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
            raise ValueError(f"nodes must be an int >= 1, got {nodes!r}")
        super().__init__(split, max_moves)
        self.path, self.nodes = path, nodes
        self._replies: dict[tuple[int, int], int] = {}

    @cached_property
    def _engine(self) -> tuple[asyncio.AbstractEventLoop, chess.engine.UciProtocol]:
        """The engine on an event loop driven from this thread (SimpleEngine's thread would hold up interpreter exit)."""
        loop = asyncio.new_event_loop()
        _, engine = loop.run_until_complete(chess.engine.popen_uci(self.path))
        loop.run_until_complete(engine.configure({"Threads": 1}))
        atexit.register(_quit_engine, loop, engine)
        return loop, engine

    def black_reply(self, piece: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Stockfish's king destination in these black-to-move positions (-1: no legal move)."""
        out = np.empty(len(index), dtype=np.int64)
        for r, key in enumerate(zip(piece.tolist(), index.tolist())):
            if key not in self._replies:
                b = board_of(*key)
                b.turn = chess.BLACK
                loop, engine = self._engine
                move = (loop.run_until_complete(engine.play(b, chess.engine.Limit(nodes=self.nodes), game=object())).move
                        if any(b.legal_moves) else None)
                self._replies[key] = move.to_square if move is not None else -1
            out[r] = self._replies[key]
        return out
