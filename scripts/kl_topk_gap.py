"""How far is a vLLM row's top-k KL from the full-vocabulary KL? (issue 33)

vLLM returns only the top k log-probs of each position (backend option `score_top_k`, default 20),
so quantbench's KL for a vLLM row is a "lumped" top-k KL (runners/quality/metrics.py: the tokens
both sides report, plus one bucket holding each side's remaining mass). This script measures the gap
on backends where the full distributions exist: the transformers rows of a finished CPU sweep
(llm-compressor checkpoints run decompressed, LLM.int8), against that sweep's own reference.

For each candidate backend, with quantbench's own code paths:
- the run is rebuilt from the sweep's record (`RunConfig.from_plan`), its reference planned as the sweep
  planned it (`reference_run`) and read from, or computed into, the reference cache (`ensure_reference`);
- the engine is opened as a run opens it (`open_engine`: check, prepare — the checkpoint is built once
  and cached —, load, census verdict) and scored on the reference's tokens (`evaluate`);
- full KL per position is `kl_per_position` on the two full distributions (what the record holds);
- the candidate's distributions are cut to its top k the way a vLLM row gets them: per position a
  vLLM-shaped {token: log-prob} dict of the top k plus the actual next token, converted by the vLLM
  engine's own `topk_logprobs` / `next_token_logprobs` (backends/vllm/outputs.py);
- top-k KL is `kl_per_position` on (reference, truncated candidate): the lumped path, two ways:
  `ref_full` — the reference keeps its full distribution, as with `quality.reference=auto` (fp16 through
  transformers on a GPU): both sides are lumped onto the candidate's top k + rest;
  `both_topk` — the reference is truncated to its own top k too (a vLLM reference,
  `quality.reference=vllm_fp16`): both sides are lumped onto the tokens both report + rest.
Both lump the two sides onto the same partition of the vocabulary, so by the data-processing
inequality the top-k KL can only be lower than the full KL (a lower bound), never higher.

    python scripts/kl_topk_gap.py --sweep results/cpu/ct_smollm2 \
        --backends ct_gptq_w4a16,ct_fp8_dynamic,bnb_int8 --k 20,5,50

writes `<sweep>/kl_topk_gap.json` and `.md` (atomically, beside the sweep's records).
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backends.contract import LogProbs, safefs  # noqa: E402
from backends.vllm.options import Options as VllmOptions  # noqa: E402
from backends.vllm.outputs import next_token_logprobs, topk_logprobs  # noqa: E402
from runners.quality import metrics as qm  # noqa: E402

DEFAULT_K = VllmOptions.score_top_k  # what a vLLM row scores with unless its YAML says otherwise
VARIANTS = {
    "ref_full": "reference full (quality.reference=auto: fp16/fp32 through transformers), candidate cut to its top k",
    "both_topk": "reference and candidate each cut to their own top k (a vLLM reference)",
}
# Per-position slack for "top-k KL <= full KL": float32 log-probs, float64 sums.
BOUND_TOL = 1e-5
log = logging.getLogger("quantbench")


# -- the math (no model: tests/test_kl_topk_gap.py) --------------------------------------------------
def _vllm_entries(row: np.ndarray, k: int, actual: int | None) -> dict[int, float]:
    """One position as vLLM's prompt_logprobs gives it: the top k, plus the actual next token."""
    top = np.argpartition(-row, k - 1)[:k] if k < row.shape[-1] else np.arange(row.shape[-1])
    out = {int(t): float(row[t]) for t in top}
    if actual is not None:
        out[int(actual)] = float(row[actual])
    return out


def truncate_like_vllm(lp: LogProbs, k: int, tokens: Sequence[int]) -> LogProbs:
    """Full log-probs [T-1, V] (row t: distribution of tokens[t + 1]) cut to what a vLLM row holds:
    built through the vLLM engine's own conversion of its prompt_logprobs (top k, best first)."""
    values = np.asarray(lp.values)
    rows = values.shape[0]
    if len(tokens) != rows + 1:
        raise ValueError(f"{rows} log-prob rows for {len(tokens)} tokens")
    if not 1 <= k <= values.shape[-1]:
        raise ValueError(f"k={k} outside 1..{values.shape[-1]}")
    # vLLM scoring these T tokens: prompt_logprobs[0] is None (no distribution for the first token),
    # prompt_logprobs[i] holds the distribution of token i (top k + the actual token), and the first
    # sampled step's logprobs the one after the prompt, which quality never reads (cut below, as
    # runners.quality.reference.evaluate cuts it): the last prompt row stands in for it.
    prompt = [None] + [_vllm_entries(values[t], k, tokens[t + 1]) for t in range(rows)]
    top_v, top_i = topk_logprobs(prompt, prompt[-1], k)
    return LogProbs(top_v[:rows], top_i[:rows], next_token_logprobs(prompt, list(tokens)))


