"""Many seeded numpy generators at once, each the one `gymnasium.utils.seeding.np_random(seed)` returns.

A vector env seeds env i with s + i, one `np_random` each (so env i equals a single `TokenEnv`
seeded s + i). Each of those spends most of its ~35 us hashing its seed through numpy's
`SeedSequence`; a 256-env evaluation paid ~9 ms for it before its first step. Here the hashing
runs once over all seeds as uint32 array arithmetic, the same algorithm (numpy's
`SeedSequence`: a pool of 4 words mixed from the seed's words, then `generate_state`), and each
`PCG64` is seeded from its precomputed words, so every generator draws exactly the same stream.
Seeds of 2**64 or more go through `np_random` one by one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from gymnasium.utils import seeding
from numpy.random.bit_generator import ISeedSequence

# numpy's SeedSequence constants (numpy/random/bit_generator.pyx)
_POOL = 4
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_MASK = 0xFFFFFFFF


class _Words(ISeedSequence):
    """A seed sequence whose state words are already computed (what `PCG64` asks its seed sequence for)."""

    def __init__(self, words: np.ndarray) -> None:
        self.words = words  # uint64 [4]

    def generate_state(self, n_words: int, dtype: type = np.uint32) -> np.ndarray:
        if np.dtype(dtype) != np.uint64 or n_words != len(self.words):
            raise ValueError("precomputed PCG64 seed words: 4 uint64 only")
        return self.words


def _hashmix(value: np.ndarray, const: list[int]) -> np.ndarray:
    """numpy's `hashmix` over an array; `const` (one Python int, in a list) advances as in numpy."""
    value = value ^ np.uint32(const[0])
    const[0] = (const[0] * _MULT_A) & _MASK
    value = value * np.uint32(const[0])
    return value ^ (value >> np.uint32(16))


def _mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    result = np.uint32(_MIX_L) * x - np.uint32(_MIX_R) * y
    return result ^ (result >> np.uint32(16))


def _pcg64_words(seeds: np.ndarray) -> np.ndarray:
    """`SeedSequence(s).generate_state(4, np.uint64)` for each seed s < 2**64: uint64 [N, 4]."""
    # a seed's uint32 words, low first; a seed below 2**32 has one word and numpy mixes 0 for the missing ones
    entropy = [seeds & np.uint64(_MASK), seeds >> np.uint64(32), np.zeros_like(seeds), np.zeros_like(seeds)]
    const = [_INIT_A]
    pool = [_hashmix(word.astype(np.uint32), const) for word in entropy]
    for src in range(_POOL):
        for dst in range(_POOL):
            if src != dst:
                pool[dst] = _mix(pool[dst], _hashmix(pool[src], const))
    const_b, state = _INIT_B, []
    for i in range(2 * _POOL):  # 8 uint32 words, cycling over the pool
        value = pool[i % _POOL] ^ np.uint32(const_b)
        const_b = (const_b * _MULT_B) & _MASK
        value = value * np.uint32(const_b)
        state.append(value ^ (value >> np.uint32(16)))
    low, high = np.stack(state[0::2], 1).astype(np.uint64), np.stack(state[1::2], 1).astype(np.uint64)
    return low | (high << np.uint64(32))


def seeded_generators(seeds: Sequence[int]) -> list[np.random.Generator]:
    """`[gymnasium.utils.seeding.np_random(s)[0] for s in seeds]`, the hashing of seeds below 2**64 batched."""
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"env seeds must be non-negative ints, got {s!r}: pass reset(seed=...) an int >= 0 "
                             "or a list of them")
    small = [i for i, s in enumerate(seeds) if s < 2**64]
    out: list[np.random.Generator] = [None] * len(seeds)  # type: ignore[list-item]
    if small:
        words = _pcg64_words(np.array([seeds[i] for i in small], dtype=np.uint64))
        for i, w in zip(small, words):
            out[i] = np.random.Generator(np.random.PCG64(_Words(w)))
    for i, s in enumerate(seeds):
        if out[i] is None:
            out[i] = seeding.np_random(int(s))[0]
    return out
