"""Does quantbench's vLLM engine measure what vLLM's own benchmark measures?

Runs `vllm bench throughput` (vLLM's offline throughput benchmark) and quantbench's throughput
workload on the same model, weights (dummy/synthetic), engine settings, request count and lengths,
each in its own process, then prints both output-token rates and their ratio and writes a JSON.

    python scripts/vllm_fidelity.py --backend vllm_fp16 --model llama-3.1-8b \
        --input-len 1024 --output-len 256 --num-prompts 256 --out results/fidelity_llama8b_fp16.json

The vLLM side gets its engine flags from the same `llm_kwargs()` the engine uses, so the two runs
differ only where the benchmarks themselves differ (said in the JSON's `differences`).
vLLM's random dataset needs a tokenizer: the model's own, or, for a synthetic-weights model without
one, the tokenizer of its packaged real weights.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_THROUGHPUT = re.compile(r"Throughput:\s*([\d.]+)\s*requests/s,\s*([\d.]+)\s*total tokens/s,\s*([\d.]+)\s*output tokens/s")

DIFFERENCES = [
    "vllm bench samples with temperature 1.0; quantbench decodes greedily (both ignore EOS, same token counts)",
    "vllm bench sends text prompts that vLLM tokenizes inside the timed llm.generate call (and may add a BOS "
    "token); quantbench sends token ids",
    "vllm bench times one pass after --num-warmups requests; quantbench reports the median of its repeats",
]


def parse_throughput(text: str) -> dict[str, float] | None:
    """The summary line `vllm bench throughput` prints (vllm/benchmarks/throughput.py)."""
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


def bench_command(kwargs: dict[str, Any], tokenizer: str, input_len: int, output_len: int, num_prompts: int,
                  warmups: int, output_json: str, detokenize: bool, python: str = sys.executable) -> list[str]:
    from backends.vllm.engine import kwargs_to_cli

    # Text prompts need vLLM's tokenizer; log-prob limits do not matter to this benchmark.
    engine = {k: v for k, v in kwargs.items() if k not in ("skip_tokenizer_init", "max_logprobs")}
    cmd = [python, "-m", "vllm.entrypoints.cli.main", "bench", "throughput", *kwargs_to_cli(engine),
           "--tokenizer", tokenizer, "--dataset-name", "random", "--input-len", str(input_len),
           "--output-len", str(output_len), "--num-prompts", str(num_prompts), "--num-warmups", str(warmups),
           "--output-json", output_json]
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


def _tee(cmd: list[str], log_path: Path, timeout_s: float) -> tuple[int, str]:
    """Run, echoing output, keeping it in a log file."""
    print("$ " + " ".join(cmd), flush=True)
    lines: list[str] = []
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
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


def _plan(backend: str, model: str, input_len: int, output_len: int, num_prompts: int, max_model_len: int):
    """The run quantbench will make, built from the same YAMLs Hydra composes."""
    import yaml

    from backends.contract import EngineContext
    from backends.vllm.engine import llm_kwargs
    from backends.contract import cache_dir
    from runners.plan.config import RunConfig
    from runners.open.files import ModelFiles

    backend_cfg = yaml.safe_load((ROOT / "conf" / "backend" / f"{backend}.yaml").read_text())
    if backend_cfg.get("engine") != "vllm":
        raise SystemExit(f"backend {backend!r} is a {backend_cfg.get('engine')} backend; this compares vLLM backends")
    backend_cfg.setdefault("options", {})
    backend_cfg["options"] = {**(backend_cfg["options"] or {}), "max_model_len": max_model_len}
    model_cfg = yaml.safe_load((ROOT / "conf" / "model" / f"{model}.yaml").read_text())
    workload = yaml.safe_load((ROOT / "conf" / "workload" / "throughput.yaml").read_text())
    workload.update(prompt_tokens=input_len, new_tokens=output_len, batch_sizes=[num_prompts])
    run = RunConfig.from_dict({"backend": backend_cfg, "model": model_cfg, "workload": workload,
                               "weights": "synthetic", "device": "cuda", "quality": {"enabled": False}}, backend)
    files = ModelFiles(run.model, "synthetic", "causal_lm", run.model.num_labels, "cuda")
    ctx = EngineContext(run=run, device="cuda", files=files, cache_dir=cache_dir(), num_labels=run.model.num_labels)
    return run, files, llm_kwargs(run.backend.options, ctx)


def _tokenizer_folder(run, files, dest: Path) -> str:
    tok = files.load_tokenizer()
    if tok is None and run.model.has_local_weights:
        from runners.open.files import ModelFiles

        tok = ModelFiles(run.model, "pretrained", "causal_lm", run.model.num_labels, "cuda").load_tokenizer()
    if tok is None:
        raise SystemExit(f"model {run.model.name} has no tokenizer (model.tokenizer, or packaged real weights): "
                         "vllm bench throughput's random dataset needs one")
    tok.save_pretrained(dest)
    return str(dest)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="vllm_fp16", help="a conf/backend YAML with engine: vllm")
    ap.add_argument("--model", default="llama-3.1-8b", help="a conf/model YAML")
    ap.add_argument("--input-len", type=int, default=1024)
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--num-prompts", type=int, default=256)
    ap.add_argument("--max-model-len", type=int, default=None,
                    help="both runs; default input + output + 64 (room for a BOS token and re-tokenized prompts)")
    ap.add_argument("--out", default=None, help="JSON to write (default results/vllm_fidelity_<backend>_<model>.json)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per benchmark process")
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument("--skip-quantbench", action="store_true")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for the quantbench run")
    args = ap.parse_args(argv)

    max_model_len = args.max_model_len or args.input_len + args.output_len + 64
    out = Path(args.out or ROOT / "results" / f"vllm_fidelity_{args.backend}_{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vllm_fidelity_", dir=out.parent))
    run, files, kwargs = _plan(args.backend, args.model, args.input_len, args.output_len, args.num_prompts,
                               max_model_len)
    result: dict[str, Any] = {
        "backend": args.backend, "model": args.model, "input_len": args.input_len, "output_len": args.output_len,
        "num_prompts": args.num_prompts, "max_model_len": max_model_len, "warmup_batches": run.workload.warmup,
        "llm_kwargs": {k: v for k, v in kwargs.items() if k != "model"}, "differences": DIFFERENCES,
        "work_dir": str(work),
    }

    if not args.skip_vllm:
        tok = _tokenizer_folder(run, files, work / "tokenizer")
        bench_json = work / "vllm_bench.json"
        cmd = bench_command(kwargs, tok, args.input_len, args.output_len, args.num_prompts,
                            run.workload.warmup * args.num_prompts, str(bench_json), run.backend.options.detokenize)
        rc, text = _tee(cmd, work / "vllm_bench.log", args.timeout)
        vb: dict[str, Any] = {"command": cmd, "returncode": rc, **(parse_throughput(text) or {})}
        if bench_json.exists():
            data = json.loads(bench_json.read_text())
            vb.update(elapsed_s=data.get("elapsed_time"), total_num_tokens=data.get("total_num_tokens"))
        prompt_tokens = re.findall(r"Total num prompt tokens:\s*(\d+)", text)
        if prompt_tokens:
            vb["total_prompt_tokens"] = int(prompt_tokens[-1])
        result["vllm_bench"] = vb

    if not args.skip_quantbench:
        run_dir = work / "quantbench"
        cmd = quantbench_command(args.backend, args.model, args.input_len, args.output_len, args.num_prompts,
                                 max_model_len, str(run_dir), extra=args.overrides)
        rc, _ = _tee(cmd, work / "quantbench.log", args.timeout)
        qb: dict[str, Any] = {"command": cmd, "returncode": rc}
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
    print(f"\nvllm bench throughput : {v if v is not None else 'n/a'} output tokens/s")
    print(f"quantbench (median)   : {q if q is not None else 'n/a'} output tokens/s")
    print(f"ratio quantbench/vllm : {result.get('ratio_quantbench_over_vllm', 'n/a')}")
    print(f"written: {out}")
    ok = (args.skip_vllm or v is not None) and (args.skip_quantbench or q is not None)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
