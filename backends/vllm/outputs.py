"""vLLM's outputs -> quantbench's: top-k and next-token log-probs, and a batch's time to first token."""
from __future__ import annotations

import statistics
from typing import Any

from backends.contract import RunFailure


def topk_row(entries: Any, k: int) -> tuple[list[float], list[int]]:
    """Top-k (log-prob, token id) of one position of vLLM's logprobs, best first.

    vLLM gives {token_id: Logprob(logprob, rank)} holding the top k plus the actual token, which may
    rank below k: sorting by log-prob and keeping k drops it.
    """
    items = sorted(((float(getattr(v, "logprob", v)), int(t)) for t, v in dict(entries).items()),
                   key=lambda x: -x[0])[:k]
    return [v for v, _ in items], [t for _, t in items]


def topk_logprobs(prompt_logprobs: list, last_logprobs: Any, k: int):
    """Rows t = 0..T-1 (distribution of token t+1): prompt_logprobs[1:] then the first sampled step's."""
    import numpy as np

    positions = list(prompt_logprobs[1:]) + [last_logprobs]
    values = np.full((len(positions), k), -np.inf, dtype=np.float32)
    indices = np.full((len(positions), k), -1, dtype=np.int64)
    for i, entries in enumerate(positions):
        if entries is None:
            raise RunFailure("crash", f"vLLM returned no log-probs for position {i}")
        vals, ids = topk_row(entries, k)
        values[i, :len(vals)] = vals
        indices[i, :len(ids)] = ids
    return values, indices


def next_token_logprobs(prompt_logprobs: list, token_ids: list[int]):
    """Log-prob of each actual next token (rows t = 0..T-2): vLLM's prompt_logprobs hold it at every
    position even when it ranks below k, so perplexity needs no full distribution. NaN where missing."""
    import numpy as np

    out = np.full(max(len(token_ids) - 1, 0), np.nan, dtype=np.float32)
    for t, entries in enumerate(list(prompt_logprobs[1:len(token_ids)])):
        hit = dict(entries or {}).get(int(token_ids[t + 1]))
        if hit is not None:
            out[t] = float(getattr(hit, "logprob", hit))
    return out


def batch_ttft_ms(start_wall: float, metrics: list[Any]) -> tuple[float | None, dict[str, float]]:
    """Batch TTFT from vLLM's per-request metrics: until every request of the batch had a first token.

    Per request, `arrival_time` (time.time() when it was added) + `first_token_latency` (seconds) is
    the wall time its first token reached the frontend. Returns (ms, per-request summary), or None
    when the metrics are missing (stats off) so the caller can fall back.
    """
    firsts, per_request = [], []
    for m in metrics:
        if m is None:
            return None, {}
        arrival = getattr(m, "arrival_time", 0.0) or 0.0
        latency = getattr(m, "first_token_latency", 0.0) or 0.0
        if arrival <= 0 or latency <= 0:
            return None, {}
        firsts.append(arrival + latency)
        per_request.append(latency * 1e3)
    if not firsts:
        return None, {}
    return (max(firsts) - start_wall) * 1e3, {
        "ttft_per_request_ms_p50": statistics.median(per_request),
        "ttft_per_request_ms_max": max(per_request),
    }
