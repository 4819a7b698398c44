"""Importing trlx-style (samples, rewards): episodes, spaces, packing of multi-turn text, and clear errors."""

import math
from pathlib import Path

import numpy as np
import pytest
import word_tokens
from gymnasium import spaces

from textrl.data import build_info, from_samples, load, load_tokenizer, pack

WORDS = ["<pad>", "<eos>", "q", "a", "b", "c", "user", "bot", "yes", "no", "ok", "again"]


def word_tokenizer():
    """A whitespace word-level tokenizer built locally (ids = positions in WORDS)."""
    return word_tokens.word_tokenizer(WORDS)


def ids(text: str) -> list[int]:
    return [WORDS.index(w) for w in text.split()]


@pytest.fixture(autouse=True)
def _fresh_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))


def test_string_and_turn_samples_become_episodes() -> None:
    tok = word_tokenizer()
    eos = tok.eos_token_id
    samples = ["q a b c", ["user q", "yes", "user again", "no ok"]]
    ds = from_samples(samples, [1.5, -2.0], tok, "imported/tiny-v0", max_length=12, progress=False)
    assert ds.total_episodes == 2 and ds.total_steps == 5 + 4
    assert ds.spec.env_spec is None and ds._eval_env_spec is None
    assert ds.action_space == spaces.Discrete(len(WORDS))
    obs_space = ds.observation_space
    assert obs_space["input_ids"].shape == (12,) and obs_space["input_ids"].dtype == np.uint8
    assert int(obs_space["input_ids"].high.max()) == len(WORDS) - 1
    assert build_info(ds) == {"source": "samples", "max_length": 12, "num_episodes": 2}
    assert load_tokenizer(ds).get_vocab() == tok.get_vocab()

    plain, turns = list(ds.iterate_episodes())
    # A plain string is all output after a BOS prompt (EOS stands in for a missing BOS, as in trlx); EOS ends it.
    assert plain.actions.tolist() == ids("q a b c") + [eos]
    assert plain.observations["length"].tolist() == [1, 2, 3, 4, 5, 6]
    assert plain.observations["input_ids"][-1][:6].tolist() == [eos, *ids("q a b c"), eos]
    assert (plain.observations["input_ids"][0][1:] == tok.pad_token_id).all()
    assert plain.rewards.tolist() == [0.0, 0.0, 0.0, 0.0, 1.5]
    assert plain.terminations.tolist() == [False] * 4 + [True] and not plain.truncations.any()
    # Turns: even turns are environment text (observations), odd turns the agent's (actions), EOS after the last.
    assert turns.actions.tolist() == ids("yes no ok") + [eos]
    assert turns.observations["length"].tolist() == [2, 5, 6, 7, 8]
    assert turns.observations["input_ids"][-1][:8].tolist() == ids("user q yes user again no ok") + [eos]
    assert turns.rewards.tolist() == [0.0, 0.0, 0.0, -2.0]
    assert turns.terminations.tolist() == [False, False, False, True]


def test_bos_starts_a_string_sample_and_a_final_eos_is_not_doubled() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [*WORDS, "<bos>"]
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>")
    ds = from_samples(["q a", "q a <eos>", ["user", "yes <eos>"]], [1.0, 1.0, 1.0], tok, "imported/bos-v0",
                      progress=False)
    first, second, third = ds.iterate_episodes()
    assert first.observations["input_ids"][-1].tolist() == [words.index("<bos>"), 2, 3, 1]
    assert second.actions.tolist() == first.actions.tolist() == [2, 3, 1]
    assert third.actions.tolist() == [words.index("yes"), 1]


