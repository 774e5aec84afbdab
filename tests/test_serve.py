"""The whole serving path: a server started by the engine, load points at offered rates, raw samples in the
record, statistics recomputed from them, and no server process or port left after success, a failed
start, a timeout or Ctrl-C.

Fast tests use the fault engine, whose server is tests/fake_server.py with scripted token timings (TTFT
150 ms, 20 ms between tokens), so latencies are known. The slow test runs `transformers serve` on
SmolLM2 with bitsandbytes LLM.int8: the server's own census and quality beside serving.
"""
from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from backends.contract.server import port_in_use
from runners.measure.serving import load_point_stats
from runners.record.store import find_records
from runners.workload.serve import samples_of

from .conftest import ROOT, TEST_CONF, bench

SERVE = ["workload=serve", "model=tiny", "workload.serve.prompts=random", "workload.prompt_tokens=8",
         "workload.new_tokens=6", "workload.serve.requests=6", "workload.serve.warmup_requests=1"]


def _servers_left(marker: str) -> list[str]:
    left = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if marker in cmd and "pytest" not in cmd:
            left.append(f"{p.pid}: {cmd[:120]}")
    return left


def _ports(folder) -> list[int]:
    """The ports the servers of this sweep listened on (their logs say so)."""
    out = []
    for log in folder.rglob("server.log"):
        out += [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))]
    return out


def _fake_servers_left(folder) -> list[str]:
    """Fake servers of this test's sweep still running (by their ports: tests running beside it have others)."""
    return [s for port in _ports(folder) for s in _servers_left(f"tests.fake_server --port {port} ")]


def test_serve_path_with_a_scripted_server(tmp_path):
    proc = bench("-m", "backend=fault_serve_scripted,fault_serve_exit_at_start,fault_serve_never_healthy,ort_fp32",
                 *SERVE, "workload.serve.rates=[4,16,inf]", "workload.serve.start_timeout_s=4",
                 "report.slo=ttft_p90<=400ms,tpot_p90<=40ms", f"hydra.sweep.dir={tmp_path}", timeout=300)
    recs = {r.backend: r for r in find_records(tmp_path)}
    assert set(recs) == {"fault_serve_scripted", "fault_serve_exit_at_start", "fault_serve_never_healthy", "ort_fp32"}
    ok = recs["fault_serve_scripted"]
    assert ok.status == "ok", ok.reason
    assert [p.where for p in ok.points] == ["4 req/s", "16 req/s", "all at once"]
    for p in ok.points:
        samples = samples_of(p)
        assert len(samples) == 6 and all(s.ok and s.output_tokens == 6 for s in samples)
        # The record's statistics are those of its raw samples.
        again = load_point_stats(samples, p.rate_per_s)
        assert again.metrics["ttft_ms"].median == pytest.approx(p.metrics["ttft_ms"].median)
        # Scripted: first token after 150 ms, then 20 ms apart (a loaded 2-core runner adds delay, never removes it).
        assert 150 <= p.metrics["ttft_ms"].median < 400
        assert 20 <= p.metrics["tpot_ms"].median < 60
        assert p.metrics["failed_requests_pct"] == 0
    assert math.isinf(ok.points[-1].rate_per_s)
    sent = [s.sent_s for s in samples_of(ok.points[-1])]
    assert max(sent) - min(sent) < 0.5  # inf: every request at once
    assert (tmp_path / ok.run_id / "server.log").exists() or list(tmp_path.rglob("server.log"))
    # A server that dies at start: a classified row with its last log line; one never healthy: a timeout.
    died = recs["fault_serve_exit_at_start"]
    assert died.status == "oom" and "CUDA out of memory (fault server)" in died.reason, (died.status, died.reason)
    hung = recs["fault_serve_never_healthy"]
    assert hung.status == "timeout" and "not healthy within 4 s" in hung.reason and "warming up forever" in hung.reason
    assert recs["ort_fp32"].status == "invalid_config" and "has no server" in recs["ort_fp32"].reason
    assert not _fake_servers_left(tmp_path) and not _servers_left("warming up forever")
    assert _ports(tmp_path) and not any(port_in_use(p) for p in _ports(tmp_path))
    table = (tmp_path / "table.md").read_text()
    assert "serve · offered 4 req/s" in table and "serve · all at once" in table
    assert proc.returncode == 1  # some rows are not ok


def test_ctrl_c_while_serving_leaves_no_server(tmp_path):
    cmd = [sys.executable, "-m", "runners.bench", f"hydra.searchpath=[file://{TEST_CONF}]", "backend=fault_serve_scripted",
           *SERVE, "workload.serve.rates=[1]", "workload.serve.requests=50", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not _fake_servers_left(tmp_path):
            time.sleep(0.2)
        assert _fake_servers_left(tmp_path), "the server never started"
        time.sleep(2.0)  # some requests in flight
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert not _fake_servers_left(tmp_path)
    assert _ports(tmp_path) and not any(port_in_use(p) for p in _ports(tmp_path))
    [rec] = find_records(tmp_path)
    assert rec.status == "incomplete"


@pytest.mark.slow
def test_transformers_serve_llm_int8_proves_its_census_and_quality(tmp_path, cache_dir):
    proc = bench("backend=bnb_int8", "workload=serve", "workload.serve.rates=[2,inf]", "workload.serve.requests=3",
                 "workload.serve.warmup_requests=1", "workload.prompt_tokens=16", "workload.new_tokens=4",
                 # tests/readme_use.py's quality settings: the SmolLM2 sweep and this run share one fp32 reference
                 "quality.generations=2", "quality.generation_tokens=4", "quality.eval_tokens=32", "report.slo=ttft_p90<=60s",
                 f"hydra.run.dir={tmp_path}", timeout=900)
    [rec] = find_records(tmp_path)
    assert rec.status == "ok", (rec.status, rec.reason, proc.stderr[-2000:])
    served = rec.engine_info["server"]
    # The server process itself loaded LLM.int8 layers (its own census), and the row says how it was proven.
    assert served["census"]["layers"].get("Linear8bitLt", 0) > 100
    assert "--quantization" in served["command"] and "bnb-8bit" in served["command"]
    assert any("the model the server loaded" in n for n in rec.notes)
    assert rec.quality.metrics["kl_mean_nats"] >= 0 and rec.quality.reference == "fp32"
    assert [p.where for p in rec.points] == ["2 req/s", "all at once"]
    assert all(len(samples_of(p)) == 3 and p.metrics["ttft_ms"].median > 0 for p in rec.points)
    assert not _servers_left("backends.transformers")
    assert _ports(tmp_path) and not any(port_in_use(p) for p in _ports(tmp_path))
