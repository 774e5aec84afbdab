"""Does quantbench's vLLM engine measure what vLLM's own benchmark measures?

Runs `vllm bench throughput` (vLLM's offline throughput benchmark, vllm/benchmarks/throughput.py)
on the same model, weights (dummy/synthetic), engine settings, request count and lengths as a
quantbench run, and writes both output-token rates and their ratio to a JSON file.

Two ways to get the quantbench side:

    # from a finished sweep record (no second model load: the campaign's way)
    python scripts/vllm_fidelity.py --record results/h200/vllm_qwen32b/<job>/record.json \
        --num-prompts 64 --out results/h200/fidelity_vllm_fp16.json
    # or run quantbench here too, from the YAMLs
    python scripts/vllm_fidelity.py --backend vllm_fp16 --model llama-3.1-8b \
        --input-len 1024 --output-len 256 --num-prompts 256 --out results/fidelity_llama8b_fp16.json

The vLLM side gets its engine flags from the same `llm_kwargs()` the engine used (rebuilt from the
record's validated config and checked against the kwargs the record says ran), so the two differ
only where the benchmarks themselves differ (listed in the JSON's `differences`).

What `vllm bench throughput` does (vLLM 0.26.0): `--dataset-name random` makes `--num-prompts`
requests of exactly `--input-len` tokens (range ratio 0: RandomDataset decodes random token ids to
text and re-encodes until the length matches) and `--output-len` new tokens each, sampled with
temperature 1.0, top_p 1.0, ignore_eos; `--num-warmups` requests (other prompts, seed + 1) run first;
then ONE pass: `time.perf_counter()` around a single `llm.generate(all prompts)`, output tokens
counted from the outputs. `LLM.from_engine_args` keeps EngineArgs' `disable_log_stats=False`.
quantbench: one `llm.generate` of the whole batch, the same host clock around it, `warmup` batches
first, then the median of `repeats` passes.

vLLM's random dataset needs a tokenizer. A synthetic-weights model has none on an offline host, so
a word-level tokenizer is made (one token per word, decode/encode exact, no special tokens added):
prompts then use token ids below its vocabulary size, which costs the model the same as any others.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_THROUGHPUT = re.compile(r"Throughput:\s*([\d.]+)\s*requests/s,\s*([\d.]+)\s*total tokens/s,\s*([\d.]+)\s*output tokens/s")
SYNTHETIC_VOCAB = 32000

DIFFERENCES = [
    "vllm bench samples with temperature 1.0 and top_p 1.0 (vLLM's random sampler); quantbench decodes "
    "greedily (argmax); both ignore EOS and produce exactly output_len tokens per request",
    "vllm bench sends text prompts that vLLM tokenizes inside the timed llm.generate call; quantbench sends "
    "token ids",
    "vllm bench times one pass after --num-warmups requests; quantbench reports the median of its repeats "
    "(its spread is given as output_tokens_per_s_cv_pct)",
    "vllm bench draws other random prompts (its dataset) than quantbench (seeded token ids); prefix caching "
    "is off in both",
]


def parse_throughput(text: str) -> dict[str, float] | None:
    """The summary line `vllm bench throughput` prints (vllm/benchmarks/throughput.py, main())."""
    matches = _THROUGHPUT.findall(text)
    if not matches:
        return None
    rps, total, output = (float(x) for x in matches[-1])
    return {"requests_per_s": rps, "total_tokens_per_s": total, "output_tokens_per_s": output}


def quantbench_throughput(record: dict, batch_size: int) -> dict[str, Any]:
    """Median output tokens/s (and TTFT, e2e) of the record's point for `batch_size`."""
    out: dict[str, Any] = {"status": record.get("status"), "reason": record.get("reason")}
    for point in record.get("points", []):
        if point.get("batch_size") != batch_size:
            continue
        out["point_status"] = point.get("status")
        metrics = point.get("metrics", {})
        for name in ("output_tokens_per_s", "ttft_ms", "tpot_ms", "e2e_ms"):
            value = metrics.get(name)
            if isinstance(value, dict) and "median" in value:
                out[f"{name}_median"] = value["median"]
                if name == "output_tokens_per_s":
                    out["output_tokens_per_s_cv_pct"] = value.get("cv_pct")
    engine = record.get("engine_info") or {}
    for key in ("vllm", "quantization_method", "linear_kernels", "attention_backend", "max_num_seqs",
                "max_num_batched_tokens", "max_model_len", "kv_cache_tokens"):
        if key in engine:
            out[key] = engine[key]
    return out


