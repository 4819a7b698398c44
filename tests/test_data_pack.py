"""Packing: rows match the Minari episodes, the cache, normalisation, batches, subsets and validation."""

import json
import math
import shutil
from pathlib import Path

import h5py
import minari
import numpy as np
import pytest
import torch
from gymnasium import spaces
from minari.data_collector import EpisodeBuffer

import textrl.data.cache as cache_module
from textrl.data import PackedDataset, check_vocab, load, load_tokenizer, make_dataset, pack
from textrl.data.packed_dataset import BATCH_KEYS, normalizer
from textrl.data.store import folder_of
from textrl.tasks import get_task

MAZE = "textrl/maze/mixed-v1"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pack-datasets")


@pytest.fixture(autouse=True)
def _root(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))


@pytest.fixture
def maze(root: Path):
    return make_dataset(MAZE, num_episodes=60, progress=False)


def _copy(dataset, dest: Path) -> Path:
    """A copy of a dataset's folder without its packed cache (to damage or change it)."""
    shutil.copytree(folder_of(dataset), dest, ignore=shutil.ignore_patterns("packed"))
    return dest


def test_rows_match_the_minari_episodes(maze) -> None:
    packed = pack(maze)
    batch = packed.batch(torch.arange(len(packed)))
    assert set(batch.keys()) == set(BATCH_KEYS) and batch.batch_size == torch.Size([60])
    for key in ("input_ids", "attention_mask", "action_ixs", "state_ixs"):
        assert batch[key].dtype == torch.long
    assert batch["action_mask"].dtype == torch.bool and batch["rewards"].dtype == torch.float32
    assert packed.vocab_size == get_task("maze").vocab_size and packed.pad_token_id == get_task("maze").pad_id
    assert packed.num_actions == maze.total_steps == int(batch["action_mask"].sum())
    for i, ep in enumerate(maze.iterate_episodes()):
        length = ep.observations["length"]
        t, n = len(ep.actions), int(length[-1])
        assert batch["input_ids"][i, :n].tolist() == ep.observations["input_ids"][-1][:n].tolist()
        assert (batch["input_ids"][i, n:] == packed.pad_token_id).all() and batch["attention_mask"][i].sum() == n
        assert batch["action_ixs"][i, :t].tolist() == (length[:-1] - 1).tolist()
        assert batch["input_ids"][i, batch["action_ixs"][i, :t] + 1].tolist() == ep.actions.tolist()
        assert batch["state_ixs"][i, : t + 1].tolist() == [*(length[:-1] - 1).tolist(), n - 1]
        assert batch["rewards"][i, :t].tolist() == pytest.approx(ep.rewards.tolist())
        assert batch["notdone"][i, :t].tolist() == [1.0] * (t - 1) + [0.0 if ep.terminations[-1] else 1.0]
        assert batch["returns"][i].item() == pytest.approx(ep.rewards.sum())
        assert not batch["action_mask"][i, t:].any() and (batch["rewards"][i, t:] == 0).all()
    assert packed.mean_return == pytest.approx(float(batch["returns"].double().mean()))
    # The maze is multi-turn: environment tokens sit between consecutive actions.
    assert (batch["action_ixs"][:, 1] - batch["action_ixs"][:, 0]).max() > 1


def test_a_batch_is_trimmed_to_its_longest_row(maze) -> None:
    packed = pack(maze)
    order = torch.argsort(packed.lengths)
    short = packed.batch(order[:3])
    assert short["input_ids"].shape[1] == int(packed.lengths[order[2]])
    assert short["action_ixs"].shape[1] == int(short["action_mask"].sum(1).max())
    assert short["state_ixs"].shape[1] == short["action_ixs"].shape[1] + 1
    assert packed.batch(order)["input_ids"].shape[1] == packed.max_tokens


