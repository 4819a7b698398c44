"""Endgames: move generation and tablebase against python-chess, the rules, references, envs, datasets and agents."""

from __future__ import annotations

import chess
import gymnasium
import minari
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import textrl  # noqa: F401
from textrl import make_dataset, task_config
from textrl.data.store import env_id_of
from textrl.env import TokenEnv, TokenVectorEnv
from textrl.rollout import evaluate
from textrl.tasks import EndgamesTask, get_task
from textrl.tasks import endgames as eg
from textrl.tasks import tablebase as tb

MATERIALS = tb.MATERIALS


@pytest.fixture(scope="module")
def task() -> EndgamesTask:
    return get_task("endgames")


def board(piece: int, index: int, white_to_move: bool = True) -> chess.Board:
    b = eg.board_of(piece, index)
    b.turn = chess.WHITE if white_to_move else chess.BLACK
    return b


def index_of(b: chess.Board) -> int:
    """The flat index of a three-piece board (white king, white piece, black king)."""
    wk, bk = b.king(chess.WHITE), b.king(chess.BLACK)
    (wx,) = [s for s, p in b.piece_map().items() if p.color == chess.WHITE and p.piece_type != chess.KING]
    return int(tb.position_index(wk, wx, bk))


def sample(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, tb.NUM_POSITIONS, size=n)


def play(task: EndgamesTask, fen_board: str, moves: list[str], **options) -> list[tuple]:
    """Step a single env from a board through UCI moves; (obs, reward, terminated, truncated) per step."""
    env = TokenEnv(task)
    env.reset(options={"prompt": written(fen_board)})
    return [env.step(task.token_to_id[m])[:4] for m in moves]


def written(fen_board: str) -> str:
    """A FEN board field as the env writes a position: one token per square, then "w"."""
    return " ".join(eg.expand_board_fen(fen_board)) + " w"


def last_position(task: EndgamesTask, obs: dict) -> str:
    """The FEN board field of the last position in an observation."""
    end = int(obs["length"])
    assert task.vocab[int(obs["input_ids"][end - 1])] == "w"
    return eg.collapse_board(task.decode(obs["input_ids"][end - 65:end - 1]).replace(" ", ""))


# ---------------------------------------------------------------------- vocabulary and move generation


def test_vocabulary_holds_every_uci_move(task):
    moves = eg.uci_moves()
    assert len(moves) == len(set(moves)) == 1968 and task.vocab_size == 1984
    assert all(chess.Move.from_uci(m).uci() == m for m in moves)
    for fen in (chess.STARTING_FEN, "r3k2r/1P4P1/8/8/8/8/1p4p1/R3K2R w KQkq - 0 1",
                "r3k2r/1P4P1/8/8/8/8/1p4p1/R3K2R b KQkq - 0 1"):
        assert {m.uci() for m in chess.Board(fen).legal_moves} <= set(moves)


@pytest.mark.parametrize("piece", [0, 1])
def test_move_generation_matches_python_chess(piece):
    index = sample(1500, piece)
    wk, wx, bk = tb.split_index(index)
    p = np.full(len(index), piece)
    legal_w, legal_b = tb.is_legal(p, wk, wx, bk, True), tb.is_legal(p, wk, wx, bk, False)
    slots = tb.white_moves(p, wk, wx, bk)
    frm, to = tb.slot_destinations(wk, wx)
    dest = tb.black_moves(p, wk, wx, bk)
    checked = 0
    for r, i in enumerate(index):
        if wk[r] in (wx[r], bk[r]) or wx[r] == bk[r]:
            assert not legal_w[r] and not legal_b[r]
            continue
        white, black = board(piece, i, True), board(piece, i, False)
        assert legal_w[r] == white.is_valid() and legal_b[r] == black.is_valid()
        if legal_w[r]:
            ours = {chess.Move(int(frm[r, s]), int(to[r, s])) for s in np.flatnonzero(slots[r])}
            assert ours == set(white.legal_moves)
            checked += 1
        if legal_b[r]:
            assert {chess.Move(int(bk[r]), int(d)) for d in dest[r] if d >= 0} == set(black.legal_moves)
            assert bool(tb.black_in_check(piece, wk[r], wx[r], bk[r])) == black.is_check()
    assert checked > 500


