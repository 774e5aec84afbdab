#!/usr/bin/env python3
"""Does quantbench's serving client read what vLLM's own `vllm bench serve` reads, on the same server?

Starts the server a quantbench serve record ran (its exact command, on a new free port) and, at one
offered rate, sends the same prompts three times, one pass after another on the same warm server:

  A   quantbench's client (runners.workload.client), as `workload=serve` sends them;
  V   `vllm bench serve` (vLLM's own client), custom dataset = the same prompts, the same rate,
      Poisson arrivals (burstiness 1), the same output length with ignore_eos, greedy;
  A2  quantbench's client again: A vs A2 is the run-to-run spread the comparison is read against.

From V's per-request samples (`--save-detailed`: start time, TTFT, every inter-token gap, output length)
it also computes quantbench's statistics, so a difference splits into the clients' measurements (ours on
A vs ours on V's samples) and the metric definitions (ours on V's samples vs vLLM's report of them).

    python scripts/serve_crosscheck.py --record results/h200/serve_qwen2.5-7b/<job>/record.json \\
        --rate 16 --seconds 10 --out results/h200/serve_qwen2.5-7b/crosscheck/vllm_fp16_16rps.json

Needs the machine the record ran on (its model folder) and vLLM installed; the JSON keeps both
readings, the ratios, the server command and the differences between the two benchmarks.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backends.contract.server import ServerProcess  # noqa: E402
from runners.measure.serving import RequestSample, load_point_stats  # noqa: E402
from runners.measure.stats import Stat  # noqa: E402
from runners.plan.config import ServeSpec  # noqa: E402
from runners.record.store import dumps  # noqa: E402

# (name in the table, quantbench's metric and statistic, vLLM bench serve's result key)
COMPARED = [
    ("output tokens/s", "served_output_tokens_per_s", None, "output_throughput"),
    ("requests/s", "achieved_rate_per_s", None, "request_throughput"),
    ("TTFT median ms", "ttft_ms", "median", "median_ttft_ms"),
    ("TTFT p90 ms", "ttft_ms", "p90", "p90_ttft_ms"),
    ("TPOT median ms", "tpot_ms", "median", "median_tpot_ms"),
    ("TPOT p90 ms", "tpot_ms", "p90", "p90_tpot_ms"),
    ("ITL median ms", "itl_ms", "median", "median_itl_ms"),
    ("ITL p90 ms", "itl_ms", "p90", "p90_itl_ms"),
    ("E2E p90 ms", "e2e_ms", "p90", "p90_e2el_ms"),
]

DIFFERENCES = [
    "clients: quantbench's is one thread per in-flight request (standard library http.client); vLLM's is one "
    "asyncio event loop (aiohttp). Each stamps a chunk when its own loop reads it",
    "arrivals: both Poisson at the same offered rate, from different random draws (quantbench's A and A2 "
    "use two seeds): the same prompts in the same order arrive at other instants, and below saturation a "
    "pass's load is its realized arrival rate (`realized_arrival_rate_per_s`), which moves every latency",
    "definitions: both end a request at its last chunk with tokens (vLLM bench's `latency`), take TPOT = "
    "(E2E - TTFT) / (tokens - 1) per request, ITL = every gap between chunks, and numpy's linear-interpolated "
    "percentiles: quantbench's statistics on vLLM bench's own samples (`ours_on_vllm_samples`) reproduce its "
    "report",
    "duration: quantbench's runs from the first send to the last token; vLLM bench's from before its first "
    "send to after its last response",
    "warm-up: both send the same number of warm-up requests first and keep none (quantbench: other prompts, "
    "one by one; vLLM bench: its first prompt, concurrently, after one ready-check request)",
]


def value(metrics: dict[str, Any], key: str, stat: str | None) -> float | None:
    v = metrics.get(key)
    if v is None:
        return None
    if isinstance(v, Stat):
        return float(getattr(v, stat or "median"))
    return float(v)


def samples_from_vllm(result: dict[str, Any]) -> list[RequestSample]:
    """vLLM bench serve's detailed per-request data as quantbench samples (times in seconds)."""
    out = []
    starts, errors = result.get("start_times") or [], result.get("errors") or []
    for i, (ttft, itl, n) in enumerate(zip(result["ttfts"], result["itls"], result["output_lens"])):
        err = errors[i] if i < len(errors) else ""
        start = float(starts[i]) if i < len(starts) else 0.0
        if err or not n or ttft is None:
            out.append(RequestSample(start, error=str(err or "no output")))
            continue
        times = [start + float(ttft)]
        for gap in itl or []:
            times.append(times[-1] + float(gap))
        out.append(RequestSample(start, times, int(n)))
    return out