def test_a_second_pack_reads_nothing_from_minari(maze, monkeypatch: pytest.MonkeyPatch) -> None:
    first = pack(maze)
    reads = []
    real_read = cache_module.read_packed_arrays
    monkeypatch.setattr(cache_module, "read_packed_arrays", lambda *a, **k: reads.append(1) or real_read(*a, **k))
    monkeypatch.setattr(cache_module, "_HDF5EpisodeReader", lambda *a, **k: pytest.fail("Minari's episodes were read"))
    again = pack(maze.spec.dataset_id)
    assert reads == []
    assert (again.batch(torch.arange(60)) == first.batch(torch.arange(60))).all()
    monkeypatch.undo()
    monkeypatch.setattr(cache_module, "read_packed_arrays", lambda *a, **k: reads.append(1) or real_read(*a, **k))
    other_pad = pack(maze, pad_token_id=1)  # another packing option is another cache entry
    assert reads == [1] and other_pad.pad_token_id == 1
    assert (other_pad.batch([0, 1])["input_ids"] != first.batch([0, 1])["input_ids"]).any()


def test_changed_content_is_repacked_and_paths_load(maze, tmp_path: Path) -> None:
    copy = _copy(maze, tmp_path / "copy")
    before = pack(copy)
    assert (before.returns == pack(maze).returns).all()
    with h5py.File(copy / "data" / "main_data.hdf5", "r+") as f:
        f["episode_0/rewards"][-1] = 100.0
    after = pack(copy)
    assert after.returns[0] == pytest.approx(before.returns[0] + 100.0 - float(before.batch([0])["rewards"][0, -1]))
    assert (after.returns[1:] == before.returns[1:]).all()
    assert len(list((copy / "packed").glob("*/info.json"))) == 2
    assert pack(maze).returns[0] == before.returns[0]


