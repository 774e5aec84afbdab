"""Quality metric math on next-token log-probabilities: numpy only (no engine, no torch).

A distribution set is anything with `values` and `indices` (backends.contract.LogProbs): `values` [T, V]
with `indices` None holds full distributions; `values` [T, k] with `indices` [T, k] (token ids, -1 for
an empty slot) holds only each position's top k (vLLM). Row t is the distribution of token t + 1.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

# Floor for a lumped tail mass that rounding made 0 while the other side's is not (keeps KL finite).
TAIL_FLOOR = 1e-12
_CHUNK_ROWS = 32  # full KL in float64 over [32, V] blocks: bounded memory for 128k vocabularies


def is_full(lp: Any) -> bool:
    return lp.indices is None


def kl_full(ref: np.ndarray, other: np.ndarray) -> np.ndarray:
    """KL(p || q) in nats per row from full log-probs [T, V] (0 log 0 = 0)."""
    if ref.shape != other.shape:
        raise ValueError(f"log-prob shapes differ: {ref.shape} vs {other.shape}")
    out = np.empty(ref.shape[0], dtype=np.float64)
    for s in range(0, ref.shape[0], _CHUNK_ROWS):
        a = ref[s:s + _CHUNK_ROWS].astype(np.float64)
        b = other[s:s + _CHUNK_ROWS].astype(np.float64)
        p = np.exp(a)
        with np.errstate(invalid="ignore"):
            out[s:s + _CHUNK_ROWS] = np.where(p > 0, p * (a - b), 0.0).sum(axis=-1)
    return np.maximum(out, 0.0)


def _gather(full: np.ndarray, indices: np.ndarray) -> np.ndarray:
    valid = indices >= 0
    got = np.take_along_axis(full, np.where(valid, indices, 0), axis=-1).astype(np.float64)
    return np.where(valid, got, -np.inf)


def shared_support(ref: Any, other: Any) -> tuple[np.ndarray, np.ndarray]:
    """log p and log q [T, n] on the tokens whose log-probs both sides report (-inf pads the rest)."""
    if is_full(ref) and is_full(other):
        return ref.values.astype(np.float64), other.values.astype(np.float64)
    if is_full(ref):
        return _gather(ref.values, other.indices), np.where(other.indices >= 0, other.values, -np.inf)
    if is_full(other):
        return np.where(ref.indices >= 0, ref.values, -np.inf), _gather(other.values, ref.indices)
    rows, k = ref.indices.shape
    lp = np.full((rows, k), -np.inf)
    lq = np.full((rows, k), -np.inf)
    for t in range(rows):
        a, b = ref.indices[t], other.indices[t]
        common, ia, ib = np.intersect1d(a[a >= 0], b[b >= 0], return_indices=True)
        lp[t, :len(common)] = ref.values[t][a >= 0][ia]
        lq[t, :len(common)] = other.values[t][b >= 0][ib]
    return lp, lq


def kl_lumped(lp: np.ndarray, lq: np.ndarray) -> np.ndarray:
    """KL per row over the given tokens plus one bucket holding each side's remaining mass.

    Merging tokens into one bucket can only lower KL, so this is a lower bound of the full KL; it is
    exact when the given tokens are the whole vocabulary, and 0 when both sides are identical.
    """
    p, q = np.exp(lp), np.exp(lq)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (lp - lq), 0.0).sum(axis=-1)
    p_rest = np.clip(1.0 - p.sum(axis=-1), 0.0, 1.0)
    q_rest = np.clip(1.0 - q.sum(axis=-1), 0.0, 1.0)
    same = p_rest == q_rest
    with np.errstate(divide="ignore", invalid="ignore"):
        rest = np.where((p_rest > 0) & ~same, p_rest * (np.log(p_rest) - np.log(np.maximum(q_rest, TAIL_FLOOR))), 0.0)
    return np.maximum(terms + rest, 0.0)


def kl_per_position(ref: Any, other: Any) -> tuple[np.ndarray, str]:
    """KL(ref || other) in nats per position, and how it was computed (full or top-k)."""
    if len(ref.values) != len(other.values):
        raise ValueError(f"{len(ref.values)} reference positions vs {len(other.values)}")
    if is_full(ref) and is_full(other):
        return kl_full(ref.values, other.values), "full"
    k = min(v.shape[-1] for v in (ref.values, other.values))
    return kl_lumped(*shared_support(ref, other)), (
        f"top-k approximation (k={k}): KL over the tokens both sides report, the remaining probability "
        "mass of each side lumped into one bucket (a lower bound of the full KL)")


def top1(lp: Any) -> np.ndarray:
    """The most likely next token at each position."""
    best = np.asarray(lp.values).argmax(axis=-1)
    if is_full(lp):
        return best
    return np.take_along_axis(lp.indices, best[:, None], axis=-1)[:, 0]


def top1_agreement_pct(ref: Any, other: Any) -> float:
    return float(100.0 * np.mean(top1(ref) == top1(other)))


def target_logprobs(lp: Any, targets: Sequence[int], next_token_values: np.ndarray | None = None) -> np.ndarray:
    """Log-prob of each actual next token (NaN where a top-k engine did not report it)."""
    t = np.asarray(targets, dtype=np.int64)
    n = len(t)
    if is_full(lp):
        return lp.values[np.arange(n), t].astype(np.float64)
    out = (np.full(n, np.nan) if next_token_values is None
           else np.asarray(next_token_values, dtype=np.float64)[:n].copy())
    hit = lp.indices[:n] == t[:, None]
    found = hit.any(axis=1) & np.isnan(out)
    out[found] = np.asarray(lp.values[:n], dtype=np.float64)[hit & found[:, None]]
    return out


def perplexity(lp: Any, targets: Sequence[int], next_token_values: np.ndarray | None = None) -> float | None:
    """exp(mean negative log-likelihood of the actual next tokens); None when some are unknown."""
    vals = target_logprobs(lp, targets, next_token_values)
    if len(vals) == 0 or np.isnan(vals).any():
        return None
    return float(np.exp(-vals.mean()))


def identical_pct(ref: Sequence[Sequence[int]], other: Sequence[Sequence[int]]) -> float:
    """Share of sequences (e.g. greedy generations) equal token for token, in percent."""
    if len(ref) != len(other) or not ref:
        raise ValueError(f"{len(ref)} reference sequences vs {len(other)}")
    return float(100.0 * np.mean([list(a) == list(b) for a, b in zip(ref, other)]))


def prefix_match_pct(ref: Sequence[Sequence[int]], other: Sequence[Sequence[int]]) -> float:
    """Mean share of each reference sequence reproduced before the first differing token, in percent."""
    shares = []
    for a, b in zip(ref, other):
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        shares.append(n / len(a) if len(a) else 1.0)
    return float(100.0 * np.mean(shares))
