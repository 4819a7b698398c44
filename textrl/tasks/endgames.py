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

SIDE, EMPTY = "w", "."
PIECE_CHARS = list("PNBRQKpnbrqk")
BOARD_SQUARES = np.array([chess.square(f, r) for r in range(7, -1, -1) for f in range(8)])
"""The square of each board token, in FEN order (a8, b8, ..., h1)."""
BOARD_COLUMN = np.argsort(BOARD_SQUARES)
"""The board token of each square (the inverse of BOARD_SQUARES)."""
POSITION_TOKENS = 65
"""A position as the observation writes it: 64 board tokens (FEN's board field with every digit
expanded into that many "." and no "/", as searchless_chess tokenises FEN), then the side token."""
MAX_MOVES = 20
"""The default white-move budget: the longest K+R v K mate (16) and 4 moves to spare, so optimal
play always mates while a context (66 tokens per move) stays within 1,320 tokens."""
MIN_MATE = 5
"""Start positions need at least this many white moves to mate against best defence."""
STARTS_SEED = 14
EVAL_STARTS = 128
"""Symmetry classes per material in the evaluation split; every other class of mate-in->=5
positions is in the training split."""
SPLITS = ("eval", "train", "valid", "test")
""""valid" and "test" are the two halves of "eval" (64 starts per material each): the benchmark chooses
its knobs on the first and reports the second."""


def expand_board_fen(board_fen: str) -> str:
    """FEN's board field one character per square: each digit as that many ".", the "/" dropped."""
    return "".join(EMPTY * int(c) if c.isdigit() else c for c in board_fen if c != "/")


def collapse_board(squares: str) -> str:
    """The FEN board field of 64 square characters (the inverse of `expand_board_fen`)."""
    ranks = [squares[i:i + 8] for i in range(0, 64, 8)]
    return "/".join("".join(str(len(run)) if run[0] == EMPTY else run
                            for run in _runs(rank)) for rank in ranks)


