"""Quality beside speed, measured in the same run, after the speed numbers are in.

Decoders (workload generate) are compared with a reference backend of the same model
(`quality.reference`: `auto` = fp32 on CPU, fp16 on GPU; else a `conf/backend/<name>.yaml`):
- the first `quality.eval_tokens` tokens of the evaluation text (runners.evaldata.eval_text, cut with
  the model's own tokenizer) are scored by both: mean and p99 KL(reference || backend) of the
  next-token distributions, top-1 agreement, and each side's perplexity of the text;
- `quality.generations` greedy generations of `quality.generation_tokens` new tokens, from prompts
  of as many tokens of the same text: the share identical to the reference's, token for token.
Classifiers (workload classify) report accuracy and macro-F1 on their labelled held-out set
(`model.eval_data`). Synthetic weights never get quality numbers, and a quality failure never fails
a run: the record then says why quality is absent, and the speed numbers stay.

How the reference is obtained (the simplest shape that never disturbs a measurement):
- Its outputs (token ids, log-probs, generations) are computed once and cached under
  `<cache>/reference/<key>`, keyed by the model and its weight files, the reference backend and its
  options, the device, the evaluation text's hash and sizes, and package versions. Every backend of
  a sweep, each in its own process, compares with the same numbers.
- A run of the reference backend itself computes them with its own engine after its speed runs (or
  loads them) and compares with itself: KL 0, agreement 100%.
- Any other run needs them before its own model loads: the worker calls `prepare_reference` between
  materialising the model files and `engine.load()`. On a cache miss it runs the reference in a
  separate process (`python -m runners.quality PLAN.json`), which loads the reference engine, writes
  the cache and exits. So the reference never shares memory with the measured model (two models in
  one GPU would not fit next to vLLM's preallocation, and would inflate measured peaks), never runs
  during a timed region, and its cost shows as `reference_compute_s`, outside load and speed.
vLLM only returns top-k log-probs: KL is then computed over the tokens both sides report, with the
rest of each distribution lumped into one bucket, and the result says so (`kl_method`).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backends.base import LogProbs
from runners import qualitymath as qm
from runners.cache import build_once, cache_path, folder_identity
from runners.config import RunConfig
from runners.typed import ConfigError, as_dict

log = logging.getLogger("quantbench")

ROOT = Path(__file__).resolve().parents[1]
BACKEND_CONF = ROOT / "conf" / "backend"
# Bumped when what a cached reference holds (or how it is computed) changes.
REFERENCE_FORMAT = 1
REFERENCE_FILE = "reference.npz"
CLASSIFY_BATCH = 16
VERSIONED_PACKAGES = ("torch", "transformers", "tokenizers", "bitsandbytes", "onnxruntime", "onnxruntime-gpu",
                      "onnx", "onnxscript", "vllm", "numpy")

# Per process: reference caches this process already tried to build -> (failure reason or None, seconds).
_prepared: dict[str, tuple[str | None, float]] = {}


# -- entry points called by the worker ------------------------------------------------------------
def measure_quality(engine, run: RunConfig, device: str) -> dict[str, Any]:
    """Quality metrics of the loaded engine, or {"absent": why}. Never raises."""
    if not run.quality.enabled:
        return {"absent": "quality.enabled=false"}
    if run.weights == "synthetic":
        return {"absent": "synthetic weights"}
    try:
        if run.workload.kind == "classify":
            return classifier_quality(engine, run)
        return decoder_quality(engine, run, device)
    except Exception as exc:  # noqa: BLE001 — quality is reported beside speed; it never fails the run
        log.exception("quality measurement failed")
        return {"absent": f"quality measurement failed: {_why(exc)}"}


def prepare_reference(run: RunConfig, device: str) -> str | None:
    """Before the measured model loads: make sure the reference outputs are cached, computing them in
    their own process. Returns why they are not available (or None). Never raises; remembered per process."""
    if not (run.quality.enabled and run.weights != "synthetic" and run.workload.kind == "generate"):
        return None
    try:
        plan = plan_reference(run, device)
    except Exception as exc:  # noqa: BLE001 — measure_quality meets the same error and records it
        return _why(exc)
    if plan.is_self or plan.ready:
        return None
    key = str(plan.path)
    if key not in _prepared:
        t0 = time.perf_counter()
        reason = _compute_in_subprocess(plan)
        _prepared[key] = (reason, round(time.perf_counter() - t0, 3))
    return _prepared[key][0]


# -- the reference --------------------------------------------------------------------------------
@dataclass
class ReferencePlan:
    name: str  # the reference backend's config name
    run: RunConfig  # the reference run (same model, weights, device, quality settings)
    config: dict  # what RunConfig.from_dict rebuilds `run` from (for the reference process)
    path: Path  # its cache folder
    is_self: bool  # the measured run is the reference backend

    @property
    def ready(self) -> bool:
        return (self.path / ".complete").exists()


@dataclass
class Outputs:
    """What one engine produced on the evaluation inputs (the reference's is cached)."""

    tokens: np.ndarray  # [T] evaluation token ids
    prompts: np.ndarray  # [G, P] generation prompts
    logprobs: LogProbs  # rows 0..T-2: distributions of tokens 1..T-1
    generations: np.ndarray  # [G, N] greedy new tokens
    meta: dict[str, Any] = field(default_factory=dict)


def reference_name(run: RunConfig, device: str) -> str:
    ref = run.quality.reference
    return ("fp16" if device == "cuda" else "fp32") if ref == "auto" else ref


def backend_yaml(name: str) -> dict:
    """A backend config (conf/backend/<name>.yaml) as a plain dict."""
    from omegaconf import OmegaConf

    path = BACKEND_CONF / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in BACKEND_CONF.glob("*.yaml")))
        raise ConfigError(f"quality.reference: no backend config {path.name} (choose auto or one of {known})")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def plan_reference(run: RunConfig, device: str) -> ReferencePlan:
    """The reference run for `run` (its backend replaced by the reference's YAML) and its cache folder."""
    name = reference_name(run, device)
    if name == run.backend.name and not (BACKEND_CONF / f"{name}.yaml").is_file():
        backend = {"engine": run.backend.engine, "options": as_dict(run.backend.options),
                   "description": run.backend.description}
    else:
        backend = backend_yaml(name)
    config = {"backend": backend, "model": as_dict(run.model), "workload": as_dict(run.workload),
              "weights": run.weights, "device": device, "timeout_s": run.timeout_s, "isolate": False,
              "quality": as_dict(run.quality)}
    ref = RunConfig.from_dict(config, name)
    is_self = (ref.backend.engine, ref.backend.options) == (run.backend.engine, run.backend.options)
    path = cache_path("reference", reference_key(ref, device))
    return ReferencePlan(name, ref, config, path, is_self)