def test_single_move_legality_matches_python_chess():
    index = sample(300, 5)
    piece = np.arange(len(index)) % 2
    wk, wx, bk = tb.split_index(index)
    keep = tb.is_legal(piece, wk, wx, bk, True)
    piece, wk, wx, bk, index = piece[keep], wk[keep], wx[keep], bk[keep], index[keep]
    frm, to = (np.append(v, -1) for v in np.divmod(np.arange(4096), 64))  # every from-to pair, and no move
    ok = tb.white_move_is_legal(piece[:, None], wk[:, None], wx[:, None], bk[:, None], frm[None], to[None])
    for r in range(len(index)):
        legal = {(m.from_square, m.to_square) for m in board(int(piece[r]), int(index[r])).legal_moves}
        assert {(int(frm[k]), int(to[k])) for k in np.flatnonzero(ok[r])} == legal


def test_positions_are_written_one_token_per_square_as_python_chess_fen(task):
    index = sample(3000, 7)
    piece = np.arange(len(index)) % 2
    legal = tb.is_legal(piece, *tb.split_index(index), True)
    piece, index = piece[legal], index[legal]
    tokens = task.position_tokens(piece, *tb.split_index(index))
    assert tokens.shape == (len(index), eg.POSITION_TOKENS) and task.max_length == 66 * task.max_moves
    for r in range(0, len(index), 7):
        fen = board(int(piece[r]), int(index[r])).board_fen()
        assert task.decode(tokens[r]) == written(fen) and eg.collapse_board(eg.expand_board_fen(fen)) == fen
    read = task.read_positions(tokens[:, :-1])
    assert read[-1].all()
    for got, want in zip(read[:4], (piece, *tb.split_index(index))):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------- tablebase


def test_tablebase_known_maxima_and_cache():
    assert tb.load("KQvK") is tb.load("KQvK")  # one table per process, from the disk cache after the first build
    assert (tb.cache_dir() / f"tablebase-{tb.content_key()}" / "KRvK.npz").is_file()
    for material, mate_in in (("KQvK", 10), ("KRvK", 16)):
        table = tb.load(material)
        assert table.dtm_w.max() == 2 * mate_in - 1 and table.dtm_b.max() == 2 * mate_in
        worst = board(table.piece, int(np.argmax(table.dtm_w)))
        assert worst.is_valid() and not worst.is_game_over()
    with pytest.raises(ValueError, match="unknown material"):
        tb.load("KBNvK")


@pytest.mark.parametrize("piece", [0, 1])
def test_tablebase_is_consistent_with_python_chess_moves(piece):
    """Each sampled value is the minimax of its successors' values over python-chess's legal moves."""
    table = tb.load(MATERIALS[piece])
    index = sample(400, 10 + piece)
    for i in index:
        for white in (True, False):
            b = board(piece, int(i), white)
            if not b.is_valid():
                assert (table.dtm_w if white else table.dtm_b)[i] == -1
                continue
            values = []
            for move in b.legal_moves:
                b.push(move)
                drawn = b.is_insufficient_material()
                values.append(-1 if drawn else int((table.dtm_b if white else table.dtm_w)[index_of(b)]))
                b.pop()
            if white:
                wins = [v for v in values if v >= 0]
                assert table.dtm_w[i] == (1 + min(wins) if wins else -1)
            elif b.is_checkmate():
                assert table.dtm_b[i] == 0
            else:
                lost = values and min(values) >= 0
                assert table.dtm_b[i] == (1 + max(values) if lost else -1)


def mate_within(b: chess.Board, moves: int) -> bool:
    """Brute force with python-chess: can white (to move) force mate within `moves` moves?"""
    if moves < 1:
        return False
    for move in list(b.legal_moves):
        b.push(move)
        if b.is_checkmate():
            b.pop()
            return True
        forced = moves > 1 and not b.is_game_over()
        if forced:
            for reply in list(b.legal_moves):
                b.push(reply)
                forced = not b.is_insufficient_material() and mate_within(b, moves - 1)
                b.pop()
                if not forced:
                    break
        b.pop()
        if forced:
            return True
    return False


@pytest.mark.parametrize("piece", [0, 1])
def test_mate_in_n_agrees_with_brute_force_search(piece):
    table = tb.load(MATERIALS[piece])
    rng = np.random.default_rng(piece)
    for mate_in in (1, 2):
        for i in rng.choice(np.flatnonzero(table.dtm_w == 2 * mate_in - 1), 3, replace=False):
            b = board(piece, int(i))
            assert mate_within(b, mate_in) and not mate_within(b, mate_in - 1)
    i = rng.choice(np.flatnonzero(table.dtm_w == 5))
    assert not mate_within(board(piece, int(i)), 2)