def test_an_interrupted_cache_write_leaves_no_cache(maze, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = _copy(maze, tmp_path / "copy")

    def die(*args, **kwargs):
        raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(cache_module, "save_arrays", die)
    with pytest.raises(KeyboardInterrupt, match="simulated interruption"):
        pack(copy)
    monkeypatch.undo()
    assert list((copy / "packed").glob("*/info.json")) == [] and not list((copy / "packed").glob(".*"))
    assert len(pack(copy)) == 60


def test_reward_normalisation(maze) -> None:
    rows = torch.arange(60)
    raw = pack(maze).batch(rows)
    returns = raw["returns"].double()
    z = pack(maze, reward_normalization="zscore").batch(rows)
    expected = (returns - returns.mean()) / returns.std(unbiased=False)
    assert z["rewards"].sum(1).double().numpy() == pytest.approx(expected.numpy(), abs=1e-5)
    assert (z["returns"] == raw["returns"]).all()  # returns are reported before normalisation
    s = pack(maze, reward_normalization="scale").batch(rows)
    assert s["rewards"].double().numpy() == pytest.approx((raw["rewards"] / returns.std(unbiased=False)).numpy(),
                                                         abs=1e-6)
    with pytest.raises(ValueError, match="reward_normalization must be one of"):
        pack(maze, reward_normalization="minmax")


@pytest.mark.parametrize("returns, shift, scale", [
    ([2.0, 2.0, 2.0], 2.0, 1.0),  # zero spread: shift only, never divide by zero
    ([5.0], 5.0, 1.0),
    ([1.0, math.nan, 3.0], 2.0, 1.0),  # NaN returns are left out of the statistics
    ([math.nan, math.nan], 0.0, 1.0),
])
def test_normaliser_never_divides_by_a_zero_or_nan_spread(returns, shift, scale) -> None:
    assert normalizer(torch.tensor(returns), "zscore") == pytest.approx((shift, scale))
    assert normalizer(torch.tensor(returns), "scale") == pytest.approx((0.0, scale))


def test_batches_shuffle_by_seed_and_cover_every_row(maze) -> None:
    packed = pack(maze)

    def order(seed, **kw):
        return torch.cat([b["returns"] for b in packed.batches(16, seed=seed, **kw)])

    sizes = [len(b) for b in packed.batches(16, seed=0)]
    assert sizes == [16, 16, 16, 12]
    assert [len(b) for b in packed.batches(16, seed=0, drop_last=True)] == [16, 16, 16]
    assert (order(3) == order(3)).all() and not (order(3) == order(4)).all()
    assert sorted(order(3).tolist()) == sorted(packed.returns.tolist())
    assert (order(0, shuffle=False) == packed.returns).all()
    assert [len(b) for b in packed.batches(1000)] == [60]  # a batch larger than the data: one batch of all rows
    with pytest.raises(ValueError, match="exceeds the 60 rows and drop_last=True"):
        next(packed.batches(1000, drop_last=True))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        next(packed.batches(0))


def test_select_keeps_storage_and_normalisation(maze) -> None:
    packed = pack(maze, reward_normalization="zscore")
    top = packed.select(torch.argsort(packed.returns, descending=True)[:10])
    assert len(top) == 10 and top.mean_return >= packed.mean_return
    assert top.returns.min() >= packed.returns.sort(descending=True).values[9]
    assert top.num_actions == int(top.batch(torch.arange(10))["action_mask"].sum())
    # The subset is scaled with the full data's statistics.
    mean, std = packed.returns.double().mean(), packed.returns.double().std(unbiased=False)
    sums = top.batch(torch.arange(10))["rewards"].sum(1).double()
    assert sums.numpy() == pytest.approx(((top.returns.double() - mean) / std).numpy(), abs=1e-5)
    masked = packed.select(packed.returns > packed.mean_return)
    assert (masked.returns > packed.mean_return).all() and isinstance(masked, PackedDataset)
    with pytest.raises(IndexError, match=r"row indices must lie in \[0, 10\)"):
        top.batch([10])
    with pytest.raises(ValueError, match="at least one row"):
        top.batch(torch.zeros(0, dtype=torch.long))


def test_check_vocab(maze) -> None:
    packed = pack(maze)
    check_vocab(packed, load_tokenizer(maze))
    check_vocab(packed, packed.vocab_size + 64)  # a model may have a padded, larger vocabulary
    with pytest.raises(ValueError, match="build the model with vocab_size >= "):
        check_vocab(packed, packed.vocab_size - 1)
    with pytest.raises(ValueError, match="tokens but the dataset's vocabulary has"):
        check_vocab(packed, get_task("randomwalks").tokenizer)
    tok = load_tokenizer(maze)
    swapped = dict(tok.get_vocab())
    swapped["left"], swapped["right"] = swapped["right"], swapped["left"]
    tok.get_vocab = lambda: swapped
    with pytest.raises(ValueError, match="same size but different tokens|different tokens"):
        check_vocab(packed, tok)
    with pytest.raises(TypeError, match="vocabulary size .int. or a tokenizer"):
        check_vocab(packed, "gpt2")


def _raw_dataset(dataset_id: str, obs_space, act_space, observations, actions) -> minari.MinariDataset:
    """A hand-made Minari dataset (for spaces that textrl's writers would never produce)."""
    t = len(actions)
    buffer = EpisodeBuffer(id=0, observations=observations, actions=actions, rewards=np.ones(t),
                           terminations=np.arange(t) == t - 1, truncations=np.zeros(t, bool), infos={})
    with pytest.warns(UserWarning):
        return minari.create_dataset_from_buffers(dataset_id, [buffer], observation_space=obs_space,
                                                  action_space=act_space, algorithm_name="test")


def test_wrong_spaces_are_rejected() -> None:
    box_obs = _raw_dataset("bad/box-obs-v0", spaces.Box(0, 9, (4,), np.int64), spaces.Discrete(10),
                           np.zeros((3, 4), np.int64), np.array([1, 2]))
    with pytest.raises(ValueError, match="observation space is Box.*Dict"):
        pack(box_obs)
    obs_space = spaces.Dict({"input_ids": spaces.Box(0, 9, (4,), np.uint8), "length": spaces.Box(0, 4, (), np.int32)})
    obs = {"input_ids": np.zeros((3, 4), np.uint8), "length": np.array([1, 2, 3], np.int32)}
    box_act = _raw_dataset("bad/box-act-v0", obs_space, spaces.Box(0, 1, (2,)), obs, np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="action space is Box.*not Discrete"):
        pack(box_act)
    small_act = _raw_dataset("bad/small-act-v0", obs_space, spaces.Discrete(5), obs, np.array([0, 0]))
    with pytest.raises(ValueError, match="must share one vocabulary"):
        pack(small_act)


def test_inconsistent_episodes_are_rejected(maze, tmp_path: Path) -> None:
    copy = _copy(maze, tmp_path / "short")
    with h5py.File(copy / "data" / "main_data.hdf5", "r+") as f:
        rewards = f["episode_3/rewards"][()]
        del f["episode_3/rewards"]
        f["episode_3/rewards"] = rewards[:-1]
    with pytest.raises(ValueError, match="episode 3 has 6 observations, 5 actions, 4 rewards"):
        pack(copy)
    copy = _copy(maze, tmp_path / "actions")
    with h5py.File(copy / "data" / "main_data.hdf5", "r+") as f:
        f["episode_5/actions"][0] = (f["episode_5/actions"][0] + 1) % 4 + 2
    with pytest.raises(ValueError, match="episode 5: its actions are not the tokens"):
        pack(copy)


def test_damaged_files_are_rejected(maze, tmp_path: Path) -> None:
    truncated = _copy(maze, tmp_path / "truncated")
    data = truncated / "data" / "main_data.hdf5"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(ValueError, match="damaged or truncated"):
        load(truncated)
    garbage = _copy(maze, tmp_path / "garbage")
    (garbage / "data" / "main_data.hdf5").write_bytes(b"not hdf5" * 100)
    with pytest.raises(ValueError, match="damaged or truncated"):
        pack(garbage)
    missing = _copy(maze, tmp_path / "missing")
    meta = json.loads((missing / "data" / "metadata.json").read_text())
    meta["total_episodes"] += 1
    (missing / "data" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="lacks episode_60"):
        load(missing)
    bad_meta = _copy(maze, tmp_path / "bad-meta")
    (bad_meta / "data" / "metadata.json").write_text("{")
    with pytest.raises(ValueError, match="cannot open the dataset"):
        load(bad_meta)
    with pytest.raises(FileNotFoundError, match="not a Minari dataset folder"):
        load(tmp_path)
    with pytest.raises(TypeError, match="expected a MinariDataset, a dataset id or a folder"):
        load(3)


def test_a_damaged_cache_gets_a_clear_error(maze, tmp_path: Path) -> None:
    copy = _copy(maze, tmp_path / "copy")
    good = pack(copy).batch(np.arange(60))
    (cache,) = (copy / "packed").glob("*/info.json")
    cache = cache.parent
    cache.joinpath("info.json").write_text("{")
    with pytest.raises(ValueError, match="packed cache .* is unreadable.*delete the folder"):
        PackedDataset.load(cache)
    with pytest.warns(UserWarning, match="is unreadable.*repacking it"):
        assert (pack(copy).batch(np.arange(60)) == good).all()


def _tokens_file(cache: Path) -> Path:
    (path,) = [p for p in (cache / "tensors").rglob("tokens*") if p.is_file() and p.suffix != ".json"]
    return path


@pytest.mark.parametrize("damage, message", [
    (lambda f: f.write_bytes(b""), "has 0 bytes, not the"),
    (lambda f: f.write_bytes(f.read_bytes()[:-7]), "truncated or emptied"),
    (lambda f: f.write_bytes(bytes([255]) * f.stat().st_size), "does not match its checksum"),
    (lambda f: f.unlink(), "lacks tensors/"),
])
def test_emptied_truncated_garbled_or_missing_cache_files_are_refused_or_repacked(maze, tmp_path: Path, damage,
                                                                                  message: str) -> None:
    copy = _copy(maze, tmp_path / "copy")
    good = pack(copy)
    expected = good.batch(np.arange(60))
    cache = next((copy / "packed").glob("*/info.json")).parent
    damage(_tokens_file(cache))
    with pytest.raises(ValueError, match=message):
        PackedDataset.load(cache)
    with pytest.warns(UserWarning, match=f"{message}.*repacking it from the dataset"):
        repacked = pack(copy)
    batch = repacked.batch(np.arange(60))
    assert (batch == expected).all() and int(batch["input_ids"].max()) < repacked.vocab_size
    PackedDataset.load(cache)  # the rebuilt cache passes its own check


def test_a_cache_without_checksums_is_repacked(maze, tmp_path: Path) -> None:
    copy = _copy(maze, tmp_path / "copy")
    pack(copy)
    info_path = next((copy / "packed").glob("*/info.json"))
    info = json.loads(info_path.read_text())
    del info["checksums"]
    info_path.write_text(json.dumps(info))
    with pytest.raises(ValueError, match="records no checksums"):
        PackedDataset.load(info_path.parent)
    with pytest.warns(UserWarning, match="records no checksums"):
        pack(copy)
    assert "checksums" in json.loads(info_path.read_text())