def bench_serve_cmd(base_url: str, model: str, dataset: Path, n: int, warm: int, rate: float, new_tokens: int,
                    seed: int, result_dir: Path) -> list[str]:
    return [sys.executable, "-m", "vllm.entrypoints.cli.main", "bench", "serve", "--backend", "vllm",
            "--base-url", base_url, "--endpoint", "/v1/completions", "--model", model, "--tokenizer", model,
            "--dataset-name", "custom", "--dataset-path", str(dataset), "--custom-output-len", str(new_tokens),
            "--skip-chat-template", "--disable-shuffle", "--num-prompts", str(n), "--num-warmups", str(warm),
            "--request-rate", "inf" if math.isinf(rate) else f"{rate:g}", "--burstiness", "1.0",
            "--seed", str(seed), "--ignore-eos", "--temperature", "0",
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99",
            "--save-result", "--save-detailed", "--result-dir", str(result_dir),
            "--result-filename", "vllm_bench_serve.json", "--disable-tqdm"]


def arrival_rate(sent_s: list[float]) -> float | None:
    """Requests per second between a pass's first and last send: the load it really offered."""
    if len(sent_s) < 2:
        return None
    span = max(sent_s) - min(sent_s)
    return round((len(sent_s) - 1) / span, 3) if span > 0 else None


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| quantity | quantbench A | quantbench A2 | A2/A | vLLM bench serve | A/vLLM | ours on vLLM's samples |",
             "|---|---|---|---|---|---|---|"]

    def f(x: float | None) -> str:
        return "—" if x is None else (f"{x:,.1f}" if abs(x) >= 10 else f"{x:.3f}")

    def r(x: float | None) -> str:
        return "—" if x is None else f"{x:.3f}"
    for row in rows:
        lines.append(f"| {row['quantity']} | {f(row['ours_a'])} | {f(row['ours_a2'])} | {r(row['a2_over_a'])} | "
                     f"{f(row['vllm'])} | {r(row['a_over_vllm'])} | {f(row['ours_on_vllm_samples'])} |")
    return "\n".join(lines)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 4)


def compare(ours_a: dict, ours_a2: dict, vllm: dict, ours_v: dict) -> list[dict[str, Any]]:
    rows = []
    for name, key, stat, vkey in COMPARED:
        a, a2, o = value(ours_a, key, stat), value(ours_a2, key, stat), value(ours_v, key, stat)
        v = vllm.get(vkey)
        v = float(v) if v is not None else None
        rows.append({"quantity": name, "ours_a": a, "ours_a2": a2, "a2_over_a": ratio(a2, a), "vllm": v,
                     "a_over_vllm": ratio(a, v), "ours_on_vllm_samples": o, "ours_v_over_vllm": ratio(o, v)})
    return rows