# ---------------------------------------------------------------------- rules through the env


def test_mating_move_scores_one(task):
    # king on g6, rook on a1, black king on h8: a1a8 mates.
    (_, reward, terminated, truncated), = play(task, "7k/8/6K1/8/8/8/8/R7", ["a1a8"])
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert chess.Board("R6k/8/6K1/8/8/8/8/8 b - - 0 1").is_checkmate()


@pytest.mark.parametrize("move", ["e2e4", "g6g7", "g6g8", "a1b2", "h8g8"])
def test_illegal_moves_end_with_minus_one(task, move):
    # no piece on e2; the king may not step next to the black king nor two squares; a rook does not
    # move diagonally; white does not move black's king.
    obs, reward, terminated, truncated = play(task, "7k/8/6K1/8/8/8/8/R7", [move])[0]
    assert chess.Move.from_uci(move) not in chess.Board("7k/8/6K1/8/8/8/8/R7 w - - 0 1").legal_moves
    assert (reward, terminated, truncated) == (-1.0, True, False)
    assert task.decode(obs["input_ids"][obs["length"] - 1:obs["length"]]) == move  # no reply appended


def test_non_move_token_is_illegal(task):
    env = TokenEnv(task)
    env.reset(seed=0)
    for token in (task.eos_id, task.token_to_id["K"], task.token_to_id["a7a8q"]):
        env.reset(seed=0)
        assert env.step(token)[1:4] == (-1.0, True, False)


def test_stalemate_ends_with_zero(task):
    (obs, reward, terminated, truncated), = play(task, "7k/5K2/8/8/8/8/8/6Q1", ["g1g6"])
    assert (reward, terminated, truncated) == (0.0, True, False)
    assert chess.Board("7k/5K2/6Q1/8/8/8/8/8 b - - 0 1").is_stalemate()


def test_black_takes_the_hanging_piece_and_the_game_is_drawn(task):
    (obs, reward, terminated, truncated), = play(task, "4k3/8/8/8/8/8/8/3QK3", ["d1d7"])
    assert (reward, terminated, truncated) == (0.0, True, False)
    b = chess.Board("4k3/8/8/8/8/8/8/3QK3 w - - 0 1")
    b.push_uci("d1d7")
    b.push_uci("e8d7")
    assert b.is_insufficient_material()
    assert task.decode(obs["input_ids"][obs["length"] - 66:obs["length"] - 65]) == "d1d7"
    assert last_position(task, obs) == b.board_fen()  # the reply is shown, then the game ends


def test_black_resists_longest_and_the_budget_is_a_termination():
    task = get_task("endgames", max_moves=2)
    assert task.max_length == 2 * 66
    steps = play(task, "8/8/8/3k4/8/8/8/R3K3", ["a1a2", "a2a3"])
    (obs, reward, terminated, truncated) = steps[0]
    assert (reward, terminated, truncated) == (0.0, False, False)
    b = chess.Board("8/8/8/3k4/8/8/8/R3K3 w - - 0 1")
    b.push_uci("a1a2")
    table = tb.load("KRvK")
    lengths = {}
    for m in b.legal_moves:
        b.push(m)
        lengths[b.board_fen()] = int(table.dtm_w[index_of(b)])
        b.pop()
    assert lengths[last_position(task, obs)] == max(lengths.values())  # the board shows black's reply
    assert steps[1][1:] == (0.0, True, False)  # the budget: terminated, never truncated
    assert steps[1][0]["length"] == steps[0][0]["length"] + 1  # no reply after the last move


def test_every_black_reply_is_followed_by_the_position_python_chess_reaches(task):
    n = 16
    rng = np.random.default_rng(5)
    vec = TokenVectorEnv(task, n)
    obs, _ = vec.reset(seed=1)
    boards = [chess.Board(last_position(task, {k: v[r] for k, v in obs.items()}) + " w - - 0 1") for r in range(n)]
    live = np.ones(n, dtype=bool)
    while live.any():
        actions = task.behaviour_policy(0.5)(obs, rng)
        obs, reward, terminated, truncated, _ = vec.step(actions)
        for r in np.flatnonzero(live):
            o = {k: v[r] for k, v in obs.items()}
            boards[r].push_uci(task.vocab[int(actions[r])])
            if terminated[r] and task.vocab[int(o["input_ids"][o["length"] - 1])] != "w":
                assert boards[r].is_checkmate() or boards[r].is_stalemate() or len(boards[r].move_stack) == 2 * task.max_moves - 1
                live[r] = False
                continue
            # the move token, then one legal black reply away: the position as python-chess has it
            assert task.decode(o["input_ids"][o["length"] - 66:o["length"] - 65]) == task.vocab[int(actions[r])]
            (reply,) = [m for m in boards[r].legal_moves if _after(boards[r], m) == last_position(task, o)]
            boards[r].push(reply)
            live[r] &= not terminated[r]
    assert obs["length"].max() > 66 * 5


