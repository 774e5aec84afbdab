"""The minilm-bbc folder is a cache entry like any other (build_once): trained once, never left
half-made, trained again when damaged or forced; a folder trained before manifests is kept. The
training itself is replaced by a stub that writes the three files (the real one takes minutes)."""
from __future__ import annotations

import pytest

from backends.contract.artefacts import MANIFEST, damage
from runners.recipes import minilm_bbc


@pytest.fixture()
def trainings(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(minilm_bbc, "encoder_dir", lambda: tmp_path)
    calls: list[int] = []

    def fake_train(out_dir, seed=0, progress=True, train_per_class=None):
        calls.append(seed)
        if getattr(fake_train, "fail", False):
            (out_dir / "config.json").write_text("{}")
            raise KeyboardInterrupt  # killed half-way
        for name in minilm_bbc.READY_FILES:
            (out_dir / name).write_text(f"{name} of training {len(calls)}")
        return {}

    monkeypatch.setattr(minilm_bbc, "train_minilm_bbc", fake_train)
    return calls, fake_train


def test_trained_once_then_taken_from_the_cache(trainings):
    calls, _ = trainings
    first = minilm_bbc.ensure_minilm_bbc(progress=False)
    again = minilm_bbc.ensure_minilm_bbc(progress=False)
    assert first == again and calls == [0]
    assert damage(first) is None and (first / MANIFEST).is_file()


def test_a_killed_training_leaves_nothing_a_later_run_would_take(trainings):
    calls, fake = trainings
    fake.fail = True
    with pytest.raises(KeyboardInterrupt):
        minilm_bbc.ensure_minilm_bbc(progress=False)
    out = minilm_bbc.minilm_bbc_path()
    assert not out.exists() and not list(out.parent.glob(f"{out.name}.tmp*"))
    fake.fail = False
    assert damage(minilm_bbc.ensure_minilm_bbc(progress=False)) is None and len(calls) == 2


def test_damaged_or_forced_entries_are_trained_again(trainings):
    calls, _ = trainings
    out = minilm_bbc.ensure_minilm_bbc(progress=False)
    (out / "model.safetensors").write_text("truncated")
    assert minilm_bbc.ensure_minilm_bbc(progress=False) == out and len(calls) == 2
    assert (out / "model.safetensors").read_text() == "model.safetensors of training 2"
    minilm_bbc.ensure_minilm_bbc(force=True, progress=False)
    assert len(calls) == 3 and damage(out) is None


def test_a_folder_trained_before_manifests_is_kept(trainings):
    calls, _ = trainings
    out = minilm_bbc.minilm_bbc_path()
    out.mkdir(parents=True)
    for name in minilm_bbc.READY_FILES:
        (out / name).write_text("trained by an earlier version")
    assert minilm_bbc.ensure_minilm_bbc(progress=False) == out and calls == []
    assert damage(out) is None and (out / "metrics.json").read_text() == "trained by an earlier version"
    # half a folder from before is not taken for a finished one
    (out / MANIFEST).unlink()
    (out / "metrics.json").unlink()
    minilm_bbc.ensure_minilm_bbc(progress=False)
    assert calls == [0] and damage(out) is None


def test_a_train_subset_is_an_entry_of_its_own_and_the_full_split_keeps_its_key(trainings):
    calls, _ = trainings
    assert "train_per_class" not in minilm_bbc.cache_key_parts()  # the product's entry: key unchanged
    full, small = minilm_bbc.minilm_bbc_path(), minilm_bbc.minilm_bbc_path(train_per_class=150)
    assert small != full and small.parent == full.parent
    assert minilm_bbc.ensure_minilm_bbc(progress=False, train_per_class=150) == small and not full.exists()
    rows = [("a1", "x"), ("b1", "y"), ("a2", "x"), ("a3", "x"), ("b2", "y")]
    assert minilm_bbc.first_per_class(rows, 2) == [("a1", "x"), ("b1", "y"), ("a2", "x"), ("b2", "y")]
    with pytest.raises(ValueError):
        minilm_bbc.first_per_class(rows, 0)
