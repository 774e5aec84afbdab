"""The model function of tests/conf/model/minilm-bbc-small.yaml: the product's minilm-bbc recipe
(`runners.recipes.minilm_bbc.ensure_minilm_bbc`, what conf/model/minilm-bbc.yaml names), trained on
the first TRAIN_PER_CLASS train articles of each class (its own cache entry). 150 a class measured
94.6% accuracy on the whole held-out split (96% with every train article), in ~30 s on 2 CPU cores."""
from __future__ import annotations

from pathlib import Path

from runners.recipes.minilm_bbc import ensure_minilm_bbc

TRAIN_PER_CLASS = 150


def ensure_minilm_bbc_small() -> Path:
    return ensure_minilm_bbc(train_per_class=TRAIN_PER_CLASS)