def test_endgames_v0_and_its_datasets_are_refused():
    with pytest.raises(ValueError, match=r"Endgames-v0 is retired: .*appended after every black reply.*"
                                         r"use textrl/Endgames-v1"):
        get_task("textrl/Endgames-v0")
    with pytest.raises(ValueError, match=r"-v1 was played on textrl/Endgames-v0.*use textrl/endgames/mixed-v2"):
        make_dataset("textrl/endgames/mixed-v1")


@pytest.mark.parametrize("prompt", [
    " ".join(eg.expand_board_fen("8/8/8/3k4/8/8/8/R3K3")),  # no side token
    written("8/8/8/3k4/8/8/8/RR2K3"),  # two rooks
    written("8/8/8/3k4/8/8/8/R3K3")[2:],  # 63 squares
    written("8/8/8/8/8/8/3k4/R3K3"),  # the kings touch
    written("8/8/8/3k4/8/8/8/R3K3").replace("R", "e1e2"),  # a move among the squares
    written("k7/8/8/8/8/8/8/R3K3"),  # black in check with white to move
])
def test_bad_prompts_are_refused(task, prompt):
    env = TokenEnv(task)
    with pytest.raises(ValueError, match="64 square tokens|legal K"):
        env.reset(options={"prompt": prompt})


# ---------------------------------------------------------------------- starts, references, policies


def test_start_splits_are_disjoint_up_to_symmetry_and_need_five_moves(task):
    train = get_task("endgames", split="train")
    assert task.dataset_task().split == "train" and task.dataset_task().starts == train.starts
    assert train.dataset_task().split == "train"
    assert len(task.starts) == 2 * eg.EVAL_STARTS and len(train.starts) == 269_200
    for material in MATERIALS:
        table = tb.load(material)
        splits = eg.start_positions(material)
        canonical = {k: set(eg.transform(v[None], np.arange(8)[:, None]).min(0).tolist()) for k, v in splits.items()}
        assert not canonical["eval"] & canonical["train"] and len(canonical["eval"]) == eg.EVAL_STARTS
        # training holds every mate-in->=5 position outside the evaluation classes
        candidates = np.flatnonzero(table.dtm_w >= 9)
        in_eval = np.isin(eg.transform(candidates[None], np.arange(8)[:, None]).min(0), list(canonical["eval"]))
        np.testing.assert_array_equal(np.sort(splits["train"]), candidates[~in_eval])
        assert (table.dtm_w[splits["eval"]] >= 9).all()
        assert not set(splits["valid"].tolist()) & set(splits["test"].tolist())
        assert sorted([*splits["valid"], *splits["test"]]) == sorted(splits["eval"])
    valid, test = get_task("endgames", split="valid"), get_task("endgames", split="test")
    assert len(valid.starts) == len(test.starts) == eg.EVAL_STARTS and not set(valid.starts) & set(test.starts)
    assert valid.ref_max_score == test.ref_max_score == 1.0 and valid.ref_min_score != test.ref_min_score
    with pytest.raises(ValueError, match="split must be one of"):
        get_task("endgames", split="validation")
    with pytest.raises(ValueError, match="max_moves"):
        get_task("endgames", max_moves=0)


