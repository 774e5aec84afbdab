"""scripts/kl_topk_gap.py on synthetic distributions (no model): the vLLM-shaped truncation, the partition
the lumped top-k KL uses, that it never exceeds the full KL, and the summary fields."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from backends.contract import LogProbs
from runners.quality import metrics as qm

from .conftest import ROOT

_spec = importlib.util.spec_from_file_location("kl_topk_gap", ROOT / "scripts" / "kl_topk_gap.py")
gap = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gap)

T, V = 41, 300  # 41 tokens -> 40 scored positions


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return (x - np.log(np.exp(x).sum(axis=-1, keepdims=True))).astype(np.float32)


def pair(seed: int = 0, noise: float = 0.5) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(reference, candidate) full log-probs [T-1, V] (peaked, like a language model's) and the tokens."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((T - 1, V)) * 3.0
    ref = log_softmax(logits)
    cur = log_softmax(logits + rng.standard_normal((T - 1, V)) * noise)
    tokens = rng.integers(0, V, size=T).tolist()
    return ref, cur, tokens


def brute_lumped(p_log: np.ndarray, q_log: np.ndarray, keep: list[np.ndarray]) -> np.ndarray:
    """KL of the two distributions lumped onto {each kept token} + {the rest}, float64, by hand."""
    out = []
    for t, ids in enumerate(keep):
        p, q = np.exp(p_log[t].astype(np.float64)), np.exp(q_log[t].astype(np.float64))
        p /= p.sum()
        q /= q.sum()
        pk, qk = p[ids], q[ids]
        pr, qr = 1.0 - pk.sum(), 1.0 - qk.sum()
        out.append(float(np.sum(pk * np.log(pk / qk)) + (pr * np.log(pr / qr) if pr > 0 else 0.0)))
    return np.array(out)


def test_truncation_is_what_a_vllm_row_holds():
    ref, _, tokens = pair()
    for k in (1, 5, 20):
        lp = gap.truncate_like_vllm(LogProbs(ref), k, tokens)
        assert lp.values.shape == lp.indices.shape == (T - 1, k)
        for t in range(T - 1):
            want = np.sort(np.argsort(-ref[t])[:k])
            assert np.array_equal(np.sort(lp.indices[t]), want)  # the top k, nothing else
            assert np.all(np.diff(lp.values[t]) <= 0)  # best first
            assert np.array_equal(lp.values[t], ref[t][lp.indices[t]])
        # the actual next token's log-prob is kept even when it ranks below k (vLLM's prompt_logprobs)
        assert np.array_equal(lp.next_token_values, ref[np.arange(T - 1), tokens[1:]])
    with pytest.raises(ValueError):
        gap.truncate_like_vllm(LogProbs(ref), 5, tokens[:-1])
    with pytest.raises(ValueError):
        gap.truncate_like_vllm(LogProbs(ref), V + 1, tokens)


def test_lumped_partition_is_the_candidates_topk_or_the_tokens_both_report():
    """shared_support: a full reference is gathered at the candidate's top k (partition: those k + rest);
    two top-k sides keep the tokens both report (partition: the intersection + rest). The same partition
    on both sides, so KL of the lumped pair is a lower bound of the full KL (data-processing inequality)."""
    ref, cur, tokens = pair(1)
    for k in (3, 20):
        cur_k = gap.truncate_like_vllm(LogProbs(cur), k, tokens)
        ref_k = gap.truncate_like_vllm(LogProbs(ref), k, tokens)
        got, how = qm.kl_per_position(LogProbs(ref), cur_k)
        assert "top-k" in how
        np.testing.assert_allclose(got, brute_lumped(ref, cur, list(cur_k.indices)), rtol=1e-4, atol=1e-6)
        both = [np.intersect1d(a, b) for a, b in zip(ref_k.indices, cur_k.indices)]
        assert any(len(s) < k for s in both)  # the two top-k sets do differ somewhere here
        got, _ = qm.kl_per_position(ref_k, cur_k)
        np.testing.assert_allclose(got, brute_lumped(ref, cur, both), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("seed,noise", [(2, 0.1), (3, 0.5), (4, 2.0)])
def test_topk_kl_never_exceeds_full_kl(seed, noise):
    ref, cur, tokens = pair(seed, noise)
    full = qm.kl_full(ref, cur)
    assert full.min() > 0
    for k in (1, 5, 20, 50, V):
        cur_k = gap.truncate_like_vllm(LogProbs(cur), k, tokens)
        for a in (LogProbs(ref), gap.truncate_like_vllm(LogProbs(ref), k, tokens)):
            topk, _ = qm.kl_per_position(a, cur_k)
            assert np.all(topk <= full + gap.BOUND_TOL)


def test_topk_kl_equals_full_kl_when_all_mass_is_in_the_topk():
    ref, cur, tokens = pair(5)
    k = 8
    # Support on the same 8 tokens per row (the rest exactly 0 probability): nothing is lumped away.
    mask = np.full_like(ref, -np.inf)
    rng = np.random.default_rng(5)
    for t in range(T - 1):
        mask[t, rng.choice(V, size=k, replace=False)] = 0.0
    ref, cur = log_softmax(ref + mask), log_softmax(cur + mask)
    full = qm.kl_full(ref, cur)
    assert full.mean() > 0.01
    row = gap.gap_rows(LogProbs(ref), LogProbs(cur), tokens, [k])
    for variant in gap.VARIANTS:
        e = row["by_k"][str(k)][variant]
        assert e["kl_topk_nats"]["mean"] == pytest.approx(full.mean(), rel=1e-5)
        assert abs(e["gap_mean_nats"]) < 1e-6
    assert row["by_k"][str(k)]["candidate_tail_mass_mean"] == pytest.approx(0.0, abs=1e-6)
    # k = the whole vocabulary: exact for any pair
    ref, cur, tokens = pair(6)
    e = gap.gap_rows(LogProbs(ref), LogProbs(cur), tokens, [V])["by_k"][str(V)]
    assert e["ref_full"]["gap_mean_pct"] == pytest.approx(0.0, abs=1e-3)


def test_a_difference_only_in_the_tail_is_invisible_to_topk_kl():
    """Both sides agree on the top 5 and on the tail's total mass, but spread the tail differently:
    the lumped KL is 0 while the full KL is not — the gap is the whole KL (100%)."""
    rng = np.random.default_rng(7)
    head = np.log(np.array([0.4, 0.2, 0.1, 0.05, 0.05]))  # 0.8 in the top 5
    ref = np.empty((T - 1, V), np.float32)
    cur = np.empty((T - 1, V), np.float32)
    for t in range(T - 1):
        for out in (ref, cur):
            tail = rng.uniform(0.5, 1.5, V - 5)
            out[t, :5] = head
            out[t, 5:] = np.log(0.2 * tail / tail.sum())  # all below 0.05: the top 5 stay the top 5
    tokens = rng.integers(0, V, size=T).tolist()
    row = gap.gap_rows(LogProbs(ref), LogProbs(cur), tokens, [5])
    e = row["by_k"]["5"]
    assert row["kl_full_nats"]["mean"] > 1e-3
    for variant in gap.VARIANTS:
        assert e[variant]["kl_topk_nats"]["max"] < 1e-5
        assert e[variant]["gap_mean_pct"] == pytest.approx(100.0, abs=0.1)
    assert e["candidate_tail_mass_mean"] == pytest.approx(0.2, abs=1e-5)
    assert row["top1_agreement_pct"] == e["top1_agreement_pct_topk"] == e["top1_agreement_pct_ref_full"] == 100.0


def test_summary_fields():
    full = np.array([0.0, 0.1, 0.2, 0.3, 2.0])
    topk = np.array([0.0, 0.05, 0.2, 0.1, 1.0])
    s = gap.summarize(full, topk)
    assert s["positions"] == 5
    assert s["kl_full_nats"] == {"mean": pytest.approx(0.52), "p99": pytest.approx(np.percentile(full, 99)),
                                 "max": 2.0}
    assert s["kl_topk_nats"]["mean"] == pytest.approx(0.27)
    assert s["gap_mean_nats"] == pytest.approx(0.25)
    assert s["gap_mean_pct"] == pytest.approx(100 * 0.25 / 0.52)
    assert s["ratio_topk_to_full_mean"] == pytest.approx(0.27 / 0.52)
    assert s["positions_topk_above_full"] == 0
    assert gap.summarize(full, full + np.array([0, 0, 0, 1e-3, 0]))["positions_topk_above_full"] == 1
    zero = gap.summarize(np.zeros(3), np.zeros(3))
    assert zero["gap_mean_pct"] is None and zero["ratio_topk_to_full_mean"] is None  # no 0/0 made up
    with pytest.raises(ValueError):
        gap.summarize(full, topk[:3])


def test_gap_rows_and_the_markdown_say_what_was_measured():
    ref, cur, tokens = pair(8)
    ks = [gap.DEFAULT_K, 5]
    row = gap.gap_rows(LogProbs(ref), LogProbs(cur), tokens, ks)
    assert gap.DEFAULT_K == 20  # vLLM's score_top_k default
    assert list(row["by_k"]) == ["20", "5"]
    assert row["kl_full_nats"]["mean"] == pytest.approx(float(qm.kl_full(ref, cur).mean()))
    for k in ks:
        e = row["by_k"][str(k)]
        assert f"k={k}" in e["ref_full"]["kl_method"]
        assert e["ref_full"]["kl_topk_nats"]["mean"] <= row["kl_full_nats"]["mean"]
        assert e["top1_agreement_pct_topk"] == e["top1_agreement_pct_ref_full"] == row["top1_agreement_pct"]
    with pytest.raises(ValueError):
        gap.gap_rows(gap.truncate_like_vllm(LogProbs(ref), 5, tokens), LogProbs(cur), tokens, [5])
    row["record_quality"] = {"kl_mean_nats": row["kl_full_nats"]["mean"]}
    result = {"model": "m", "weights": "pretrained", "reference": {"backend": "fp32"},
              "text": {"positions": T - 1, "eval_tokens": T, "eval_text": "synthetic"},
              "backends": {"cand": row}, "top1_same_either_way": True, "bound_violations": 0,
              "env": {"cpu": "cpu", "packages": {"torch": "x"}, "git": {"commit": "abc"}}, "wall_s": 1.0,
              "commands": ["python scripts/kl_topk_gap.py"]}
    md = gap.markdown(result)
    assert md.count("| cand |") == 2 and "python scripts/kl_topk_gap.py" in md
    assert "(reproduced)" in md
    row["record_quality"]["kl_mean_nats"] += 0.01
    row["run"] = {"quantize_s": 400.0}
    assert "NOT reproduced: its checkpoint was rebuilt in this run (quantize_s 400 s)" in gap.markdown(result)
