"""The review scenario of examples/own_text.py: templated product reviews, their reward function and a
tokenizer trained on them. A module of its own so that the reward function has an import path
(`review_scenario:review_reward`): the dataset records it, and `textrl bench --dataset` or `textrl fit`
in another process make the env again (with `examples/` on PYTHONPATH).
"""

from __future__ import annotations

import numpy as np

PRODUCTS = ["blender", "kettle", "toaster", "lamp", "fan", "heater", "mixer", "radio"]
OPENERS = ["I bought this {p} last week.", "Got the {p} as a gift.", "We have used this {p} for a month."]
VERDICTS = {  # the reward a review gets, and the phrases that give it
    1.0: ["It works great and I love it.", "Excellent quality, highly recommended."],
    0.0: ["It is okay for the price.", "Does the job, nothing special."],
    -1.0: ["It broke after two days.", "Terrible, it stopped working and I returned it."],
}
MIX = {1.0: 0.2, 0.0: 0.33, -1.0: 0.47}  # how often each verdict occurs in the data: mean reward -0.27
WORDS = {1.0: ("great", "love", "excellent", "recommended"), -1.0: ("broke", "terrible", "returned", "stopped")}


def review_reward(prompt: str, completion: str) -> float:
    """+1 for a review that praises, -1 for one that complains, 0 otherwise (both or neither)."""
    text = (prompt + " " + completion).lower()
    good = any(w in text for w in WORDS[1.0])
    bad = any(w in text for w in WORDS[-1.0])
    return 1.0 if good and not bad else -1.0 if bad and not good else 0.0


def reviews(n: int, seed: int) -> list[str]:
    """`n` templated reviews whose verdicts follow MIX."""
    rng = np.random.default_rng(seed)
    verdicts = rng.choice(list(MIX), size=n, p=list(MIX.values()))
    return [f"{OPENERS[rng.integers(len(OPENERS))].format(p=PRODUCTS[rng.integers(len(PRODUCTS))])} "
            f"{VERDICTS[v][rng.integers(2)]}" for v in verdicts]


def train_tokenizer(texts: list[str]) -> object:
    """A byte-level BPE tokenizer trained on the reviews (nothing downloaded), wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", "<eos>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")


WELL_FORMED = {f"{o.format(p=p)} {v}" for o in OPENERS for p in PRODUCTS for vs in VERDICTS.values() for v in vs}