def plain(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, Stat):
            out[k] = {s: round(getattr(v, s), 3) for s in ("median", "mean", "p90", "p99", "min", "max", "cv_pct", "n")}
        else:
            out[k] = round(float(v), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--record", type=Path, required=True, help="a quantbench serve record.json (vLLM engine)")
    p.add_argument("--rate", type=float, required=True, help="offered rate, req/s (inf: all at once)")
    p.add_argument("--requests", type=int, default=64, help="requests per pass (at least; default 64)")
    p.add_argument("--seconds", type=float, default=None, help="seconds of arrivals per pass (rate x seconds)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up requests before each pass (default 2)")
    p.add_argument("--out", type=Path, required=True, help="the JSON to write (its folder gets the logs)")
    p.add_argument("--start-timeout", type=float, default=900.0)
    args = p.parse_args(argv)

    from backends.vllm.args import vllm_environment
    from runners.workload.client import Request, run_load_point
    from runners.workload.serve import bbc_prompts

    rec = json.loads(args.record.read_text())
    server = (rec.get("engine_info") or {}).get("server") or {}
    cmd = server.get("command")
    if rec.get("engine") != "vllm" or not cmd or "serve" not in cmd:
        print(f"{args.record}: not a vLLM serve record (engine {rec.get('engine')!r}, no server command)",
              file=sys.stderr)
        return 2
    model = cmd[cmd.index("serve") + 1]
    wl = rec["config"]["workload"]
    seed = int(wl.get("seed", 0))
    # Sized as the serve workload sizes a load point (serve.requests, serve.seconds).
    n = ServeSpec(rates=[args.rate], requests=args.requests, seconds=args.seconds).requests_at(args.rate)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    texts = bbc_prompts(tokenizer, int(wl["prompt_tokens"]), n + args.warmup)
    warm, measured = texts[:args.warmup], texts[args.warmup:]
    new_tokens = int(wl["new_tokens"])
    folder = args.out.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    dataset = folder / "prompts.jsonl"
    # vLLM bench's custom dataset: the measured prompts (its warm-up resends the first of them).
    dataset.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in measured))

    def extra(req: Request) -> dict:
        return {"ignore_eos": True, "min_tokens": req.max_tokens, "return_token_ids": True}

    reqs = [Request(t, new_tokens) for t in measured]
    warm_reqs = [Request(t, new_tokens) for t in warm]
    env = {"VLLM_WORKER_MULTIPROC_METHOD": "spawn", **vllm_environment()}
    passes: dict[str, Any] = {}
    t0 = time.time()
    with ServerProcess(list(cmd), folder / "server.log", env=env, model=model,
                       start_timeout_s=args.start_timeout) as srv:
        print(f"server healthy in {srv.facts['start_s']:.0f} s at {srv.base_url}; {n} requests per pass at "
              f"{args.rate:g} req/s", file=sys.stderr, flush=True)
        a = run_load_point(srv.base_url, model, reqs, args.rate, "poisson", seed, 600.0, warm_reqs, extra)
        passes["A"] = a
        vcmd = bench_serve_cmd(srv.base_url, model, dataset, n, args.warmup, args.rate, new_tokens, seed, folder)
        with open(folder / "vllm_bench_serve.log", "wb") as log:
            rc = subprocess.run(vcmd, stdout=log, stderr=subprocess.STDOUT, timeout=1200).returncode
        a2 = run_load_point(srv.base_url, model, reqs, args.rate, "poisson", seed + 1, 600.0, warm_reqs, extra)
        passes["A2"] = a2
    result_file = folder / "vllm_bench_serve.json"
    if rc != 0 or not result_file.exists():
        tail = (folder / "vllm_bench_serve.log").read_text(errors="replace").strip().splitlines()[-5:]
        print(f"vllm bench serve failed (exit {rc}): " + " | ".join(tail), file=sys.stderr)
        return 1
    vres = json.loads(result_file.read_text())
    ours_a = load_point_stats(a, args.rate).metrics
    ours_a2 = load_point_stats(a2, args.rate).metrics
    ours_v = load_point_stats(samples_from_vllm(vres), args.rate).metrics
    rows = compare(ours_a, ours_a2, vres, ours_v)
    realized = {"A": arrival_rate([x.sent_s for x in a]), "A2": arrival_rate([x.sent_s for x in a2]),
                "vllm_bench": arrival_rate(list(vres.get("start_times") or []))}
    reported = {k: v for k, v in vres.items() if not isinstance(v, list)}
    data = {"record": str(args.record), "backend": rec.get("backend"), "model": rec.get("model"),
            "rate_per_s": "inf" if math.isinf(args.rate) else args.rate, "requests_per_pass": n,
            "warmup_requests": args.warmup, "prompt_tokens": wl["prompt_tokens"], "new_tokens": new_tokens,
            "server_command": cmd, "vllm_bench_command": vcmd, "wall_s": round(time.time() - t0, 1),
            "rows": rows, "realized_arrival_rate_per_s": realized, "quantbench_a": plain(ours_a), "quantbench_a2": plain(ours_a2),
            "ours_on_vllm_samples": plain(ours_v), "vllm_bench": reported,
            "samples": {k: [s.to_compact() for s in v] for k, v in passes.items()},
            "differences": DIFFERENCES, "gpu": (rec.get("env") or {}).get("gpu")}
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(dumps(data))
    tmp.replace(args.out)
    print(table(rows))
    print("realized arrival rates, req/s: " + ", ".join(f"{k} {v}" for k, v in realized.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