def stats(kl: np.ndarray) -> dict[str, float]:
    """Mean, p99 and max as the record's quality section computes them (runners.quality.measure.compare)."""
    return {"mean": float(kl.mean()), "p99": float(np.percentile(kl, 99)), "max": float(kl.max())}


def summarize(full: np.ndarray, topk: np.ndarray) -> dict[str, Any]:
    """Full and top-k KL per position -> their summaries and the gap of the means."""
    full, topk = np.asarray(full, dtype=np.float64), np.asarray(topk, dtype=np.float64)
    if full.shape != topk.shape or full.ndim != 1 or not len(full):
        raise ValueError(f"KL arrays of shapes {full.shape} and {topk.shape}")
    f, t = stats(full), stats(topk)
    gap = f["mean"] - t["mean"]
    return {
        "positions": int(len(full)),
        "kl_full_nats": f,
        "kl_topk_nats": t,
        "gap_mean_nats": gap,
        # share of the full mean that the top-k KL misses; absent (None) when the full KL is 0
        "gap_mean_pct": 100.0 * gap / f["mean"] if f["mean"] > 0 else None,
        "ratio_topk_to_full_mean": t["mean"] / f["mean"] if f["mean"] > 0 else None,
        "positions_topk_above_full": int(np.sum(topk > full + BOUND_TOL)),
    }


def gap_rows(ref: LogProbs, cur: LogProbs, tokens: Sequence[int], ks: Sequence[int]) -> dict[str, Any]:
    """Everything the report says of one candidate: full KL once, then per k and variant the top-k KL,
    its gap, and top-1 agreement either way (full vs the vLLM-shaped top k)."""
    if not (qm.is_full(ref) and qm.is_full(cur)):
        raise ValueError("both sides need full distributions to measure the gap")
    full, method = qm.kl_per_position(ref, cur)
    assert method == "full", method
    top1_full = qm.top1_agreement_pct(ref, cur)
    ref_mass = np.exp(np.asarray(ref.values, dtype=np.float64))
    out: dict[str, Any] = {"kl_full_nats": stats(full), "top1_agreement_pct": top1_full, "by_k": {}}
    for k in ks:
        cur_k = truncate_like_vllm(cur, k, tokens)
        ref_k = truncate_like_vllm(ref, k, tokens)
        # probability mass outside the candidate's top k, on each side (what the lumped bucket holds)
        ref_tail = 1.0 - np.take_along_axis(ref_mass, cur_k.indices, axis=-1).sum(axis=-1)
        cur_tail = 1.0 - np.exp(cur_k.values.astype(np.float64)).sum(axis=-1)
        entry: dict[str, Any] = {
            "candidate_tail_mass_mean": float(cur_tail.mean()),
            "reference_mass_outside_candidate_topk_mean": float(ref_tail.mean()),
            "top1_agreement_pct_topk": qm.top1_agreement_pct(ref_k, cur_k),
            "top1_agreement_pct_ref_full": qm.top1_agreement_pct(ref, cur_k),
        }
        for variant, (a, b) in (("ref_full", (ref, cur_k)), ("both_topk", (ref_k, cur_k))):
            topk, how = qm.kl_per_position(a, b)
            entry[variant] = {**summarize(full, topk), "kl_method": how}
        out["by_k"][str(k)] = entry
    return out


# -- the models (quantbench's own paths) -------------------------------------------------------------
def _run_of(sweep: Path, backend: str):
    from runners.plan.config import RunConfig
    from runners.record.store import find_records

    recs = [r for r in find_records(sweep) if r.backend == backend and r.status == "ok"]
    if not recs:
        raise SystemExit(f"{sweep}: no ok record of backend {backend}")
    rec = recs[-1]
    return RunConfig.from_plan(rec.config), rec


def _open(run):
    from runners.open.engine import make_engine, open_engine

    engine = make_engine(run.backend, run.model, run.engine_view("cpu"))
    facts: dict[str, Any] = {}
    open_engine(engine, run.backend, facts)
    return engine, facts


def reference_outputs(run) -> tuple[Any, Any, dict[str, Any]]:
    """(the reference's config, its outputs, how they were had): from the cache, else computed into it."""
    from runners.plan.planner import reference_run
    from runners.plan.search import ConfigSearch
    from runners.quality.reference import ensure_reference, load_outputs, ready, reference_path

    ref_run = reference_run(run, "cpu", ConfigSearch())
    path = reference_path(ref_run, "cpu")
    if ready(path):
        return ref_run, load_outputs(path), {"source": "cache", "cache": str(path)}
    t0 = time.perf_counter()
    engine, facts = _open(ref_run)
    try:
        out, hit = ensure_reference(path, engine, ref_run)
    finally:
        engine.close()
    return ref_run, out, {"source": "cache" if hit else "computed now", "cache": str(path),
                          "compute_s": round(time.perf_counter() - t0, 1), "load_s": facts.get("load_s")}


