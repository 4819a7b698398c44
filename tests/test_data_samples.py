"""Importing trlx-style (samples, rewards): episodes, spaces, packing of multi-turn text, and clear errors."""

import math
from pathlib import Path

import numpy as np
import pytest
from gymnasium import spaces

from textrl.data import build_info, from_samples, load_tokenizer, pack

WORDS = ["<pad>", "<eos>", "q", "a", "b", "c", "user", "bot", "yes", "no", "ok", "again"]


def word_tokenizer():
    """A whitespace word-level tokenizer built locally (ids = positions in WORDS)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")


def ids(text: str) -> list[int]:
    return [WORDS.index(w) for w in text.split()]


@pytest.fixture(autouse=True)
def _fresh_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))


def test_string_and_turn_samples_become_episodes() -> None:
    tok = word_tokenizer()
    samples = ["q a b c", ["user q", "yes", "user again", "no ok"]]
    ds = from_samples(samples, [1.5, -2.0], tok, "imported/tiny-v0", max_length=12)
    assert ds.total_episodes == 2 and ds.total_steps == 3 + 3
    assert ds.spec.env_spec is None and ds._eval_env_spec is None
    assert ds.action_space == spaces.Discrete(len(WORDS))
    obs_space = ds.observation_space
    assert obs_space["input_ids"].shape == (12,) and obs_space["input_ids"].dtype == np.uint8
    assert int(obs_space["input_ids"].high.max()) == len(WORDS) - 1
    assert build_info(ds)["source"] == "samples"
    assert load_tokenizer(ds).get_vocab() == tok.get_vocab()

    plain, turns = list(ds.iterate_episodes())
    # A plain string: the first token is the prompt, the rest are the agent's actions.
    assert plain.actions.tolist() == ids("a b c")
    assert plain.observations["length"].tolist() == [1, 2, 3, 4]
    assert plain.observations["input_ids"][-1][:4].tolist() == ids("q a b c")
    assert (plain.observations["input_ids"][0][1:] == tok.pad_token_id).all()
    assert plain.rewards.tolist() == [0.0, 0.0, 1.5]
    assert plain.terminations.tolist() == [False, False, True] and not plain.truncations.any()
    # Turns: even turns are environment text (observations), odd turns the agent's (actions).
    assert turns.actions.tolist() == ids("yes no ok")
    assert turns.observations["length"].tolist() == [2, 5, 6, 7]
    assert turns.observations["input_ids"][-1][:7].tolist() == ids("user q yes user again no ok")
    assert turns.rewards.tolist() == [0.0, 0.0, -2.0]
    assert turns.terminations.tolist() == [False, False, True]


def test_packed_multi_turn_rows_follow_the_length_convention() -> None:
    tok = word_tokenizer()
    ds = from_samples([["user q", "yes", "user again", "no ok"], "q a"], [3.0, 1.0], tok, "imported/turns-v0")
    batch = pack(ds).batch([0, 1])
    assert batch["input_ids"][0].tolist() == ids("user q yes user again no ok")
    assert batch["input_ids"][1].tolist() == ids("q a") + [tok.pad_token_id] * 5
    assert batch["attention_mask"].sum(1).tolist() == [7, 2]
    # a_k = length of the observation before action k minus 1: "yes" at 2, "no" at 5, "ok" at 6.
    assert batch["action_ixs"].tolist() == [[1, 4, 5], [0, 0, 0]]
    assert batch["state_ixs"].tolist() == [[1, 4, 5, 6], [0, 1, 0, 0]]
    assert batch["action_mask"].tolist() == [[True, True, True], [True, False, False]]
    predicted = batch["input_ids"].gather(1, batch["action_ixs"] + 1)
    assert predicted[0].tolist() == ids("yes no ok") and predicted[1, 0] == WORDS.index("a")
    assert batch["rewards"].tolist() == [[0.0, 0.0, 3.0], [1.0, 0.0, 0.0]]
    assert batch["notdone"].tolist() == [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]


def test_default_max_length_and_reference_scores() -> None:
    tok = word_tokenizer()
    ds = from_samples(["q a", "q a b c"], [0.5, 2.0], tok, "imported/refs-v0")
    assert ds.observation_space["input_ids"].shape == (4,)
    assert (ds.storage.metadata["ref_min_score"], ds.storage.metadata["ref_max_score"]) == (0.5, 2.0)
    ds = from_samples(["q a"], [0.5], tok, "imported/refs-v1", ref_min_score=-1.0, ref_max_score=1.0)
    assert (ds.storage.metadata["ref_min_score"], ds.storage.metadata["ref_max_score"]) == (-1.0, 1.0)


@pytest.mark.parametrize("samples, rewards, kwargs, error, message", [
    (["q a", "q b"], [1.0], {}, ValueError, "2 samples but 1 rewards"),
    ([], [], {}, ValueError, "no samples"),
    (["q a", ""], [1.0, 1.0], {}, ValueError, "sample 1 has 0 token"),
    (["q"], [1.0], {}, ValueError, "needs a prompt token and at least one output"),
    (["q a"], [math.nan], {}, ValueError, "rewards must be finite"),
    (["q a"], [math.inf], {}, ValueError, "rewards must be finite"),
    ([["user q", "yes", "user"]], [1.0], {}, ValueError, "even number"),
    ([["", "yes"]], [1.0], {}, ValueError, "first prompt turn is empty"),
    ([["user", ""]], [1.0], {}, ValueError, "no output tokens"),
    (["q a b c"], [1.0], {"max_length": 3}, ValueError, "longer than max_length=3"),
    ([3], [1.0], {}, TypeError, "must be a string or a list of strings"),
    ("q a", [1.0], {}, TypeError, "single string"),
    (["q a"], ["high"], {}, TypeError, "one number per sample"),
])
def test_bad_samples_get_clear_errors(samples, rewards, kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        from_samples(samples, rewards, word_tokenizer(), "imported/bad-v0", **kwargs)


def test_a_failed_import_leaves_the_id_free() -> None:
    tok = word_tokenizer()
    with pytest.raises(ValueError):
        from_samples(["q a", "q a b c"], [1.0, 2.0], tok, "imported/retry-v0", max_length=2)
    assert from_samples(["q a"], [1.0], tok, "imported/retry-v0").total_episodes == 1
    with pytest.raises(FileExistsError, match="already exists"):
        from_samples(["q a"], [1.0], tok, "imported/retry-v0")