def reference_key(ref: RunConfig, device: str) -> dict[str, Any]:
    """Everything the reference outputs depend on."""
    from runners.evaldata import eval_text
    from runners.models import ModelFiles

    m, q = ref.model, ref.quality
    files = ModelFiles(m, ref.weights, m.task, m.num_labels, device)
    return {
        "format": REFERENCE_FORMAT,
        "model": {k: as_dict(getattr(m, k)) for k in ("name", "hub_id", "path", "source", "architecture",
                                                       "tokenizer", "trust_remote_code")},
        "weights": ref.weights,
        "files": folder_identity(files.folder()),
        "reference": {"name": ref.backend.name, "engine": ref.backend.engine, "options": as_dict(ref.backend.options)},
        "device": device,
        "text_sha256": hashlib.sha256(eval_text(q.text).encode()).hexdigest(),
        "eval_tokens": q.eval_tokens,
        "generations": [q.generations, q.generation_tokens],
        "versions": package_versions(),
    }


def package_versions() -> dict[str, str]:
    out = {}
    for dist in VERSIONED_PACKAGES:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def eval_inputs(text: str, tokenizer: Any, eval_tokens: int, generations: int,
                generation_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """(evaluation tokens [eval_tokens], generation prompts [generations, generation_tokens]) from the
    start of `text`; only as much text as needed is tokenized."""
    need = max(eval_tokens, generations * generation_tokens)
    chars = need * 8
    while True:
        ids = list(tokenizer(text[:chars])["input_ids"])
        if len(ids) > need or chars >= len(text):
            break
        chars *= 2
    if len(ids) < need:
        raise ValueError(f"the evaluation text has {len(ids)} tokens; quality needs {need}")
    ids_arr = np.asarray(ids[:need], dtype=np.int64)
    return ids_arr[:eval_tokens], ids_arr[:generations * generation_tokens].reshape(generations, generation_tokens)


def evaluate(engine, tokens: np.ndarray, prompts: np.ndarray, new_tokens: int) -> Outputs:
    """Score the evaluation tokens and generate greedily from the prompts with `engine`."""
    from runners.timing import HostClock, StepTimer

    lp = engine.score([int(t) for t in tokens])
    rows = len(tokens) - 1
    values = np.asarray(lp.values, dtype=np.float32)
    if values.ndim != 2 or values.shape[0] < rows:
        raise ValueError(f"score returned log-probs of shape {values.shape} for {len(tokens)} tokens")
    logprobs = LogProbs(values[:rows],
                        None if lp.indices is None else np.asarray(lp.indices, dtype=np.int64)[:rows],
                        None if lp.next_token_values is None
                        else np.asarray(lp.next_token_values, dtype=np.float32)[:rows])
    timer = StepTimer(HostClock())  # generate wants a timer; these calls are not timed
    timer.begin()
    gens = engine.generate([[int(t) for t in p] for p in prompts], new_tokens, timer)
    timer.end()
    if len(gens) != len(prompts) or {len(g) for g in gens} != {new_tokens}:
        raise ValueError(f"generate returned {len(gens)} sequences of lengths {sorted({len(g) for g in gens})}")
    return Outputs(tokens, prompts, logprobs, np.asarray(gens, dtype=np.int64))


def compute_reference(engine, run: RunConfig) -> Outputs:
    """The reference's outputs on the evaluation inputs, cut with the model's tokenizer."""
    from runners.evaldata import eval_text

    q = run.quality
    tokenizer = engine.ctx.files.load_tokenizer()
    if tokenizer is None:
        raise ValueError(f"model {run.model.name} has no tokenizer to cut the evaluation text")
    tokens, prompts = eval_inputs(eval_text(q.text), tokenizer, q.eval_tokens, q.generations, q.generation_tokens)
    out = evaluate(engine, tokens, prompts, q.generation_tokens)
    out.meta = {"reference": run.backend.name, "engine": run.backend.engine, "eval_text": q.text or "bbc-news",
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return out


def save_outputs(folder: Path, out: Outputs) -> None:
    arrays = {"tokens": out.tokens, "prompts": out.prompts, "generations": out.generations,
              "values": out.logprobs.values}
    if out.logprobs.indices is not None:
        arrays["indices"] = out.logprobs.indices
    if out.logprobs.next_token_values is not None:
        arrays["next_token_values"] = out.logprobs.next_token_values
    np.savez(folder / REFERENCE_FILE, **arrays)
    (folder / "meta.json").write_text(json.dumps(out.meta, indent=1, default=str))


def load_outputs(folder: Path) -> Outputs:
    with np.load(folder / REFERENCE_FILE) as z:
        lp = LogProbs(z["values"], z["indices"] if "indices" in z else None,
                      z["next_token_values"] if "next_token_values" in z else None)
        out = Outputs(z["tokens"], z["prompts"], lp, z["generations"])
    out.meta = json.loads((folder / "meta.json").read_text())
    return out


def ensure_reference(path: Path, engine, run: RunConfig) -> tuple[Outputs, bool]:
    """(reference outputs, whether they came from the cache): computed with `engine` on a miss."""
    hit = build_once(path, lambda tmp: save_outputs(tmp, compute_reference(engine, run)))
    return load_outputs(path), hit


def _compute_in_subprocess(plan: ReferencePlan) -> str | None:
    log.info("quality: computing the %s reference once, in its own process (cached in %s)", plan.name, plan.path)
    with tempfile.TemporaryDirectory(prefix="qb_ref_") as tmp:
        plan_path, result_path = Path(tmp) / "plan.json", Path(tmp) / "result.json"
        plan_path.write_text(json.dumps({"config": plan.config, "backend_name": plan.name,
                                         "device": plan.run.device, "path": str(plan.path),
                                         "result": str(result_path)}, default=str))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.run([sys.executable, "-m", "runners.quality", str(plan_path)], env=env,
                                  timeout=plan.run.timeout_s)
        except subprocess.TimeoutExpired:
            return f"reference {plan.name}: timed out after {plan.run.timeout_s:g} s"
        if result_path.exists():
            result = json.loads(result_path.read_text())
            if result.get("absent"):
                return result["absent"]
        elif proc.returncode != 0:
            return f"reference {plan.name}: its process exited with code {proc.returncode}"
    return None if plan.ready else f"reference {plan.name}: not written to {plan.path}"


def main(argv: list[str] | None = None) -> int:
    """`python -m runners.quality PLAN.json` (written by `prepare_reference`, not typed by users):
    compute one reference and cache it; the outcome goes to the plan's result file."""
    (plan_file,) = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    plan = json.loads(Path(plan_file).read_text())
    result: dict[str, Any] = {"ok": True}
    try:
        from runners.worker import _prepare, new_record

        run = RunConfig.from_dict(plan["config"], plan["backend_name"])
        engine = _prepare(run, plan["device"], new_record(run, "reference", plan["device"]), lambda: None)
        try:
            ensure_reference(Path(plan["path"]), engine, run)
        finally:
            engine.close()
    except Exception as exc:  # noqa: BLE001 — the measured run records the reason
        log.exception("reference failed")
        result = {"absent": f"reference {plan['backend_name']}: {_why(exc)}"}
    Path(plan["result"]).write_text(json.dumps(result))
    return 0


# -- decoders -------------------------------------------------------------------------------------
def decoder_quality(engine, run: RunConfig, device: str) -> dict[str, Any]:
    plan = plan_reference(run, device)
    if plan.is_self:
        ref, hit = ensure_reference(plan.path, engine, run)
        cur = ref
        extra: dict[str, Any] = {"reference_source": "self (cached)" if hit else "self (computed now)"}
    else:
        reason = prepare_reference(run, device)
        if reason:
            return {"absent": reason, "reference": plan.name}
        ref = load_outputs(plan.path)
        cur = evaluate(engine, ref.tokens, ref.prompts, ref.generations.shape[1])
        extra = {"reference_source": "cache"}
        seconds = _prepared.get(str(plan.path), (None, None))[1]
        if seconds is not None:
            extra.update(reference_source="computed in its own process before load", reference_compute_s=seconds)
    return {**compare(ref, cur), "reference": plan.name, **extra, "reference_cache": str(plan.path),
            "eval_text": run.quality.text or "bbc-news"}


def compare(ref: Outputs, cur: Outputs) -> dict[str, Any]:
    """Quality metrics of `cur` against the reference outputs `ref` (same tokens and prompts)."""
    kl, method = qm.kl_per_position(ref.logprobs, cur.logprobs)
    targets = ref.tokens[1:]
    out: dict[str, Any] = {
        "kl_mean": float(kl.mean()),
        "kl_p99": float(np.percentile(kl, 99)),
        "kl_max": float(kl.max()),
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
    from runners.evaldata import BBC_LABELS, bbc_label_ids, bbc_split, classification_metrics, interleave_by_label

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
    _, test = bbc_split(seed=0, test_fraction=0.2)
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


def _why(exc: BaseException) -> str:
    from runners.workloads import classify_oom

    failure = classify_oom(exc)
    reason = (failure.reason or type(exc).__name__).splitlines()[0][:500]
    return reason if failure.status == "crash" else f"{failure.status}: {reason}"


if __name__ == "__main__":
    sys.exit(main())