def _runs(rank: str) -> list[str]:
    """A rank split into runs of "." and single piece characters."""
    out: list[str] = []
    for c in rank:
        if c == EMPTY and out and out[-1][0] == EMPTY:
            out[-1] += c
        else:
            out.append(c)
    return out


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
    shuffle of the groups gives EVAL_STARTS groups to evaluation, each represented by a seeded
    random symmetric image (validation and test split them in two). Training gets every
    position of every other group (all their symmetric images), so the splits are disjoint even
    up to symmetry.
    """
    table = tb.load(material)
    candidates = np.flatnonzero(table.dtm_w >= 2 * MIN_MATE - 1)
    canonical = transform(candidates[None], np.arange(8)[:, None]).min(0)
    classes = np.unique(canonical)
    rng = np.random.default_rng([STARTS_SEED, tb.MATERIALS.index(material)])
    held_out = rng.permutation(classes)[:EVAL_STARTS]
    chosen = transform(held_out, rng.integers(0, 8, size=len(held_out)))
    half = EVAL_STARTS // 2
    return {"eval": chosen, "train": candidates[~np.isin(canonical, held_out)], "valid": chosen[:half],
            "test": chosen[half:]}


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
    square), so optimal play is known exactly. Board rules come from python-chess. As in
    LMRL-Gym, the current position is shown after every black reply, so the latest board is
    always in view.

    ## Action Space
    `Discrete(1984)`: one token per move, from a fixed UCI vocabulary of every from-to(-promotion)
    move (1,968 tokens such as "e1e2" or "a7a8q"), plus the 16 other tokens (".", the 12 piece
    letters, the side token "w", <pad>, <eos>), which are illegal moves.

    ## Observation Space
    The context so far, right-padded to `max_length` = 66 * max_moves (1,320):
    `{"input_ids": Box(0, 1983, (1320,), uint16), "length": ()}`. A position is 65 tokens: FEN's
    board field one token per square (rank 8 to rank 1, a to h; every digit expanded into that
    many ".", the "/" dropped, as searchless_chess tokenises FEN), then the side token "w". The
    prompt is the start position; each turn appends the agent's move token and then, after black's
    reply, the position it leaves (black's move itself is not written: the board shows it). So a
    turn is 66 tokens and the context always ends with the board white moves on.

    ## Rewards
    +1 for the move that mates, -1 for an illegal move (any token that is not a legal white move
    here), 0 for every other move, stalemate, or losing the piece.

    ## Starting State
    A start position drawn uniformly from the split's set, every one a mate in 5 or more moves
    with best play. The positions of both materials are grouped by the board's 8 symmetries; a
    seeded shuffle puts 128 groups of each material in "eval", each shown as one seeded symmetric
    image (256 starts; 64 + 64 per material for its halves "valid" and "test"); "train" holds every
    position of every other group (269,200 starts), so no training start is a mirror or rotation
    of an evaluation one.

    ## Episode End
    Every end is a termination (never a truncation): checkmate (+1), an illegal move (-1),
    stalemate, black taking the undefended piece (insufficient material) and the move budget of
    `max_moves` white moves (0). Black's capture is shown like any reply (a board with the two kings
    alone); after the other ends black does not reply and no position is appended.

    ## Arguments
    `split`: "eval" (default, the registered env's evaluation starts), "train" (the starts the
    datasets are collected on), or "valid" / "test" (the two halves of "eval": the benchmark
    chooses knobs on one and reports the other). `max_moves`: the white-move budget (default 20:
    the longest K+R v K mate is 16, so optimal play always mates, and contexts stay within 1,320
    tokens).

    ## Reference scores
    Exact, over the evaluation starts: `ref_max_score` = 1.0 (optimal white against optimal
    defence mates from every start within the budget); `ref_min_score` for the uniform policy over
    the 1,984 tokens, by dynamic programming over (position, moves left) (an illegal token ends
    most of its episodes at once), exact up to 2e-16: past 10 moves the game goes on with
    probability below (35 / 1984)^10 < 1e-16 (at most 35 legal white moves) and the recursion
    stops there.

    ## Version History
    - v1: the position (64 square tokens and "w") is appended after every black reply instead of
      black's move token, and the prompt writes the board the same way; training starts are every
      mate-in->=5 position outside the evaluation groups (269,200 instead of 2,048); the default
      move budget is 20 (was 32). Datasets -v2.
    - v0 (refused): the start FEN's run-length board field once (one token per character, "/"
      kept), then only move tokens (white's and black's), so a model had to replay the moves to
      know where the pieces stood; 2,048 training starts. Datasets -v1 (refused).
    """

    name = "endgames"
    env_id = "textrl/Endgames-v1"
    retired_env_ids = {"textrl/Endgames-v0": "v0 wrote the start FEN once and then only move tokens; since v1 the "
                                              "board is written one token per square and appended after every "
                                              "black reply, with 269,200 training starts"}
    dataset_version = 2
    retired_dataset_versions = {1: "was played on textrl/Endgames-v0 (the board once, then moves; 2,048 starts)"}

    def __init__(self, split: str = "eval", max_moves: int = MAX_MOVES) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if isinstance(max_moves, bool) or not isinstance(max_moves, int) or max_moves < 1:
            raise ValueError(f"max_moves must be an int >= 1, got {max_moves!r}")
        self.split, self.max_moves = split, max_moves
        self.max_length = (POSITION_TOKENS + 1) * max_moves
        splits = [start_positions(m)[split] for m in tb.MATERIALS]
        self.start_piece = np.concatenate([np.full(len(s), p) for p, s in enumerate(splits)])
        self.start_index = np.concatenate(splits)
        dtm_w = np.stack([tb.load(m).dtm_w for m in tb.MATERIALS])
        mates = (dtm_w[self.start_piece, self.start_index] + 1) // 2
        self.ref_max_score = float(np.mean(mates <= max_moves))
        uniform = np.stack([uniform_values(m, max_moves, self.vocab_size) for m in tb.MATERIALS])
        self.ref_min_score = float(np.mean(uniform[self.start_piece, self.start_index]))

    @property
    def starts(self) -> list[tuple[int, int]]:
        """(piece, position index) of every start of the split."""
        return list(zip(self.start_piece.tolist(), self.start_index.tolist()))

    def dataset_task(self) -> EndgamesTask:
        """Datasets are collected on the training starts; the evaluation starts stay held out."""
        from textrl.tasks import get_task

        return get_task(self.name, split="train", max_moves=self.max_moves)

    @cached_property
    def vocab(self) -> list[str]:
        return [PAD, EOS, SIDE, EMPTY, *PIECE_CHARS, *uci_moves()]

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

    # ------------------------------------------------------------------ positions as tokens

    @cached_property
    def _piece_ids(self) -> np.ndarray:
        """Token ids of the white king, the white piece (queen, rook) and the black king, as [3, 2] by piece."""
        t = self.token_to_id
        return np.array([[t["K"], t["K"]], [t["Q"], t["R"]], [t["k"], t["k"]]])

    def position_tokens(self, piece: np.ndarray, wk: np.ndarray, wx: np.ndarray, bk: np.ndarray) -> np.ndarray:
        """[N, 65] token ids of positions with white to move: the expanded board field, then "w"."""
        piece = np.asarray(piece, dtype=np.int64)
        out = np.full((len(piece), POSITION_TOKENS), self.token_to_id[EMPTY], dtype=np.int64)
        rows = np.arange(len(piece))
        for k, square in enumerate((wk, wx, bk)):
            out[rows, BOARD_COLUMN[np.asarray(square)]] = self._piece_ids[k, piece]
        out[:, -1] = self.token_to_id[SIDE]
        return out

    def prompt_of(self, piece: int, index: int) -> list[int]:
        """The prompt of a position: its board field one token per square (as `expand_board_fen`), then "w"."""
        return self.position_tokens(np.array([piece]), *(v[None] for v in tb.split_index(index)))[0].tolist()

    def read_positions(self, boards: np.ndarray) -> tuple[np.ndarray, ...]:
        """(piece, wk, wx, bk, ok) of [N, 64] board tokens; `ok` is False where they are no K+Q/K+R v K board."""
        boards = np.asarray(boards, dtype=np.int64)
        found = [boards[:, :, None] == self._piece_ids[k][None, None] for k in range(3)]  # [N, 64, 2] each
        counts = [f[:, :, 0].sum(1) for f in (found[0], found[2])]
        queens, rooks = found[1][:, :, 0].sum(1), found[1][:, :, 1].sum(1)
        empty = (boards == self.token_to_id[EMPTY]).sum(1)
        ok = (counts[0] == 1) & (counts[1] == 1) & (queens + rooks == 1) & (empty == 61)
        piece = (rooks == 1).astype(np.int64)
        wk, wx, bk = (BOARD_SQUARES[np.argmax(f.any(2), axis=1)] for f in found)
        return piece, wk, wx, bk, ok

    def sample_prompt(self, rng: np.random.Generator) -> list[int]:
        r = int(rng.integers(len(self.start_index)))
        return self.prompt_of(int(self.start_piece[r]), int(self.start_index[r]))

    def check_prompt(self, prompt: list[int]) -> None:
        """A prompt must be a legal K+Q v K or K+R v K position with white to move, written as the env writes it.

        Legality is python-chess's (`Board.is_valid`), on the FEN the tokens stand for.
        """
        example = self.decode(self.sample_prompt(np.random.default_rng(0)))
        squares = {EMPTY, *PIECE_CHARS}
        text = [self.vocab[i] if 0 <= i < self.vocab_size else "?" for i in prompt]
        if len(prompt) != POSITION_TOKENS or text[-1] != SIDE or any(c not in squares for c in text[:-1]):
            raise ValueError(f"an {self.name} prompt is 64 square tokens (FEN's board field with every digit written "
                             f"as that many '.' and no '/') then 'w'; got {self.decode(prompt)!r} (e.g. {example!r})")
        fen = collapse_board("".join(text[:-1]))
        board = chess.Board(f"{fen} w - - 0 1")
        symbols = "".join(sorted(p.symbol() for p in board.piece_map().values()))
        if symbols not in ("KQk", "KRk") or not board.is_valid():
            raise ValueError(f"{fen!r} is not a legal K+Q v K or K+R v K position with white to move "
                             f"(e.g. {example!r})")

    # ------------------------------------------------------------------ dynamics

    @cached_property
    def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """[2, positions] stacks of (black-to-move plies to mate, black's reply, white's best slot)."""
        parts = [_policy_tables(m) for m in tb.MATERIALS]
        return tuple(np.stack([p[k] for p in parts]) for k in range(3))

    def initial_state(self, prompts: list[list[int]], rngs: list[np.random.Generator]) -> dict[str, np.ndarray]:
        boards = np.array(prompts, dtype=np.int64).reshape(len(prompts), POSITION_TOKENS)[:, :-1]
        piece, wk, wx, bk, _ = self.read_positions(boards)
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
        state["moves"] = moves
        state["wk"][legal], state["wx"][legal] = wk[legal], wx[legal]
        state["bk"][plays] = reply[plays]
        response = np.full((len(actions), POSITION_TOKENS), -1, dtype=np.int64)  # after a reply: the position
        response[plays] = self.position_tokens(piece[plays], state["wk"][plays], state["wx"][plays],
                                               state["bk"][plays])
        reward = mate.astype(np.float64) - (active & ~legal)
        terminated = active & (~legal | mate | stalemate | out_of_moves | taken)
        return Transition(response, reward, terminated, np.zeros(len(actions), dtype=bool))

    # ------------------------------------------------------------------ policies

    def positions(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(piece, wk, wx, bk) of each observed context: read off its last position (the 64 tokens before its last "w")."""
        ids = np.asarray(obs["input_ids"], dtype=np.int64)
        length = np.asarray(obs["length"], dtype=np.int64)
        side = (ids == self.token_to_id[SIDE]) & (np.arange(ids.shape[1])[None] < length[:, None])
        last = ids.shape[1] - 1 - np.argmax(side[:, ::-1], axis=1)
        cols = last[:, None] - (POSITION_TOKENS - 1) + np.arange(POSITION_TOKENS - 1)[None]
        piece, wk, wx, bk, _ = self.read_positions(np.take_along_axis(ids, cols, axis=1))
        return piece, wk, wx, bk

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

    Same rules, vocabulary, starts, observations, rewards and ends as `textrl/Endgames-v1` (see there); only
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
    env_id = "textrl/EndgamesStockfish-v1"
    retired_env_ids = {"textrl/EndgamesStockfish-v0": "its observations changed as Endgames-v1's: the board is "
                                                       "appended after every black reply"}

    def __init__(self, split: str = "eval", max_moves: int = MAX_MOVES, nodes: int = 5000) -> None:
        path = find_stockfish()
        if path is None or not (os.path.isfile(path) and os.access(path, os.X_OK)):
            where = f"STOCKFISH={path!r} is not an executable file" if path else "no stockfish binary was found"
            raise RuntimeError(f"{self.env_id} needs the Stockfish engine: {where}. Install it (apt-get install "
                               "stockfish) or set STOCKFISH to the binary's path; textrl/Endgames-v1 needs no engine")
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