def test_optimal_play_mates_every_evaluation_start_in_the_tablebase_depth(task):
    prompts = [task.decode(task.prompt_of(p, i)) for p, i in task.starts]
    env = TokenVectorEnv(task, len(prompts))
    obs, _ = env.reset(seed=0, options={"prompts": prompts})
    rng = np.random.default_rng(0)
    done = np.zeros(len(prompts), dtype=bool)
    moves = np.zeros(len(prompts), dtype=int)
    total = np.zeros(len(prompts))
    while not done.all():
        obs, reward, terminated, truncated, _ = env.step(task.optimal_policy(obs, rng))
        total += reward * ~done
        moves += ~done
        assert not truncated.any()
        done |= terminated
    depth = np.array([(tb.load(MATERIALS[p]).dtm_w[i] + 1) // 2 for p, i in task.starts])
    assert (total == 1.0).all() and (moves == depth).all()
    assert task.ref_max_score == 1.0 and depth.max() == 16


def uniform_value_by_search(task: EndgamesTask, b: chess.Board, moves_left: int) -> float:
    """The uniform policy's expected return by full game-tree recursion over python-chess boards."""
    legal = list(b.legal_moves)
    v = task.vocab_size
    value = -(v - len(legal)) / v
    for move in legal:
        b.push(move)
        if b.is_checkmate():
            value += 1 / v
        elif not b.is_stalemate() and moves_left > 1:
            table = tb.load("KQvK" if b.pieces(chess.QUEEN, chess.WHITE) else "KRvK")
            replies = []
            for reply in b.legal_moves:  # black: a draw first, then the longest mate, then the lowest square
                b.push(reply)
                drawn = b.is_insufficient_material()
                replies.append((drawn, -1 if drawn else int(table.dtm_w[index_of(b)]), -reply.to_square, reply))
                b.pop()
            *_, best = max(replies)
            b.push(best)
            if not b.is_insufficient_material():
                value += uniform_value_by_search(task, b, moves_left - 1) / v
            b.pop()
        b.pop()
    return value


def test_ref_min_is_the_uniform_policy_value(task):
    short = get_task("endgames", max_moves=3)
    for piece, i in (short.starts[0], short.starts[-1]):
        exact = eg.uniform_values(MATERIALS[piece], 3, task.vocab_size)[i]
        assert exact == pytest.approx(uniform_value_by_search(short, board(piece, i), 3), abs=1e-14)
    assert task.ref_min_score == pytest.approx(-0.9991794183496956, abs=1e-15)
    assert task.ref_min_score < short.ref_min_score  # more moves, more chances of an illegal token
    result = evaluate(task.random_policy, task, num_episodes=512, seed=1)
    assert result.mean_return <= -0.99 and result.lengths.max() <= 1 + 66 * 2


def test_exploration_is_uniform_over_legal_moves_and_tiers_mix(task):
    result = evaluate(task.exploration_policy, task, num_episodes=256, seed=0)
    assert result.returns.min() >= 0.0  # a legal move is never punished
    prompt = task.prompt_of(1, int(tb.position_index(4, 0, 35)))  # Ke1, Ra1, kd5
    ids = np.full((4000, task.max_length), task.pad_id, dtype=task.obs_dtype)
    ids[:, :len(prompt)] = prompt
    obs = {"input_ids": ids, "length": np.full(4000, len(prompt))}
    counts = np.unique(task.exploration_policy(obs, np.random.default_rng(0)), return_counts=True)[1]
    b = board(1, int(tb.position_index(4, 0, 35)))
    assert len(counts) == b.legal_moves.count() and counts.min() > 4000 / len(counts) * 0.6
    mixed = evaluate(task.behaviour_policy(task.tiers["mixed"]), task, num_episodes=256, seed=0).mean_return
    assert 0.0 < mixed < 1.0


# ---------------------------------------------------------------------- envs


def test_registered_env_evaluates_on_the_evaluation_split_and_passes_check_env(task):
    env = gymnasium.make("textrl/Endgames-v1")
    assert env.unwrapped.task is task and env.unwrapped.task.split == "eval"
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs) and obs["input_ids"].dtype == np.uint16
    env.close()


def test_vector_env_matches_single_envs(task):
    n, steps = 8, 40
    rng = np.random.default_rng(3)
    prompts = [task.decode(task.sample_prompt(rng)) for _ in range(n)]
    vec = TokenVectorEnv(task, n)
    obs, _ = vec.reset(seed=0, options={"prompts": prompts})
    singles = [TokenEnv(task) for _ in range(n)]
    single_obs = [e.reset(options={"prompt": p})[0] for e, p in zip(singles, prompts)]
    ended = np.zeros(n, dtype=bool)
    for _ in range(steps):
        actions = task.behaviour_policy(0.5)(obs, rng)
        actions[rng.random(n) < 0.05] = task.token_to_id["a1h8"]  # an occasional illegal move
        obs, reward, terminated, truncated, _ = vec.step(actions)
        for k in np.flatnonzero(~ended):
            o, r, te, tr, _ = singles[k].step(int(actions[k]))
            assert (r, te, tr) == (reward[k], terminated[k], truncated[k])
            np.testing.assert_array_equal(o["input_ids"], obs["input_ids"][k])
            single_obs[k] = o
        ended |= terminated | truncated
    assert ended.any()


# ---------------------------------------------------------------------- datasets and agents


@pytest.fixture(scope="module")
def small_data():
    return make_dataset("textrl/endgames/mixed-n60-v2", progress=False)


def test_dataset_builds_on_the_training_starts_and_loads_with_minari(small_data, task):
    loaded = minari.load_dataset("textrl/endgames/mixed-n60-v2")
    assert loaded.total_episodes == 60
    assert env_id_of(loaded) == "textrl/Endgames-v1"
    assert loaded.storage.metadata["ref_min_score"] == task.ref_min_score
    assert loaded.storage.metadata["ref_max_score"] == 1.0
    train = get_task("endgames", split="train")
    prompts = np.array([task.encode(m["options"]["prompt"]) for m in loaded.storage.get_episode_metadata(range(60))])
    piece, wk, wx, bk, ok = task.read_positions(prompts[:, :-1])
    starts = set(zip(piece.tolist(), tb.position_index(wk, wx, bk).tolist()))
    assert ok.all() and starts <= set(train.starts) and not starts & set(task.starts)
    for episode in loaded.iterate_episodes(range(5)):
        assert episode.terminations[-1] and not episode.truncations.any()


@pytest.mark.parametrize("agent", ["bc", "ilql"])
def test_bc_and_ilql_fit_and_act(small_data, agent, tmp_path):
    from agents.registry import AGENTS

    cfg = task_config("endgames", agent, total_steps=2, batch_size=4, eval_interval=2, checkpoint_interval=2,
                      eval_episodes=4, progress_bar=False, checkpoint_dir=str(tmp_path / agent), tracker="none")
    model = AGENTS[agent](cfg)
    history = model.fit(small_data)
    assert any("eval/score" in h for h in history)
    env = gymnasium.make("textrl/Endgames-v1")
    obs, _ = env.reset(seed=0)
    assert env.action_space.contains(model.act(obs))


# ---------------------------------------------------------------------- the Stockfish opponent

needs_stockfish = pytest.mark.skipif(eg.find_stockfish() is None, reason="the stockfish binary is not installed "
                                     "(apt-get install stockfish, or set STOCKFISH); .ci/run installs it")


def test_stockfish_task_without_the_binary_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("STOCKFISH", str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match="apt-get install stockfish"):
        eg.EndgamesStockfishTask()


@needs_stockfish
def test_stockfish_opponent_replies_legally_and_optimal_white_still_mates():
    task = get_task("textrl/EndgamesStockfish-v1")
    assert (task.ref_min_score, task.ref_max_score) == (get_task("endgames").ref_min_score, 1.0)
    env = gymnasium.make("textrl/EndgamesStockfish-v1")
    texts = []
    for start in (0, len(task.starts) - 1):
        for _ in range(2):  # the same game twice: the engine's replies are deterministic
            prompt = task.decode(task.prompt_of(*task.starts[start]))
            obs, info = env.reset(options={"prompt": prompt})
            depth = (tb.load(MATERIALS[task.starts[start][0]]).dtm_w[task.starts[start][1]] + 1) // 2
            b = chess.Board(eg.collapse_board(prompt.replace(" ", "")[:-1]) + " w - - 0 1")
            for _ in range(depth):
                move = int(task.optimal_policy({k: np.asarray(v)[None] for k, v in obs.items()},
                                               np.random.default_rng(0))[0])
                obs, reward, terminated, truncated, info = env.step(move)
                b.push_uci(task.vocab[move])
                if terminated:
                    break
                replies = [m for m in b.legal_moves if _after(b, m) == last_position(task, obs)]
                assert len(replies) == 1  # the shown board is one legal black reply away
                b.push(replies[0])
            assert (reward, terminated, truncated) == (1.0, True, False) and b.is_checkmate()
            texts.append(info["text"])
    assert texts[0] == texts[1] and texts[2] == texts[3]


def _after(b: chess.Board, move: chess.Move) -> str:
    """The board field after a move (the board itself unchanged)."""
    b.push(move)
    fen = b.board_fen()
    b.pop()
    return fen
