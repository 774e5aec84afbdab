"""Quality beside speed, measured in the same run after the speed numbers are in.

Decoders: against the reference's cached outputs (runners.quality.reference), the first
`quality.eval_tokens` tokens of the evaluation text are scored by both: mean and p99 KL(reference ||
backend) of the next-token distributions in nats, top-1 agreement, and each side's perplexity; and
`quality.generations` greedy generations of `quality.generation_tokens` new tokens are compared token
for token. vLLM only returns top-k log-probs: KL is then computed over the tokens both sides report,
with the rest of each distribution lumped into one bucket, and the result says so (`kl_method`).
Classifiers report accuracy and macro-F1 on their labelled held-out set (`model.eval_data`).
Synthetic weights never get quality numbers, and a quality failure never fails a run: the record
then says why quality is absent, and the speed numbers stay.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backends.contract import Metric
from runners.evaldata import BBC_LABELS, bbc_label_ids, classification_metrics, interleave_by_label, quality_split
from runners.measure.failures import classify_exception
from runners.plan.config import RunConfig
from runners.policy import decoder_quality_applies
from runners.quality import metrics as qm
from runners.quality.reference import Outputs, ensure_reference, evaluate, load_outputs, ready
from runners.record.schema import Quality

log = logging.getLogger("quantbench")
CLASSIFY_BATCH = 16
GEN, CLS = "causal_lm", "sequence_classification"
METRICS = (
    Metric("kl_mean_nats", "KL vs reference, mean (nats)", "lower", "quality", "quality", task=GEN),
    Metric("kl_p99_nats", "KL vs reference, p99 (nats)", "lower", "quality", "quality", task=GEN),
    Metric("kl_max_nats", "KL vs reference, max (nats)", "lower", "quality", "quality", task=GEN),
    Metric("top1_agreement_pct", "Top-1 agreement vs reference, %", "higher", "quality", "quality", task=GEN),
    Metric("identical_generations_pct", "Identical greedy generations, %", "higher", "quality", "quality", task=GEN),
    Metric("generation_prefix_match_pct", "Greedy generation prefix match, %", "higher", "quality", "quality",
           task=GEN),
    Metric("perplexity", "Perplexity", "lower", "quality", "quality", task=GEN, unitless=True),
    Metric("reference_perplexity", "Perplexity of the reference", "none", "quality", "quality", task=GEN,
           unitless=True),
    Metric("accuracy_pct", "Accuracy, %", "higher", "quality", "quality", task=CLS),
    Metric("macro_f1_pct", "Macro-F1, %", "higher", "quality", "quality", task=CLS),
)


def metrics_for(task: str) -> tuple[Metric, ...]:
    return tuple(m for m in METRICS if m.task == task)


@dataclass
class ReferenceStatus:
    """What the launcher knows of the reference before the measured run starts."""

    name: str
    path: str
    is_self: bool
    reason: str | None = None  # why its outputs are not available
    compute_s: float | None = None  # seconds its own process took, when it ran for this run


def measure_quality(engine, run: RunConfig, ref: ReferenceStatus | None) -> Quality:
    """Quality metrics of the loaded engine, or why they are absent. Never raises."""
    if not run.quality.enabled:
        return Quality(absent="quality.enabled=false")
    if run.weights == "synthetic":
        return Quality(absent="synthetic weights")
    try:
        if run.task == CLS:
            return _typed(classifier_quality(engine, run))
        if ref is None or not decoder_quality_applies(run.quality.enabled, run.weights, run.task):
            return Quality(absent="no quality reference planned for this run")
        return _typed(decoder_quality(engine, run, ref))
    except Exception as exc:  # noqa: BLE001 — quality is reported beside speed; it never fails the run
        log.exception("quality measurement failed")
        return Quality(absent=f"quality measurement failed: {describe_failure(exc)}")


def _typed(flat: dict[str, Any]) -> Quality:
    """The measured dict as a Quality: declared metric keys are metrics, the rest say how they were made."""
    declared = {m.key for m in METRICS}
    metrics = {k: float(v) for k, v in flat.items() if k in declared}
    facts = {k: v for k, v in flat.items() if k not in declared and k not in ("absent", "absent_metrics", "reference")}
    return Quality(metrics=metrics, absent=flat.get("absent"), absent_metrics=flat.get("absent_metrics") or {},
                   reference=flat.get("reference"), facts=facts)


def decoder_quality(engine, run: RunConfig, ref: ReferenceStatus) -> dict[str, Any]:
    path = Path(ref.path)
    if ref.is_self:
        reference, hit = ensure_reference(path, engine, run)
        cur = reference
        extra: dict[str, Any] = {"reference_source": "self (cached)" if hit else "self (computed now)"}
    else:
        if ref.reason or not ready(path):
            return {"absent": ref.reason or f"reference {ref.name}: not in its cache {path}", "reference": ref.name}
        reference = load_outputs(path)
        cur = evaluate(engine, reference.tokens, reference.prompts, reference.generations.shape[1])
        extra = {"reference_source": "cache"}
        if ref.compute_s is not None:
            extra.update(reference_source="computed in its own process before this run", reference_compute_s=ref.compute_s)
    return {**compare(reference, cur), "reference": ref.name, **extra, "reference_cache": str(path),
            "eval_text": run.quality.text or "bbc-news"}


def compare(ref: Outputs, cur: Outputs) -> dict[str, Any]:
    """Quality metrics of `cur` against the reference outputs `ref` (same tokens and prompts)."""
    kl, method = qm.kl_per_position(ref.logprobs, cur.logprobs)
    targets = ref.tokens[1:]
    out: dict[str, Any] = {
        "kl_mean_nats": float(kl.mean()),
        "kl_p99_nats": float(np.percentile(kl, 99)),
        "kl_max_nats": float(kl.max()),
        "top1_agreement_pct": qm.top1_agreement_pct(ref.logprobs, cur.logprobs),
        "identical_generations_pct": qm.identical_pct(ref.generations.tolist(), cur.generations.tolist()),
        "generation_prefix_match_pct": qm.prefix_match_pct(ref.generations.tolist(), cur.generations.tolist()),
        "kl_method": method,
        "eval_tokens": int(len(ref.tokens)),
        "scored_positions": int(len(kl)),
        "generations": f"{ref.generations.shape[0]} greedy x {ref.generations.shape[1]} new tokens, "
                       f"prompts of {ref.prompts.shape[1]} tokens",
    }
    absent: dict[str, str] = {}
    for key, lp in (("perplexity", cur.logprobs), ("reference_perplexity", ref.logprobs)):
        ppl = qm.perplexity(lp, targets, lp.next_token_values)
        if ppl is None:
            absent[key] = "top-k log-probs miss some actual next tokens"
        else:
            out[key] = ppl
    if absent:
        out["absent_metrics"] = absent
    return out


# -- classifiers ----------------------------------------------------------------------------------
def classifier_quality(engine, run: RunConfig) -> dict[str, Any]:
    """Accuracy and macro-F1 (%) on the model's labelled held-out set, through engine.classify."""
    model = run.model
    if model.eval_data is None:
        return {"absent": f"model {model.name} has no labelled evaluation set (model.eval_data)"}
    labels = list(BBC_LABELS)
    config_labels = getattr(engine.ctx.files.hf_config(), "id2label", None) or {}
    named = [config_labels.get(i, config_labels.get(str(i))) for i in range(len(labels))]
    if model.num_labels != len(labels) or (config_labels and named != labels):
        return {"absent": f"model {model.name}'s labels {named} are not the {model.eval_data} classes {labels}"}
    tokenizer = engine.ctx.files.load_tokenizer()
    if tokenizer is None:
        return {"absent": f"model {model.name} has no tokenizer"}
    _, test = quality_split()
    rows = interleave_by_label(test)[:run.quality.max_examples]  # a prefix still spans every class
    max_length = run.workload.seq_len
    preds: list[int] = []
    for start in range(0, len(rows), CLASSIFY_BATCH):
        enc = tokenizer([text for text, _ in rows[start:start + CLASSIFY_BATCH]], truncation=True,
                        max_length=max_length, padding=True, return_tensors="np")
        logits = engine.classify(enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64))
        preds.extend(np.asarray(logits).argmax(axis=-1).tolist())
    m = classification_metrics(bbc_label_ids(rows), preds, len(labels))
    return {"accuracy_pct": 100.0 * m["accuracy"], "macro_f1_pct": 100.0 * m["macro_f1"],
            "eval_data": f"{model.eval_data} held-out split (bbc_split seed 0, 20%)", "num_examples": len(rows),
            "max_length": max_length}


def describe_failure(exc: BaseException) -> str:
    failure = classify_exception(exc)
    reason = (failure.reason or type(exc).__name__).splitlines()[0][:500]
    return reason if failure.status == "crash" else f"{failure.status}: {reason}"

