"""Retrograde-analysis tablebases for K+Q v K and K+R v K (white has the queen or rook), in numpy.

A position is (white king, white piece, black king) as squares 0..63 (python-chess numbering,
a1 = 0, h8 = 63), flattened to `wk * 4096 + wx * 64 + bk`; each material has 262,144 indices,
for white to move (W) and for black to move (B). Moves are generated in batches from
python-chess's own attack tables (`chess.BB_KING_ATTACKS` and the sliding-piece tables), with
the only blockers these boards can have; tests check them against `chess.Board.legal_moves`.

Values are plies to mate: `dtm_w` (odd, white to move) and `dtm_b` (even, 0 = black is mated),
-1 where the side cannot be mated (a draw: stalemate, or black can take the piece) or the
position is illegal. Mate in N moves for white to move is (dtm_w + 1) / 2; the maxima are mate
in 10 (K+Q v K) and mate in 16 (K+R v K). Building both tables takes about 3 s on one core of
the 2-core test machine (numpy, no symmetry needed); they are cached on disk under a key of this
file's text and the python-chess version, in $TEXTRL_CACHE or ~/.cache/textrl.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import chess
import numpy as np

from textrl.io import atomic_directory

MATERIALS = ("KQvK", "KRvK")
"""Material sets: white king + queen (0) or rook (1) against the lone black king."""
PIECE_TYPES = (chess.QUEEN, chess.ROOK)
NUM_POSITIONS = 64 ** 3


def _bits(bb: int) -> np.ndarray:
    """A python-chess bitboard as 64 booleans (index = square)."""
    return np.unpackbits(np.array([bb], dtype="<u8").view(np.uint8), bitorder="little").astype(bool)


def slider_attacks(piece_type: int, square: int, occupied: int) -> int:
    """Attacks of a queen or rook on `square` with `occupied` blockers, from python-chess's tables."""
    attacks = (chess.BB_RANK_ATTACKS[square][chess.BB_RANK_MASKS[square] & occupied]
               | chess.BB_FILE_ATTACKS[square][chess.BB_FILE_MASKS[square] & occupied])
    if piece_type == chess.QUEEN:
        attacks |= chess.BB_DIAG_ATTACKS[square][chess.BB_DIAG_MASKS[square] & occupied]
    return attacks


KING = np.stack([_bits(chess.BB_KING_ATTACKS[s]) for s in range(64)])
"""KING[a, b]: a king on a attacks b."""
KING_DEST = np.array([[*np.flatnonzero(KING[s]), *[-1] * (8 - KING[s].sum())] for s in range(64)])
"""KING_DEST[a, k]: the k-th king destination from a in ascending square order, -1 past the last."""
SLIDER = np.stack([np.stack([np.stack([_bits(slider_attacks(pt, s, chess.BB_SQUARES[b] if b < 64 else 0))
                                       for b in range(65)]) for s in range(64)]) for pt in PIECE_TYPES])
"""SLIDER[piece, a, b]: the squares the piece on a attacks with one blocker on b (64: none)."""
NUM_SLOTS = 8 + 64
"""White move slots: 0..7 king moves (KING_DEST order), 8 + square: the piece moves to that square."""