def record_mismatches(record: dict, kwargs: dict[str, Any], batch_size: int) -> list[str]:
    """Why a record cannot stand for quantbench's side (empty: it can)."""
    problems = []
    if record.get("engine") != "vllm":
        problems.append(f"the record is a {record.get('engine')} run, not a vLLM one")
    if record.get("status") != "ok":
        problems.append(f"the record's run is {record.get('status')}, not ok ({str(record.get('reason'))[:200]})")
    point = next((p for p in record.get("points", []) if p.get("batch_size") == batch_size), None)
    if point is None:
        problems.append(f"the record has no point at batch size {batch_size}")
    elif point.get("status", "ok") != "ok":
        problems.append(f"the record's batch size {batch_size} is {point.get('status')}")
    ran = (record.get("engine_info") or {}).get("llm_kwargs")
    planned = json.loads(json.dumps({k: v for k, v in kwargs.items() if k != "model"}))
    if ran is None:
        problems.append("the record does not say which vllm.LLM arguments ran (engine_info.llm_kwargs)")
    elif ran != planned:
        diff = sorted(k for k in set(ran) | set(planned) if ran.get(k) != planned.get(k))
        problems.append("the record ran other vllm.LLM arguments than this code builds from its config: "
                        + ", ".join(f"{k}: {ran.get(k)!r} vs {planned.get(k)!r}" for k in diff))
    return problems


def random_dataset_flags(input_len: int, output_len: int, num_prompts: int) -> list[str]:
    """vllm bench throughput's random dataset at exactly these lengths.

    It reads --random-input-len / --random-output-len (defaults 1024 / 128) and prefers them over
    --input-len / --output-len (vllm/benchmarks/throughput.py, get_requests): give both pairs, or vLLM
    measures 1024 + 128 (seen on the H200: its max_model_len check failed)."""
    return ["--dataset-name", "random", "--input-len", str(input_len), "--output-len", str(output_len),
            "--random-input-len", str(input_len), "--random-output-len", str(output_len),
            "--random-range-ratio", "0.0", "--num-prompts", str(num_prompts)]


def bench_command(kwargs: dict[str, Any], tokenizer: str, input_len: int, output_len: int, num_prompts: int,
                  warmups: int, output_json: str, detokenize: bool, python: str = sys.executable) -> list[str]:
    from backends.vllm.cli import kwargs_to_cli

    # Text prompts need vLLM's tokenizer; log-prob limits do not matter to this benchmark.
    engine = {k: v for k, v in kwargs.items() if k not in ("skip_tokenizer_init", "max_logprobs")}
    runner = str(Path(__file__).resolve().with_name("vllm_bench_throughput.py"))
    cmd = [python, runner, *kwargs_to_cli(engine), "--tokenizer", tokenizer,
           *random_dataset_flags(input_len, output_len, num_prompts),
           "--num-warmups", str(warmups), "--output-json", output_json]
    if not detokenize:
        cmd.append("--disable-detokenize")
    return cmd


def quantbench_command(backend: str, model: str, input_len: int, output_len: int, num_prompts: int,
                       max_model_len: int, run_dir: str, python: str = sys.executable,
                       extra: list[str] | None = None) -> list[str]:
    return [python, "-m", "runners.bench", f"backend={backend}", f"model={model}", "weights=synthetic",
            "workload=throughput", f"workload.prompt_tokens={input_len}", f"workload.new_tokens={output_len}",
            f"workload.batch_sizes=[{num_prompts}]", f"++backend.options.max_model_len={max_model_len}",
            "quality.enabled=false", "device=cuda", f"hydra.run.dir={run_dir}", *(extra or [])]