def candidate(run, ref) -> tuple[Any, dict[str, Any], list[str]]:
    """(its outputs on the reference's inputs, the record-style quality dict, its engine's packages)."""
    from runners.quality.measure import compare
    from runners.quality.reference import evaluate

    t0 = time.perf_counter()
    engine, facts = _open(run)
    try:
        cur = evaluate(engine, ref.tokens, ref.prompts, ref.generations.shape[1])
        describe = engine.describe()
        packages = list(engine.packages)
    finally:
        engine.close()
    quality = compare(ref, cur)
    info = {"open_and_score_s": round(time.perf_counter() - t0, 1), "prepare_s": facts.get("prepare_s"),
            "load_s": facts.get("load_s"), "quantize_s": facts.get("quantize_s"),
            "checkpoint": describe.get("checkpoint"), "linear_kernels": describe.get("linear_kernels"),
            "quality_as_recorded_now": {k: quality[k] for k in ("kl_mean_nats", "kl_p99_nats", "kl_max_nats",
                                                                  "top1_agreement_pct", "perplexity")
                                        if k in quality}}
    return cur, info, packages


# -- the report --------------------------------------------------------------------------------------
def _f(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}g}"


def _reproduced(row: dict[str, Any]) -> bool:
    recorded = (row.get("record_quality") or {}).get("kl_mean_nats")
    return recorded is not None and abs(recorded - row["kl_full_nats"]["mean"]) <= 1e-9 * max(1.0, abs(recorded))


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Top-k (vLLM) KL vs full-vocabulary KL, same checkpoints (issue 33)",
        "",
        f"Model **{result['model']}** ({result['weights']} weights), reference **{result['reference']['backend']}**, "
        f"{result['text']['positions']} scored positions of {result['text']['eval_tokens']} tokens of "
        f"{result['text']['eval_text']} (the sweep's quality text). KL(reference || candidate), nats per position.",
        "Top-k KL: the candidate cut to its top k as vLLM returns it, KL over the reported tokens + one lumped "
        "bucket (`kl_per_position`). `ref full`: the reference keeps its full distribution (what a vLLM row gets "
        "with `quality.reference=auto`); `both top-k`: the reference cut to its own top k as well. "
        "Gap = (full − top-k) / full, of the means. Both are lower bounds of the full KL "
        "(data-processing inequality: both sides lumped onto one partition).",
        "",
        "| backend | k | positions | full KL mean | top-k KL mean (ref full) | gap | top-k KL mean (both top-k) | gap "
        "| full p99 / max | top-k p99 / max (ref full) | candidate mass outside its top k | top-1 agree % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["backends"].items():
        f = row["kl_full_nats"]
        for k, e in row["by_k"].items():
            a, b = e["ref_full"], e["both_topk"]
            lines.append(
                f"| {name} | {k} | {a['positions']} | {_f(f['mean'])} | {_f(a['kl_topk_nats']['mean'])} | "
                f"{_f(a['gap_mean_pct'], 3)}% | {_f(b['kl_topk_nats']['mean'])} | {_f(b['gap_mean_pct'], 3)}% | "
                f"{_f(f['p99'])} / {_f(f['max'])} | {_f(a['kl_topk_nats']['p99'])} / {_f(a['kl_topk_nats']['max'])} | "
                f"{_f(e['candidate_tail_mass_mean'])} | {_f(row['top1_agreement_pct'])} |")
    env = result["env"]
    lines += ["", "Full KL here (`compare`, the record's code path) vs the sweep's record of the same backend: " + "; ".join(
        f"{name} {_f(row['kl_full_nats']['mean'])} vs {_f((row.get('record_quality') or {}).get('kl_mean_nats'))}"
        + (" (reproduced)" if _reproduced(row) else " (NOT reproduced" + (
            f": its checkpoint was rebuilt in this run (quantize_s {row['run']['quantize_s']:.0f} s) and is not the "
            "sweep's" if (row.get("run") or {}).get("quantize_s") else "") + "; the gap above is for this run's model)")
        for name, row in result["backends"].items()) + "."]
    lines += [
        "",
        f"Top-1 agreement is the same from the full distributions and from the top-k ones (checked per row: "
        f"{'yes' if result['top1_same_either_way'] else 'NO'}). Positions where a top-k KL exceeded the full KL "
        f"by more than {BOUND_TOL:g} nats: {result['bound_violations']}.",
        "",
        f"Machine: {env.get('cpu')} ({env.get('cpu_count')} cores, torch threads {env.get('torch_threads')}), "
        f"{', '.join(f'{k} {v}' for k, v in sorted(env.get('packages', {}).items()))}; git {env.get('git', {}).get('commit')}"
        f"{' (dirty)' if env.get('git', {}).get('dirty') else ''}. Run took {result['wall_s']:.0f} s.",
        "",
        "```bash",
        *result["commands"],
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweep", default="results/cpu/ct_smollm2", help="a finished CPU sweep folder (its records)")
    ap.add_argument("--backends", default="ct_gptq_w4a16,ct_fp8_dynamic,bnb_int8",
                    help="transformers backends of the sweep (full distributions)")
    ap.add_argument("--k", default=f"{DEFAULT_K},5,50", help=f"top-k sizes (vLLM's score_top_k default: {DEFAULT_K})")
    ap.add_argument("--out", default=None, help="output stem (default: <sweep>/kl_topk_gap)")
    ap.add_argument("--setup", action="append", default=[],
                    help="a command that prepared the environment (recorded with the command, in order)")
    ap.add_argument("--render", default=None, metavar="JSON",
                    help="only rewrite the Markdown beside an existing result JSON (nothing is measured)")
    args = ap.parse_args(argv)
    if args.render:
        src = Path(args.render)
        safefs.write_text(src.with_suffix(".md"), markdown(json.loads(src.read_text())), src.parent)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    from runners.measure import env as envinfo

    t0 = time.perf_counter()
    sweep = Path(args.sweep)
    ks = [int(k) for k in args.k.split(",")]
    names = [b for b in args.backends.split(",") if b]
    runs = {name: _run_of(sweep, name) for name in names}
    first_run, _ = runs[names[0]]
    ref_run, ref, ref_info = reference_outputs(first_run)
    tokens = [int(t) for t in ref.tokens]
    result: dict[str, Any] = {
        "what": "KL(reference || candidate) per position: full vocabulary vs vLLM-style top-k lumped",
        "sweep": str(sweep), "model": first_run.model.name, "weights": first_run.weights,
        "reference": {"backend": ref_run.backend.name, **ref_info},
        "text": {"eval_text": first_run.quality.text or "bbc-news (held-out test split)",
                 "eval_tokens": int(len(ref.tokens)), "positions": int(ref.logprobs.values.shape[0]),
                 "vocab": int(ref.logprobs.values.shape[1])},
        "ks": ks, "default_k": DEFAULT_K, "variants": VARIANTS, "bound_tolerance_nats": BOUND_TOL,
        "backends": {},
    }
    packages: set[str] = set()
    for name in names:
        run, rec = runs[name]
        if (run.model.name, run.quality) != (first_run.model.name, first_run.quality):
            raise SystemExit(f"{name}: another model or quality setting than {names[0]}")
        log.info("kl_topk_gap: %s", name)
        cur, info, pk = candidate(run, ref)
        packages.update(pk)
        row = gap_rows(ref.logprobs, cur.logprobs, tokens, ks)
        row["run"] = info
        row["record_quality"] = {k: rec.quality.metrics.get(k) for k in ("kl_mean_nats", "kl_p99_nats",
                                                                         "top1_agreement_pct", "perplexity")}
        result["backends"][name] = row
    result["top1_same_either_way"] = all(
        e["top1_agreement_pct_topk"] == e["top1_agreement_pct_ref_full"] == row["top1_agreement_pct"]
        for row in result["backends"].values() for e in row["by_k"].values())
    result["bound_violations"] = sum(e[v]["positions_topk_above_full"] for row in result["backends"].values()
                                     for e in row["by_k"].values() for v in VARIANTS)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["env"] = envinfo.capture("cpu", tuple(sorted(packages)))
    given = sys.argv[1:] if argv is None else list(argv)
    shown = [a for i, a in enumerate(given) if not (a == "--setup" or a.startswith("--setup=")
                                                    or (i and given[i - 1] == "--setup"))]
    result["commands"] = [*args.setup, f"python {shlex.join(['scripts/kl_topk_gap.py', *shown])}"]
    result["env"]["python_executable"] = sys.executable
    stem = Path(args.out) if args.out else sweep / "kl_topk_gap"
    safefs.write_text(stem.with_suffix(".json"), json.dumps(result, indent=1, default=str) + "\n", stem.parent)
    safefs.write_text(stem.with_suffix(".md"), markdown(result), stem.parent)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