def split_index(index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(wk, wx, bk) of flat position indices."""
    index = np.asarray(index)
    return index // 4096, index // 64 % 64, index % 64


def position_index(wk: np.ndarray, wx: np.ndarray, bk: np.ndarray) -> np.ndarray:
    return np.asarray(wk) * 4096 + np.asarray(wx) * 64 + np.asarray(bk)


def black_in_check(piece: np.ndarray, wk: np.ndarray, wx: np.ndarray, bk: np.ndarray) -> np.ndarray:
    """Whether the white piece attacks the black king (the white king is the only possible blocker)."""
    return SLIDER[piece, wx, wk, bk]


def is_legal(piece: np.ndarray, wk: np.ndarray, wx: np.ndarray, bk: np.ndarray, white_to_move: bool) -> np.ndarray:
    """Legal positions: three distinct squares, kings apart, and with white to move black not in check."""
    legal = (wk != wx) & (wk != bk) & (wx != bk) & ~KING[wk, bk]
    if white_to_move:
        legal &= ~black_in_check(piece, wk, wx, bk)
    return legal


def white_moves(piece: np.ndarray, wk: np.ndarray, wx: np.ndarray, bk: np.ndarray) -> np.ndarray:
    """Legal white move slots [N, 72] of legal white-to-move positions (see NUM_SLOTS)."""
    dest = KING_DEST[wk]
    safe = dest >= 0
    d = np.maximum(dest, 0)
    king_ok = safe & (d != wx[:, None]) & ~KING[bk[:, None], d] & (d != bk[:, None])
    reach = SLIDER[piece, wx, wk] & SLIDER[piece, wx, bk]  # blocked by either king
    rows = np.arange(len(wk))
    reach[rows, wk] = False
    reach[rows, bk] = False
    return np.concatenate([king_ok, reach], axis=1)


def white_move_is_legal(piece: np.ndarray, wk: np.ndarray, wx: np.ndarray, bk: np.ndarray, frm: np.ndarray,
                        to: np.ndarray) -> np.ndarray:
    """Whether white may move from `frm` to `to` (squares, -1 = no move) in legal white-to-move positions.

    The same rules as `white_moves`, for one move per position (the env checks only the action).
    """
    t = np.maximum(to, 0)
    king = (frm == wk) & KING[wk, t] & (t != wx) & ~KING[bk, t] & (t != bk)
    piece_move = (frm == wx) & SLIDER[piece, wx, wk, t] & SLIDER[piece, wx, bk, t] & (t != wk) & (t != bk)
    return (to >= 0) & (king | piece_move)


def slot_destinations(wk: np.ndarray, wx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(from, to) squares [N, 72] of every white move slot (to = -1 for missing king slots)."""
    n = len(wk)
    frm = np.concatenate([np.repeat(wk[:, None], 8, 1), np.repeat(wx[:, None], 64, 1)], axis=1)
    to = np.concatenate([KING_DEST[wk], np.broadcast_to(np.arange(64), (n, 64))], axis=1)
    return frm, to


def white_successors(wk: np.ndarray, wx: np.ndarray, bk: np.ndarray) -> np.ndarray:
    """Black-to-move position index [N, 72] after each white move slot (garbage where illegal)."""
    dest = np.maximum(KING_DEST[wk], 0)
    king = position_index(dest, wx[:, None], bk[:, None])
    piece = position_index(wk[:, None], np.arange(64)[None], bk[:, None])
    return np.concatenate([king, piece], axis=1)


def black_moves(piece: np.ndarray, wk: np.ndarray, wx: np.ndarray, bk: np.ndarray) -> np.ndarray:
    """Legal black king destinations [N, 8] (ascending, -1 = not legal) of black-to-move positions.

    The black king may not step onto a square the white king or piece attacks; the piece's lines
    are drawn through the black king's own square (it does not shield the square behind it).
    Taking the piece is legal when the white king does not defend it.
    """
    dest = KING_DEST[bk]
    d = np.maximum(dest, 0)
    attacked = KING[wk[:, None], d] | SLIDER[piece, wx, wk][np.arange(len(wk))[:, None], d]
    ok = (dest >= 0) & ~attacked & (d != wk[:, None])
    return np.where(ok, dest, -1)


def best_white_slot(piece: int, dtm_b: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The fastest-mating white move slot of white-to-move positions (the first slot among equals)."""
    wk, wx, bk = split_index(index)
    legal = white_moves(np.full(len(wk), piece), wk, wx, bk)
    after = dtm_b[white_successors(wk, wx, bk)]
    score = np.where(legal & (after >= 0), after, 10_000) + np.where(legal, 0, 10_000)
    return np.argmin(score, axis=1)


def black_reply(piece: int, dtm_w: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Black's longest-resisting king destination (-1 if none: mate or stalemate).

    A draw (taking the undefended piece, or any move to a position white cannot win) is
    preferred to every loss, then the longest mate; ties go to the lowest destination square.
    """
    wk, wx, bk = split_index(index)
    dest = black_moves(np.full(len(wk), piece), wk, wx, bk)
    after = dtm_w[position_index(wk[:, None], wx[:, None], np.maximum(dest, 0))]
    drawn = (dest == wx[:, None]) | (after < 0)
    score = np.where(dest < 0, -1, np.where(drawn, 10_000, after))
    best = np.argmax(score, axis=1)
    return dest[np.arange(len(wk)), best]


def chunked(fn: Callable[[np.ndarray], np.ndarray], index: np.ndarray, size: int = 32768) -> np.ndarray:
    """`fn` over index chunks (bounds the memory of [N, 72] intermediates)."""
    return np.concatenate([fn(index[i:i + size]) for i in range(0, len(index), size)])


@dataclass(frozen=True)
class Tablebase:
    """One material set: plies to mate for both sides to move, and the moves derived from them, per index."""

    material: str
    dtm_w: np.ndarray  # [262144] int16, white to move
    dtm_b: np.ndarray  # [262144] int16, black to move
    reply: np.ndarray  # [262144] int8, black_reply of black-to-move positions
    best: np.ndarray  # [262144] int8, best_white_slot of white-to-move positions

    @property
    def piece(self) -> int:
        return MATERIALS.index(self.material)


def build(material: str) -> Tablebase:
    """Retrograde analysis: mated positions first, then alternately the W and B positions one ply further."""
    piece = MATERIALS.index(material)
    index = np.arange(NUM_POSITIONS)
    wk, wx, bk = split_index(index)
    p = np.full(NUM_POSITIONS, piece)
    legal_w, legal_b = is_legal(p, wk, wx, bk, True), is_legal(p, wk, wx, bk, False)
    dtm_w = np.full(NUM_POSITIONS, -1, dtype=np.int16)
    dtm_b = np.full(NUM_POSITIONS, -1, dtype=np.int16)

    b_dest = black_moves(p, wk, wx, bk)
    b_next = position_index(wk[:, None], wx[:, None], np.maximum(b_dest, 0))
    b_has_move = (b_dest >= 0).any(1)
    b_can_take = (b_dest == wx[:, None]).any(1)
    dtm_b[legal_b & ~b_has_move & black_in_check(p, wk, wx, bk)] = 0
    b_open = np.flatnonzero(legal_b & b_has_move & ~b_can_take)  # B positions that may still be lost

    w_open = np.flatnonzero(legal_w)
    w_moves = white_moves(p[w_open], wk[w_open], wx[w_open], bk[w_open])
    w_next = white_successors(wk[w_open], wx[w_open], bk[w_open])
    ply = 1
    while True:
        won = (w_moves & (dtm_b[w_next] == ply - 1)).any(1)
        if not won.any():
            break
        dtm_w[w_open[won]] = ply
        w_open, w_moves, w_next = w_open[~won], w_moves[~won], w_next[~won]
        after = np.where(b_dest[b_open] >= 0, dtm_w[b_next[b_open]], 0)
        lost = (after >= 0).all(1)
        dtm_b[b_open[lost]] = after[lost].max(1) + 1
        b_open = b_open[~lost]
        ply += 2
    reply = chunked(lambda i: black_reply(piece, dtm_w, i), index).astype(np.int8)
    best = chunked(lambda i: best_white_slot(piece, dtm_b, i), index).astype(np.int8)
    return Tablebase(material, dtm_w, dtm_b, reply, best)


def cache_dir() -> Path:
    """Where built tablebases are kept: $TEXTRL_CACHE, else ~/.cache/textrl."""
    return Path(os.environ.get("TEXTRL_CACHE") or Path.home() / ".cache" / "textrl")


def content_key() -> str:
    """A key of what the tables depend on: this module's text and the python-chess version."""
    text = Path(__file__).read_bytes() + chess.__version__.encode()
    return hashlib.sha256(text).hexdigest()[:16]


@cache
def load(material: str) -> Tablebase:
    """The tablebase of `material` ("KQvK" or "KRvK"), built and cached on disk on first use."""
    if material not in MATERIALS:
        raise ValueError(f"unknown material {material!r}; known: {', '.join(MATERIALS)}")
    folder = cache_dir() / f"tablebase-{content_key()}"
    path = folder / f"{material}.npz"
    if not path.is_file():
        tables = {m: build(m) for m in MATERIALS}
        try:
            with atomic_directory(folder) as tmp:
                for m, tb in tables.items():
                    np.savez(tmp / f"{m}.npz", dtm_w=tb.dtm_w, dtm_b=tb.dtm_b, reply=tb.reply, best=tb.best)
        except OSError as e:
            warnings.warn(f"could not cache the endgame tablebases in {folder} ({e}); set TEXTRL_CACHE to a "
                          "writable folder to keep them between runs", stacklevel=2)
        return tables[material]
    with np.load(path) as data:
        return Tablebase(material, data["dtm_w"], data["dtm_b"], data["reply"], data["best"])