def synthetic_tokenizer(dest: Path, vocab_size: int) -> str:
    """A word-level tokenizer `w0 w1 ...`: decode then encode gives the same ids, and none are added."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{f"w{i}": i + 1 for i in range(vocab_size - 1)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(dest)
    return str(dest)


def _tee(cmd: list[str], log_path: Path, timeout_s: float, env: dict[str, str]) -> tuple[int, str]:
    """Run, echoing output, keeping it in a log file."""
    print("$ " + " ".join(cmd), flush=True)
    lines: list[str] = []
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout_s
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
            lines.append(line)
            if time.monotonic() > deadline:
                proc.kill()
                lines.append(f"[vllm_fidelity] killed after {timeout_s:.0f} s\n")
                break
        rc = proc.wait()
    return rc, "".join(lines)


def _context(run):
    from backends.contract import EngineContext, cache_dir
    from runners.evaldata import BbcTexts
    from backends.vllm.args import llm_kwargs
    from runners.open.files import ModelFiles

    files = ModelFiles(run.model, run.weights, "causal_lm", run.model.num_labels, "cuda")
    ctx = EngineContext(run=run.engine_view("cuda"), files=files, texts=BbcTexts(), cache_dir=cache_dir())
    return files, llm_kwargs(run.backend.options, ctx)


def run_from_yamls(backend: str, model: str, workload: dict[str, Any], options: dict[str, Any],
                   model_fields: dict[str, Any] | None = None):
    """The vLLM throughput run quantbench makes from the same YAMLs Hydra composes (synthetic weights,
    quality off), with `workload`, backend `options` and `model_fields` laid over them."""
    import yaml

    from runners.plan.config import RunConfig

    backend_cfg = yaml.safe_load((ROOT / "conf" / "backend" / f"{backend}.yaml").read_text())
    if backend_cfg.get("engine") != "vllm":
        raise SystemExit(f"backend {backend!r} is a {backend_cfg.get('engine')} backend; this compares vLLM backends")
    backend_cfg["options"] = {**(backend_cfg.get("options") or {}), **options}
    model_cfg = {**yaml.safe_load((ROOT / "conf" / "model" / f"{model}.yaml").read_text()), **(model_fields or {})}
    wl = {**yaml.safe_load((ROOT / "conf" / "workload" / "throughput.yaml").read_text()), **workload}
    return RunConfig.from_dict({"backend": backend_cfg, "model": model_cfg, "workload": wl,
                                "weights": "synthetic", "device": "cuda", "quality": {"enabled": False}}, backend)


def plan_from_yamls(backend: str, model: str, input_len: int, output_len: int, num_prompts: int,
                    max_model_len: int):
    """The run quantbench will make, built from the same YAMLs Hydra composes."""
    run = run_from_yamls(backend, model, {"prompt_tokens": input_len, "new_tokens": output_len,
                                          "batch_sizes": [num_prompts]}, {"max_model_len": max_model_len})
    return (run, *_context(run))


def plan_from_record(record: dict):
    """The run the record measured, rebuilt from its validated config (not re-resolved from YAMLs)."""
    from runners.plan.config import RunConfig

    run = RunConfig.from_plan(record["config"])
    return (run, *_context(run))


def _tokenizer(args, run, files, dest: Path) -> tuple[str, str]:
    if args.tokenizer:
        return args.tokenizer, "given (--tokenizer)"
    tok = files.load_tokenizer()
    if tok is not None:
        tok.save_pretrained(dest)
        return str(dest), "the model's own"
    vocab = min(SYNTHETIC_VOCAB, int(run.model.architecture.get("vocab_size") or SYNTHETIC_VOCAB))
    return synthetic_tokenizer(dest, vocab), f"synthetic word-level, {vocab} tokens (the model ships none here)"


def run_vllm_bench(args, run, files, kwargs, work: Path, input_len: int, output_len: int) -> dict[str, Any]:
    from backends.vllm.args import vllm_environment

    tok, tok_kind = _tokenizer(args, run, files, work / "tokenizer")
    bench_json = work / "vllm_bench.json"
    warmups = (run.workload.warmup if args.warmup_batches is None else args.warmup_batches) * args.num_prompts
    cmd = bench_command(kwargs, tok, input_len, output_len, args.num_prompts, warmups,
                        str(bench_json), run.backend.options.detokenize)
    rc, text = _tee(cmd, work / "vllm_bench.log", args.timeout, vllm_environment())
    vb: dict[str, Any] = {"command": cmd, "returncode": rc, "tokenizer": tok_kind, "num_warmups": warmups,
                          **(parse_throughput(text) or {})}
    if bench_json.exists():
        data = json.loads(bench_json.read_text())
        vb.update(elapsed_s=data.get("elapsed_time"), total_num_tokens=data.get("total_num_tokens"))
    for key, pattern in (("total_prompt_tokens", r"Total num prompt tokens:\s*(\d+)"),
                         ("total_output_tokens", r"Total num output tokens:\s*(\d+)")):
        found = re.findall(pattern, text)
        if found:
            vb[key] = int(found[-1])
    if rc != 0:
        vb["log_tail"] = text[-3000:]
    return vb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--record", default=None, help="a finished quantbench record.json of a vLLM backend: its point "
                    "at --num-prompts is quantbench's side, and vllm bench runs its exact engine settings")
    ap.add_argument("--backend", default="vllm_fp16", help="without --record: a conf/backend YAML with engine: vllm")
    ap.add_argument("--model", default="llama-3.1-8b", help="without --record: a conf/model YAML")
    ap.add_argument("--input-len", type=int, default=1024, help="without --record")
    ap.add_argument("--output-len", type=int, default=256, help="without --record")
    ap.add_argument("--num-prompts", type=int, default=256, help="requests sent at once (the batch size compared)")
    ap.add_argument("--max-model-len", type=int, default=None, help="without --record: both runs; default input + output")
    ap.add_argument("--tokenizer", default=None, help="for vllm bench's random dataset; default: the model's, "
                    "else a synthetic word-level one")
    ap.add_argument("--out", default=None, help="JSON to write (default results/vllm_fidelity_<backend>_<model>.json)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per benchmark process")
    ap.add_argument("--warmup-batches", type=int, default=None, help="vllm bench's warm-up, in batches of "
                    "--num-prompts requests (default: the quantbench workload's warmup); on the H100 its one timed "
                    "pass read 3%% below its own timed region on a warm engine (results/README.md, Fidelity)")
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument("--skip-quantbench", action="store_true", help="without --record: do not run quantbench")
    ap.add_argument("overrides", nargs="*", help="without --record: extra Hydra overrides for the quantbench run")
    args = ap.parse_args(argv)

    record = json.loads(Path(args.record).read_text()) if args.record else None
    if record is not None:
        run, files, kwargs = plan_from_record(record)
        problems = record_mismatches(record, kwargs, args.num_prompts)
        if problems:
            print("error: " + "; ".join(problems), file=sys.stderr)
            return 2
        backend, model = run.backend.name, run.model.name
        input_len, output_len = run.workload.prompt_tokens, run.workload.new_tokens
    else:
        backend, model, input_len, output_len = args.backend, args.model, args.input_len, args.output_len
        run, files, kwargs = plan_from_yamls(backend, model, input_len, output_len, args.num_prompts,
                                             args.max_model_len or input_len + output_len)
    out = Path(args.out or ROOT / "results" / f"vllm_fidelity_{backend}_{model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Logs beside the JSON, so they travel back with it (the tokenizer is rebuilt, not kept).
    work = out.parent / f"{out.stem}_work"
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "backend": backend, "model": model, "input_len": input_len, "output_len": output_len,
        "num_prompts": args.num_prompts, "warmup_batches": run.workload.warmup, "repeats": run.workload.repeats,
        "llm_kwargs": {k: v for k, v in kwargs.items() if k != "model"}, "differences": DIFFERENCES,
        "work_dir": str(work),
    }
    if not args.skip_vllm:
        result["vllm_bench"] = run_vllm_bench(args, run, files, kwargs, work, input_len, output_len)
    if record is not None:
        result["quantbench"] = {"source": f"record {args.record}", "run_id": record.get("run_id"),
                                **quantbench_throughput(record, args.num_prompts)}
    elif not args.skip_quantbench:
        run_dir = work / "quantbench"
        cmd = quantbench_command(backend, model, input_len, output_len, args.num_prompts, kwargs["max_model_len"],
                                 str(run_dir), extra=args.overrides)
        rc, _ = _tee(cmd, work / "quantbench.log", args.timeout, {})
        qb: dict[str, Any] = {"source": "run here", "command": cmd, "returncode": rc}
        record_path = run_dir / "record.json"
        if record_path.exists():
            qb["record"] = str(record_path)
            qb.update(quantbench_throughput(json.loads(record_path.read_text()), args.num_prompts))
        result["quantbench"] = qb

    v = result.get("vllm_bench", {}).get("output_tokens_per_s")
    q = result.get("quantbench", {}).get("output_tokens_per_s_median")
    if v and q:
        result["ratio_quantbench_over_vllm"] = round(q / v, 4)
    out.write_text(json.dumps(result, indent=1, default=str))
    shutil.rmtree(work / "tokenizer", ignore_errors=True)
    print(f"\nvllm bench throughput : {v if v is not None else 'n/a'} output tokens/s")
    print(f"quantbench (median)   : {q if q is not None else 'n/a'} output tokens/s")
    print(f"ratio quantbench/vllm : {result.get('ratio_quantbench_over_vllm', 'n/a')}")
    print(f"written: {out}")
    ok = (args.skip_vllm or v is not None) and (args.skip_quantbench or q is not None)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
