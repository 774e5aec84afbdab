"""The inputs every engine gets: the same seeded token ids, whatever the backend."""
from __future__ import annotations

import numpy as np

# Low ids are special tokens in most vocabularies (pad, bos, eos, unk); random prompts avoid them.
_FIRST_ORDINARY_ID = 16


def token_ids(seed: int, batch_size: int, length: int, vocab_size: int) -> np.ndarray:
    """The same prompts for every engine: seeded by (seed, batch size, length) only."""
    rng = np.random.default_rng([seed, batch_size, length])
    low = min(_FIRST_ORDINARY_ID, vocab_size - 1)
    return rng.integers(low, vocab_size, size=(batch_size, length), dtype=np.int64)
