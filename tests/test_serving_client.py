"""The load generator against a fake OpenAI-compatible server whose token timings are scripted, so TTFT
and ITL are known exactly (to the scheduler's precision)."""
from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

import pytest

from runners.workload.client import Request, arrival_offsets_s, run_load_point, send

from .fake_server import Scripted

TTFT_S, GAP_S = Scripted.ttft_s, Scripted.gap_s


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_one_request_has_the_scripted_ttft_and_gaps(server):
    s = send(server, "m", Request("hello", 4), timeout_s=10)
    assert s.ok and s.output_tokens == 4 and s.prompt_tokens == 7
    assert s.ttft_ms == pytest.approx(TTFT_S * 1e3, abs=40)
    assert s.itl_ms == pytest.approx([GAP_S * 1e3] * 3, abs=25)
    assert s.tpot_ms == pytest.approx(GAP_S * 1e3, abs=25)


def test_an_error_is_a_failed_sample_not_an_exception(server):
    s = send(server, "m", Request("hello", 500), timeout_s=10)
    assert not s.ok and s.error.startswith("HTTP 400")
    dead = send("http://127.0.0.1:9", "m", Request("x", 1), timeout_s=2)
    assert not dead.ok and dead.error


def test_a_load_point_sends_at_the_offered_rate(server):
    reqs = [Request("p", 3) for _ in range(6)]
    samples = run_load_point(server, "m", reqs, rate_per_s=10.0, arrival="constant", seed=0, timeout_s=10,
                             warmup=[Request("w", 1)])
    sent = [s.sent_s for s in samples]
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    assert all(s.ok for s in samples) and gaps == pytest.approx([0.1] * 5, abs=0.03)


def test_arrivals_are_seeded_and_all_at_once_for_inf():
    a = arrival_offsets_s(50, 4.0, "poisson", seed=1)
    assert a == arrival_offsets_s(50, 4.0, "poisson", seed=1) and a != arrival_offsets_s(50, 4.0, "poisson", 2)
    assert 50 / a[-1] == pytest.approx(4.0, rel=0.4)  # the mean rate, within a 50-sample spread
    assert arrival_offsets_s(3, float("inf"), "poisson", 0) == [0.0, 0.0, 0.0]
