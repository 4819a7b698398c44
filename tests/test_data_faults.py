"""Faults of the data writer found by probing (issue 23, items 10-17): each case failed before its fix."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import minari
import numpy as np
import pytest
from minari.dataset.minari_dataset import DATASET_ID_RE
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from textrl.cli import main
from textrl.data import from_samples, load, make_dataset, pack
from textrl.data.hdf5 import EpisodeFile
from textrl.data.store import check_dataset_id, datasets_root, folder_of, local_dataset_ids

NUL_WORD = "x\x00y"


@pytest.fixture(autouse=True)
def _fresh_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))


def _tok() -> PreTrainedTokenizerFast:
    words = ["<pad>", "<eos>", "a", "b", NUL_WORD]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")


def _no_staging_left() -> bool:
    return not any(p.name.startswith(".") for p in datasets_root().rglob("*"))


# ---------------------------------------------------------------- 10: text with a NUL

def test_text_with_a_nul_is_refused_not_cut(tmp_path: Path) -> None:
    episodes = EpisodeFile(tmp_path / "x.hdf5")
    obs = {"input_ids": np.array([[1, 0], [1, 2]], np.uint8), "length": np.array([1, 2], np.int32)}
    with pytest.raises(ValueError, match=r"episode 0's text contains a NUL character \('\\x00'\) at position 1"):
        episodes.write(obs, np.array([2]), np.array([1.0]), np.array([True]), np.array([False]),
                       {"prompt": "p", "text": "a\x00b"})
    episodes.close()
    with pytest.raises(ValueError, match="contains a NUL character"):
        from_samples(["a b", f"a {NUL_WORD}"], [1.0, 0.0], _tok(), "nul/text-v0", progress=False)
    assert local_dataset_ids() == [] and _no_staging_left()


# ---------------------------------------------------------------- 11: no process-wide state

def test_threads_importing_at_once_each_get_their_dataset() -> None:
    root = os.environ["MINARI_DATASETS_PATH"]
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            from_samples(["a b"] * (50 + k), [float(k)] * (49 + k) + [-1.0], _tok(), f"threads/t{k}-v0",
                         progress=False)
        except BaseException as e:  # handed to the test's thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert os.environ["MINARI_DATASETS_PATH"] == root
    assert local_dataset_ids() == [f"threads/t{k}-v0" for k in range(3)]
    for k in range(3):
        assert minari.load_dataset(f"threads/t{k}-v0").total_episodes == 50 + k
    assert _no_staging_left()


def test_threads_importing_one_id_publish_one_complete_dataset() -> None:
    outcomes: list[object] = []

    def run() -> None:
        try:
            outcomes.append(from_samples(["a b"] * 40, [1.0] * 39 + [0.0], _tok(), "threads/same-v0",
                                         progress=False))
        except FileExistsError as e:
            outcomes.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(o, FileExistsError) for o in outcomes) == 2 and len(outcomes) == 3
    assert load("threads/same-v0").total_episodes == 40 and _no_staging_left()


def test_a_streaming_import_may_open_another_local_dataset_meanwhile() -> None:
    from_samples(["a b", "b a"], [1.0, 0.0], _tok(), "stream/other-v0", progress=False)
    root = os.environ["MINARI_DATASETS_PATH"]

    def pairs():
        for i in range(30):
            assert os.environ["MINARI_DATASETS_PATH"] == root  # nothing points the variable elsewhere
            assert load("stream/other-v0").total_episodes == 2
            yield "a b", float(i)

    ds = from_samples(pairs(), None, _tok(), "stream/main-v0", max_length=4, progress=False)
    assert ds.total_episodes == 30 and minari.load_dataset("stream/main-v0").total_steps == 90  # a, b, EOS


def test_the_written_metadata_is_what_minaris_writer_stores() -> None:
    ours = make_dataset("textrl/maze/mixed-v1", num_episodes=5, progress=False).storage.metadata
    assert ours["author"] == {"textrl"} and ours["minari_version"] == minari.__version__
    assert ours["eval_env_spec"] == ours["env_spec"] and '"id": "textrl/Maze' in ours["env_spec"]
    assert ours["total_episodes"] == 5 and ours["ref_min_score"] < ours["ref_max_score"]


# ---------------------------------------------------------------- 12: a full disk

@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 256 KiB tmpfs (needs root); skipped where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
                      capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def _python(code: str, root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MINARI_DATASETS_PATH": str(root), "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_a_build_on_a_full_disk_gets_the_message_and_leaves_nothing(small_disk: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(small_disk))
    with pytest.raises(OSError, match="the disk is full: cannot write dataset textrl/randomwalks/random-v1 under"):
        make_dataset("textrl/randomwalks/random-v1", progress=False)
    assert [p.name for p in small_disk.rglob("*")] == []  # no dataset, no staging folder


def test_packing_on_a_full_disk_gets_the_message_not_sigbus(small_disk: Path) -> None:
    ds = make_dataset("textrl/randomwalks/random-v1", num_episodes=100, progress=False)
    copy = small_disk / "copy"
    (copy / "data").mkdir(parents=True)
    for f in Path(ds.storage.data_path).iterdir():
        (copy / "data" / f.name).write_bytes(f.read_bytes())
    try:
        with open(small_disk / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass
    done = _python(f"from textrl.data import pack\npack({str(copy)!r}, pad_token_id=0)", small_disk)
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])  # SIGBUS was -7
    assert "the disk is full: cannot write the packed cache in" in done.stderr
    assert not [p for p in (copy / "packed").glob("*") if p.name != "digests.json"]


# ---------------------------------------------------------------- 14, 15: ids

@pytest.mark.parametrize("bad", ["ns/ok.name-v0", "ns/a..b-v0", "ns/nl-v0\n", "ns/x y-v0", "n/short-v0", "ns/x"])
def test_ids_are_checked_with_minaris_rule_before_any_work(bad: str) -> None:
    def never_read():
        pytest.fail("a sample was read before the id was checked")
        yield

    with pytest.raises(ValueError, match="malformed dataset id"):
        from_samples(never_read(), None, _tok(), bad, max_length=4, progress=False)
    assert local_dataset_ids() == []


@pytest.mark.parametrize("good", ["ns/x-v0", "textrl/randomwalks/random-n40-s3-v1", "a-b/c_d/e-f-v12", "ns/é-v0"])
def test_every_id_textrl_accepts_minari_accepts(good: str) -> None:
    check_dataset_id(good)
    assert DATASET_ID_RE.fullmatch(good)


def test_cli_build_of_a_sized_id_checks_the_sized_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "build", "textrl/randomwalks/random-v1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["data", "build", "textrl/randomwalks/random-v1", "--episodes", "60", "--seed", "9", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "textrl/randomwalks/random-n60-s9-v1: wrote 60 episodes" in out and "already built" not in out
    assert main(["data", "build", "textrl/randomwalks/random-v1", "--episodes", "60", "--seed", "9", "--quiet"]) == 0
    assert "textrl/randomwalks/random-n60-s9-v1: already built, 60 episodes" in capsys.readouterr().out


# ---------------------------------------------------------------- 16, 17: rewards and reference scores

@pytest.mark.parametrize("bad", ["2.5", " 1e3 ", True, np.bool_(False), None, [1.0]])
def test_rewards_must_be_real_numbers_in_lists_and_pairs(bad: object) -> None:
    message = r"rewards must be real numbers \(int or float; not bool, str or None\): the reward of sample 1 is"
    with pytest.raises(TypeError, match=message):
        from_samples(["a", "b"], [1.0, bad], _tok(), "rewards/list-v0", progress=False)
    with pytest.raises(TypeError, match=message):
        from_samples([("a", 1.0), ("b", bad)], None, _tok(), "rewards/pairs-v0", progress=False)
    assert local_dataset_ids() == []


def test_numpy_and_integer_rewards_are_real_numbers() -> None:
    ds = from_samples(["a", "b", "a b"], [np.float32(0.5), np.int64(2), 1], _tok(), "rewards/numpy-v0",
                      progress=False)
    assert pack(ds).returns.tolist() == [0.5, 2.0, 1.0]


def test_equal_rewards_store_no_reference_scores() -> None:
    with pytest.warns(UserWarning, match=r"all 3 rewards equal 1.0: no reference scores are stored"):
        ds = from_samples(["a", "b", "a b"], [1.0, 1.0, 1.0], _tok(), "refs/equal-v0", progress=False)
    meta = ds.storage.metadata
    assert "ref_min_score" not in meta and "ref_max_score" not in meta
    with pytest.raises(ValueError, match=r"ref_min_score \(1.0\) must be below ref_max_score \(1.0\)"):
        from_samples(["a", "b"], [0.0, 1.0], _tok(), "refs/given-v0", ref_min_score=1, progress=False)
    with pytest.raises(ValueError, match=r"ref_min_score \(2.0\) must be below ref_max_score \(1.0\)"):
        from_samples(["a"], [0.0], _tok(), "refs/crossed-v0", ref_min_score=2.0, ref_max_score=1.0, progress=False)
    with pytest.raises(TypeError, match=r"reference scores must be real numbers .*: ref_max_score is '3'"):
        from_samples(["a"], [0.0], _tok(), "refs/str-v0", ref_max_score="3", progress=False)
    assert local_dataset_ids() == ["refs/equal-v0"]
    assert folder_of(ds).is_dir()