def test_pad_equal_to_eos_is_trained_only_as_the_final_eos() -> None:
    """GPT-2 style: one token is pad and EOS. It ends each sample (and stands in for BOS), nowhere else."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<eos>", eos_token="<eos>", unk_token="<pad>")
    ds = from_samples(["q a", ["user", "yes"]], [1.0, 0.0], tok, "imported/gpt2like-v0", progress=False)
    plain, turns = ds.iterate_episodes()
    assert plain.actions.tolist() == [*ids("q a"), 1] and turns.actions.tolist() == [WORDS.index("yes"), 1]
    batch = pack(ds).batch([0, 1])
    assert batch["input_ids"][0].tolist() == [1, *ids("q a"), 1] and batch["attention_mask"][0].all()
    with pytest.raises(ValueError, match=r"sample 0: the tokenizer cannot represent \['<eos>'\]"):
        from_samples(["q <eos> a"], [1.0], tok, "imported/gpt2like-v1", progress=False)


def test_text_the_tokenizer_cannot_represent_is_an_error_naming_it() -> None:
    tok = word_tokenizer()  # unknown words map to <pad>
    with pytest.raises(ValueError, match=r"sample 1: the tokenizer cannot represent \['zebra'\]"):
        from_samples(["q a", "q zebra a"], [1.0, 1.0], tok, "imported/unk-v0", progress=False)
    with pytest.raises(ValueError, match=r"sample 0: the tokenizer cannot represent \['<pad>'\]"):
        from_samples([["user", "a <pad>"]], [1.0], tok, "imported/unk-v0", progress=False)
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = Tokenizer(models.BPE(vocab={"<pad>": 0, "<eos>": 1, "a": 2, "b": 3}, merges=[]))  # no unk: drops "x"
    chars.pre_tokenizer = pre_tokenizers.Whitespace()
    dropping = PreTrainedTokenizerFast(tokenizer_object=chars, pad_token="<pad>", eos_token="<eos>")
    assert dropping("axb", add_special_tokens=False)["input_ids"] == [2, 3]
    with pytest.raises(ValueError, match=r"sample 0: the tokenizer cannot represent \['x'\]"):
        from_samples(["axb"], [1.0], dropping, "imported/drop-v0", progress=False)


def test_a_raw_tokenizers_tokenizer_gets_the_line_that_wraps_it() -> None:
    raw = word_tokenizer().backend_tokenizer
    with pytest.raises(TypeError, match=r"PreTrainedTokenizerFast\(tokenizer_object=tok, pad_token="):
        from_samples(["q a"], [1.0], raw, "imported/raw-v0", progress=False)


def test_streamed_samples_from_a_generator_or_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    tok = word_tokenizer()
    lines = ["q a", "q a b", "q c"]
    ds = from_samples((line for line in lines), (float(i) for i in range(3)), tok, "imported/stream-v0",
                      max_length=8)
    assert [ep.actions.tolist()[:-1] for ep in ds.iterate_episodes()] == [ids(t) for t in lines]
    assert ds.observation_space["input_ids"].shape == (8,)
    assert (ds.storage.metadata["ref_min_score"], ds.storage.metadata["ref_max_score"]) == (0.0, 2.0)
    out = capsys.readouterr().out
    assert "imported/stream-v0: wrote 3 samples (10 steps) in" in out and "samples/s), " in out and " MiB at " in out
    pairs = from_samples(iter(zip(lines, [0.0, 1.0, 2.0])), None, tok, "imported/pairs-v0", max_length=8,
                         progress=False)
    assert [ep.rewards[-1] for ep in pairs.iterate_episodes()] == [0.0, 1.0, 2.0]
    arrays = from_samples(np.array(lines), np.array([0.0, 1.0, 2.0]), tok, "imported/arrays-v0", progress=False)
    assert arrays.observation_space["input_ids"].shape == (5,) and arrays.total_episodes == 3
    with pytest.raises(ValueError, match="max_length is required when samples is an iterator"):
        from_samples(iter(lines), [1.0] * 3, tok, "imported/stream-v1", progress=False)
    with pytest.raises(ValueError, match="rewards go on after 2 items"):
        from_samples(iter(lines[:2]), iter([1.0] * 3), tok, "imported/stream-v1", max_length=8, progress=False)
    with pytest.raises(TypeError, match="samples must yield .sample, reward. pairs"):
        from_samples(iter(lines), None, tok, "imported/stream-v1", max_length=8, progress=False)


def test_default_max_length_and_reference_scores() -> None:
    tok = word_tokenizer()
    ds = from_samples(["q a", "q a b c"], [0.5, 2.0], tok, "imported/refs-v0", progress=False)
    assert ds.observation_space["input_ids"].shape == (6,)  # BOS, 4 words, EOS
    assert (ds.storage.metadata["ref_min_score"], ds.storage.metadata["ref_max_score"]) == (0.5, 2.0)
    ds = from_samples(["q a"], [0.5], tok, "imported/refs-v1", ref_min_score=-1.0, ref_max_score=1.0,
                      progress=False)
    assert (ds.storage.metadata["ref_min_score"], ds.storage.metadata["ref_max_score"]) == (-1.0, 1.0)


@pytest.mark.parametrize("samples, rewards, kwargs, error, message", [
    (["q a", "q b"], [1.0], {}, ValueError, "2 samples but 1 rewards"),
    ([], [], {}, ValueError, "no samples"),
    (["q a", ""], [1.0, 1.0], {}, ValueError, "sample 1 has 0 token"),
    (["q a"], [math.nan], {}, ValueError, "rewards must be finite"),
    (["q a"], [math.inf], {}, ValueError, "rewards must be finite"),
    (["q a", "q"], [1.0, 1e39], {}, ValueError, "float32's range.*the reward of sample 1 is 1e[+]?39"),
    ([["user q", "yes", "user"]], [1.0], {}, ValueError, "even number"),
    ([["", "yes"]], [1.0], {}, ValueError, "first prompt turn is empty"),
    ([["user", ""]], [1.0], {}, ValueError, "no output tokens"),
    (["q a b c"], [1.0], {"max_length": 5}, ValueError, "sample 0 is longer than max_length=5 tokens .6."),
    ([3], [1.0], {}, TypeError, "must be a string or a list of strings"),
    ("q a", [1.0], {}, TypeError, "single string"),
    (["q a"], ["high"], {}, TypeError, "rewards must be real numbers .*: the reward of sample 0 is 'high' .str."),
    (["q a"], [1.0], {"tokenizer": object()}, TypeError, "must be a transformers tokenizer"),
])
def test_bad_samples_get_clear_errors(samples, rewards, kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        from_samples(samples, rewards, kwargs.pop("tokenizer", word_tokenizer()), "imported/bad-v0", progress=False,
                     **kwargs)


def test_a_failed_import_leaves_the_id_free() -> None:
    tok = word_tokenizer()
    with pytest.raises(ValueError, match="sample 1 is longer than max_length=4 tokens"):
        from_samples(["q a", "q a b c"], [1.0, 2.0], tok, "imported/retry-v0", max_length=4, progress=False)
    assert from_samples(["q a"], [1.0], tok, "imported/retry-v0", progress=False).total_episodes == 1
    with pytest.raises(FileExistsError, match="already exists"):
        from_samples(["q a"], [1.0], tok, "imported/retry-v0", progress=False)


def test_overwrite_replaces_a_dataset_and_a_failed_overwrite_keeps_the_old_one() -> None:
    tok = word_tokenizer()
    from_samples(["q a"], [1.0], tok, "imported/again-v0", progress=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        from_samples(["q a"], [1.0], tok, "imported/again-v0", progress=False)
    with pytest.raises(ValueError):
        from_samples(["q a", "q a b c"], [1.0, 2.0], tok, "imported/again-v0", max_length=4, progress=False,
                     overwrite=True)
    assert load("imported/again-v0").total_episodes == 1
    again = from_samples(["q a", "q b"], [1.0, 2.0], tok, "imported/again-v0", progress=False, overwrite=True)
    assert again.total_episodes == 2 and load("imported/again-v0").total_episodes == 2


def test_readme_bring_your_own_text_agent_learns_to_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README's example runs as written, and the agent trained on the imported samples emits EOS."""
    import re

    import torch

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Bring your own text", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    agent, tok = namespace["agent"], namespace["tokenizer"]
    assert namespace["replies"] == ["bot: hi there", "bot: see you"]
    enc = tok(["user: hello bot: hi there", "user: bye bot: see you"], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        logits = agent.model.backbone(**enc).logits[:, -1]
    assert logits.argmax(-1).tolist() == [tok.eos_token_id] * 2  # after the reply, EOS is the likeliest token


def test_a_vocabulary_over_256_tokens_packs_and_batches() -> None:
    """Token ids above 255 are stored uint16 by Minari but packed in a dtype torch can gather (int16)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<eos>"] + [f"w{i}" for i in range(298)]
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")
    ds = from_samples([["w3", "w297 w5"]], [1.0], tok, "imported/wide-v0", progress=False)
    assert ds.observation_space["input_ids"].dtype == np.uint16
    batch = pack(ds).batch([0])
    assert batch["input_ids"][0].tolist() == [5, 299, 7, 1]
