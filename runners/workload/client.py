"""A streaming load generator for OpenAI-compatible completion servers.

Why our own, beside GuideLLM and vLLM's `bench serve` client: neither travels to the offline GPU host
without its own dependency tree (GuideLLM pins its own HTTP and data stacks; vLLM's client needs vLLM,
which the transformers rows do not install), and the one thing quantbench needs from a client is the
raw per-request sample (send time, each streamed chunk's arrival, output tokens, error), which every
statistic is then computed from in one place (runners.measure.serving). This client keeps only that:
standard library, one thread per in-flight request, seeded arrivals.

Arrivals: `poisson` (exponential gaps with mean 1/rate, seeded), `constant` (1/rate apart), or rate
`inf` (all at once). Warm-up requests go first and are not kept.
"""
from __future__ import annotations

import http.client
import json
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Literal
from urllib.parse import urlparse

from runners.measure.serving import RequestSample

Arrival = Literal["poisson", "constant"]


@dataclass(frozen=True)
class Request:
    prompt: str | list[int]
    max_tokens: int


def arrival_offsets_s(n: int, rate_per_s: float, arrival: Arrival, seed: int) -> list[float]:
    """When each of `n` requests is sent, from the load point's start."""
    if math.isinf(rate_per_s):
        return [0.0] * n
    if arrival == "constant":
        return [i / rate_per_s for i in range(n)]
    rng = random.Random(seed)
    out, t = [], 0.0
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(rate_per_s)
    return out


Extra = Callable[[Request], dict]


def send(base_url: str, model: str, req: Request, timeout_s: float, extra: Extra | None = None) -> RequestSample:
    """One streamed completion; never raises (an error is the sample's `error`). `extra`: the server's own
    fields (vLLM takes `ignore_eos` and `min_tokens`, so every request decodes exactly max_tokens;
    `transformers serve` refuses unknown fields, so its requests may end at an end-of-sequence token)."""
    url = urlparse(base_url)
    body = {"model": model, "prompt": req.prompt, "max_tokens": req.max_tokens, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}, **(extra(req) if extra else {})}
    sample = RequestSample(sent_s=time.perf_counter())
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout_s)
    try:
        conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            sample.error = f"HTTP {resp.status}: {resp.read(300).decode('utf-8', 'replace')}"
            return sample
        counted = 0
        for raw in resp:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            usage = chunk.get("usage") or {}
            if usage.get("completion_tokens") is not None:
                sample.output_tokens = int(usage["completion_tokens"])
                sample.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            choices = chunk.get("choices") or []
            # A chunk brings tokens when it has text, or token ids (a server run without a tokenizer).
            if any(c.get("text") or c.get("token_ids") for c in choices):
                sample.chunk_times_s.append(time.perf_counter())
                counted += 1
        if sample.output_tokens == 0:
            sample.output_tokens = counted  # no usage chunk: one token per chunk, the best this stream tells
    except (OSError, http.client.HTTPException, ValueError) as exc:
        sample.error = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    return sample


def run_load_point(base_url: str, model: str, requests: list[Request], rate_per_s: float, arrival: Arrival,
                   seed: int, timeout_s: float, warmup: list[Request] | None = None,
                   extra: Extra | None = None, max_concurrency: int | None = None,
                   progress: Callable[[int], object] | None = None,
                   on_warm: Callable[[], object] | None = None) -> list[RequestSample]:
    """Warm-up requests one by one, then `requests` at the offered rate (at most `max_concurrency` in
    flight: a request due while the cap is reached waits, and its latencies count from when it is sent, as
    in vLLM's `bench serve --max-concurrency`); every sample, in
    send order. `progress(1)` after each request; `on_warm()` once the warm-up is done."""
    tick = progress or (lambda _n: None)
    for w in warmup or []:
        send(base_url, model, w, timeout_s, extra)
        tick(1)
    if on_warm is not None:
        on_warm()
    offsets = arrival_offsets_s(len(requests), rate_per_s, arrival, seed)
    samples: list[RequestSample | None] = [None] * len(requests)
    slots = threading.Semaphore(max_concurrency) if max_concurrency else None
    done = threading.Lock()

    def worker(i: int) -> None:
        try:
            samples[i] = send(base_url, model, requests[i], timeout_s, extra)
        finally:
            if slots is not None:
                slots.release()
            with done:
                tick(1)

    threads = []
    start = time.perf_counter()
    for i, offset in enumerate(offsets):
        due = start + offset
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        if slots is not None:
            slots.acquire()
        t = threading.Thread(target=worker, args=(i,), daemon=True)
        t.start()
        threads.append(t)
    deadline = time.perf_counter() + timeout_s + 5
    for t in threads:
        t.join(max(0.0, deadline - time.perf_counter()))
    return [s if s is not None else RequestSample(start + offsets[i], error="no answer within the request time limit")
            for i, s in enumerate(samples)]
