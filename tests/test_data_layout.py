"""The bulk hdf5 writer is read by Minari exactly like Minari's own writer, and its packed cache equals a repack."""

import shutil
import warnings
from pathlib import Path

import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

import textrl.data.cache as cache_module
import textrl.data.hdf5 as hdf5_module
from textrl.data import from_samples, make_dataset, pack, task_dataset_id
from textrl.data.cache import CACHE_DIR
from textrl.data.hdf5 import EpisodeFile
from textrl.data.store import folder_of
from textrl.tasks import TASKS, get_task


@pytest.fixture(autouse=True)
def _fresh_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))


def _minari_copy(dataset: minari.MinariDataset, dataset_id: str) -> minari.MinariDataset:
    """The same episodes written by Minari's own writer (`create_dataset_from_buffers`)."""
    metas = list(dataset.storage.get_episode_metadata(range(dataset.total_episodes)))
    buffers = [EpisodeBuffer(id=ep.id, options=meta["options"], observations=ep.observations, actions=ep.actions,
                             rewards=ep.rewards, terminations=ep.terminations, truncations=ep.truncations, infos={})
               for ep, meta in zip(dataset.iterate_episodes(), metas)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return minari.create_dataset_from_buffers(dataset_id, buffers, observation_space=dataset.observation_space,
                                                  action_space=dataset.action_space)


def _assert_same_episodes(ours: minari.MinariDataset, theirs: minari.MinariDataset) -> None:
    assert (ours.total_episodes, ours.total_steps) == (theirs.total_episodes, theirs.total_steps)
    assert ours.observation_space == theirs.observation_space and ours.action_space == theirs.action_space
    for a, b in zip(ours.iterate_episodes(), theirs.iterate_episodes(), strict=True):
        assert a.id == b.id and a.infos == b.infos == {}
        assert a.observations.keys() == b.observations.keys()
        for key in a.observations:
            assert a.observations[key].dtype == b.observations[key].dtype
            np.testing.assert_array_equal(a.observations[key], b.observations[key])
        for field in ("actions", "rewards", "terminations", "truncations"):
            x, y = getattr(a, field), getattr(b, field)
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(x, y)
    n = ours.total_episodes
    ours_meta = list(ours.storage.get_episode_metadata(range(n)))
    theirs_meta = list(theirs.storage.get_episode_metadata(range(n)))
    assert ours_meta == theirs_meta
    assert all(isinstance(m["options"]["text"], str) and m["total_steps"] > 0 for m in ours_meta)


def _assert_cache_equals_repack(dataset: minari.MinariDataset) -> None:
    cached = pack(dataset)
    shutil.rmtree(folder_of(dataset) / CACHE_DIR)
    repacked = pack(dataset)
    assert cached.info == repacked.info
    for key in cached.td.keys():
        assert cached.td[key].dtype == repacked.td[key].dtype
        assert (cached.td[key] == repacked.td[key]).all(), key


def _needs_engine(task: str) -> list:
    """Stockfish-backed tasks skip where the engine is not installed, as in test_endgames.py."""
    from textrl.tasks.endgames import find_stockfish

    missing = task == "endgames_stockfish" and find_stockfish() is None
    return [pytest.mark.skipif(missing, reason="the stockfish binary is not installed (apt-get install stockfish, "
                                               "or set STOCKFISH); .ci/run installs it")]


@pytest.mark.parametrize("task", [pytest.param(t, marks=_needs_engine(t)) for t in TASKS])
def test_every_task_reads_back_as_minaris_writer_would_write_it(task: str) -> None:
    tier = next(iter(get_task(task).tiers))
    ours = make_dataset(task_dataset_id(task, tier), num_episodes=25, progress=False)
    assert next(folder_of(ours).glob(f"{CACHE_DIR}/*/info.json")), "the writer did not leave a packed cache"
    _assert_same_episodes(minari.load_dataset(ours.spec.dataset_id), _minari_copy(ours, f"copy/{task}-v1"))
    _assert_cache_equals_repack(ours)


def test_imported_samples_read_back_as_minaris_writer_would_write_them() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<eos>", "<bos>", "q", "a", "b", "user", "bot"]
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>")
    # Long enough samples that their observations are stored chunked and compressed, not compact.
    long = " ".join(["a", "b"] * 200)
    ours = from_samples(["q a b", ["user q", "a b", "user", "bot a"], long], [1.0, -0.5, 2.0], tok,
                        "imported/layout-v1", progress=False)
    _assert_same_episodes(minari.load_dataset("imported/layout-v1"), _minari_copy(ours, "copy/samples-v1"))
    _assert_cache_equals_repack(ours)


def test_pack_opens_the_writers_cache_without_reading_hdf5(monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = make_dataset("textrl/maze/mixed-v1", num_episodes=20, progress=False)
    monkeypatch.setattr(cache_module, "_HDF5EpisodeReader", lambda *a, **k: pytest.fail("the hdf5 file was read"))
    packed = pack(dataset.spec.dataset_id)
    assert len(packed) == 20 and packed.num_actions == dataset.total_steps


def test_episodes_sharing_a_template_read_back_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Episodes of one shape share a template that is rewritten only where values change, and the
    template file is replaced every TEMPLATE_EPISODES episodes: each episode still reads back as written."""
    import h5py

    monkeypatch.setattr(hdf5_module, "TEMPLATE_EPISODES", 4)
    rng = np.random.default_rng(0)
    texts = ["same", "sämë ünïcode", "a longer text than the others " * 3, "same"]
    written = []
    episodes = EpisodeFile(tmp_path / "x.hdf5")
    for i in range(11):
        t = 2 + i % 2  # two shapes, interleaved
        ids = rng.integers(0, 9, (t + 1, 3)) if i % 3 else np.zeros((t + 1, 3))  # repeats and changes
        obs = {"input_ids": ids.astype(np.uint8), "length": np.arange(1, t + 2, dtype=np.int32)}
        ends = np.arange(t) == t - 1
        ep = (obs, rng.integers(0, 9, t), np.full(t, float(i % 2)), ends & (i % 4 != 1), np.zeros(t, bool),
              {"prompt": "p" if i < 6 else "q", "text": texts[i % 4], "seed": i // 3})
        episodes.write(*ep)
        written.append(ep)
    episodes.close()
    with h5py.File(tmp_path / "x.hdf5", "r") as f:
        assert len(f) == 11
        for i, (obs, actions, rewards, terms, truncs, options) in enumerate(written):
            group = f[f"episode_{i}"]
            assert dict(group.attrs) == {"id": i, "total_steps": len(actions),
                                         **{f"options/{k}": v for k, v in options.items()}}
            assert all(type(group.attrs[f"options/{k}"]) is str for k in ("prompt", "text"))
            for key, values in obs.items():
                assert group[f"observations/{key}"].dtype == values.dtype
                np.testing.assert_array_equal(group[f"observations/{key}"][()], values)
            for name, values, dtype in (("actions", actions, np.int64), ("rewards", rewards, np.float64),
                                        ("terminations", terms, bool), ("truncations", truncs, bool)):
                assert group[name].dtype == dtype
                np.testing.assert_array_equal(group[name][()], values)
            assert len(group["infos"]) == 0
