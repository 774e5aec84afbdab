"""Quality beside speed: metric math, the cached reference, absent reasons, and end-to-end runs of the
real small models on CPU (SmolLM2-135M against its fp32 reference, MiniLM-BBC on held-out BBC News)."""
from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from backends.contract import ConfigError, LogProbs, RunFailure
from backends.vllm.outputs import next_token_logprobs
from runners.plan.config import RunConfig
from runners.plan.planner import reference_run
from runners.plan.search import ConfigSearch
from runners.policy import reference_name
from runners.quality import metrics as qm
from runners.quality import reference as Q
from runners.quality.measure import ReferenceStatus, measure_quality
from runners.recipes.minilm_bbc import load_metrics, minilm_bbc_path
from runners.record.store import find_records

from .conftest import bench

ROOT = Path(__file__).resolve().parents[1]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def topk(lp: np.ndarray, k: int) -> LogProbs:
    idx = np.argsort(-lp, axis=-1)[:, :k]
    return LogProbs(np.take_along_axis(lp, idx, axis=-1), idx)


# -- metric math ----------------------------------------------------------------------------------
def test_kl_of_identical_is_zero_full_and_topk():
    lp = log_softmax(np.random.default_rng(0).normal(size=(6, 40)))
    kl, method = qm.kl_per_position(LogProbs(lp), LogProbs(lp.copy()))
    assert method == "full" and np.all(kl == 0)
    kl, method = qm.kl_per_position(topk(lp, 5), topk(lp, 5))
    assert np.all(kl == 0) and "top-k" in method and "k=5" in method
    kl, _ = qm.kl_per_position(LogProbs(lp), topk(lp, 5))
    assert np.all(kl == 0)


def test_kl_known_value_two_tokens():
    p, q = np.log([[0.5, 0.5]]), np.log([[0.9, 0.1]])
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert qm.kl_per_position(LogProbs(p), LogProbs(q))[0][0] == pytest.approx(expected, rel=1e-12)
    # a certain token against a distribution that gives it 0.25: KL = log 4
    with np.errstate(divide="ignore"):
        p, q = np.log([[1.0, 0.0]]), np.log([[0.25, 0.75]])
    assert qm.kl_full(p, q)[0] == pytest.approx(math.log(4))


def test_topk_approximation_equals_full_when_k_is_vocab_and_bounds_it_below():
    rng = np.random.default_rng(1)
    ref, other = log_softmax(rng.normal(size=(8, 30))), log_softmax(rng.normal(size=(8, 30)))
    full, _ = qm.kl_per_position(LogProbs(ref), LogProbs(other))
    assert np.all(full > 0)
    for a, b in ((LogProbs(ref), topk(other, 30)), (topk(ref, 30), LogProbs(other)), (topk(ref, 30), topk(other, 30))):
        assert qm.kl_per_position(a, b)[0] == pytest.approx(full, abs=1e-9)
    for k in (1, 5, 20):  # merging tokens into one bucket can only lose divergence
        approx, _ = qm.kl_per_position(LogProbs(ref), topk(other, k))
        assert np.all(approx <= full + 1e-12) and np.all(approx >= 0)


def test_perplexity_of_uniform_is_vocab_size_and_of_certain_is_one():
    v = 17
    uniform = LogProbs(np.full((5, v), -math.log(v)))
    assert qm.perplexity(uniform, [3, 1, 4, 1, 5]) == pytest.approx(v)
    certain = LogProbs(np.log(np.eye(4)[[1, 2, 3]] + 1e-300))
    assert qm.perplexity(certain, [1, 2, 3]) == pytest.approx(1.0)


def test_perplexity_from_topk_needs_every_actual_token():
    lp = log_softmax(np.random.default_rng(2).normal(size=(4, 10)))
    targets = [int(np.argsort(-row)[1]) for row in lp]  # each ranked second
    full = qm.perplexity(LogProbs(lp), targets)
    assert qm.perplexity(topk(lp, 3), targets) == pytest.approx(full)
    assert qm.perplexity(topk(lp, 1), targets) is None  # ranked below k and not reported otherwise
    reported = lp[np.arange(4), targets]
    assert qm.perplexity(topk(lp, 1), targets, reported) == pytest.approx(full)


def test_top1_agreement_and_generations():
    a = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]]))
    b = np.log(np.array([[0.6, 0.3, 0.1], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.4, 0.5, 0.1]]))
    assert qm.top1_agreement_pct(LogProbs(a), LogProbs(b)) == pytest.approx(50.0)
    assert qm.top1_agreement_pct(LogProbs(a), topk(b, 2)) == pytest.approx(50.0)
    assert qm.identical_pct([[1, 2], [3, 4]], [[1, 2], [3, 5]]) == 50.0
    assert qm.prefix_match_pct([[1, 2, 3, 4], [5, 6, 7, 8]], [[1, 2, 3, 4], [5, 0, 7, 8]]) == pytest.approx(62.5)


def test_vllm_next_token_logprobs_include_tokens_below_k():
    lp = lambda v: SimpleNamespace(logprob=v)
    prompt = [None, {7: lp(-0.1), 9: lp(-5.0)}, {8: lp(-0.3)}]  # token 9 ranked below k; 4 not reported
    got = next_token_logprobs(prompt, [1, 9, 4])
    assert got[0] == pytest.approx(-5.0) and np.isnan(got[1])


# -- the cached reference, with stand-in engines --------------------------------------------------
VOCAB = 24


class FakeEngine:
    """A bigram 'model': next-token logits are a fixed random matrix row (plus seeded noise)."""

    def __init__(self, noise: float = 0.0, fail: bool = False):
        rng = np.random.default_rng(0)
        w = rng.normal(size=(VOCAB, VOCAB)) * 3
        self.lp = log_softmax(w + noise * np.random.default_rng(1).normal(size=w.shape))
        self.calls: Counter = Counter()
        self.fail = fail
        tokenizer = lambda text: {"input_ids": [ord(c) % VOCAB for c in text]}
        self.ctx = SimpleNamespace(files=SimpleNamespace(load_tokenizer=lambda: tokenizer))

    def score(self, ids):
        self.calls["score"] += 1
        if self.fail:
            raise RunFailure("crash", "scoring exploded")
        return LogProbs(self.lp[ids].astype(np.float32))

    def generate(self, prompts, n, timer):
        self.calls["generate"] += 1
        out = []
        for p in prompts:
            seq, last = [], p[-1]
            for _ in range(n):
                timer.token()
                last = int(self.lp[last].argmax())
                seq.append(last)
            out.append(seq)
        return out


def _run(tmp_path: Path, backend: str = "fp32", text: str = "the quick brown fox jumps over the lazy dog " * 4,
         weights: str = "pretrained", **quality) -> RunConfig:
    model_dir = tmp_path / "model"
    if not model_dir.exists():  # rewriting it would change the weights' identity (and the key)
        model_dir.mkdir()
        (model_dir / "config.json").write_text("{}")
    text_file = tmp_path / f"eval-{abs(hash(text))}.txt"
    text_file.write_text(text)
    model = {"name": "fake", "task": "causal_lm", "path": str(model_dir),
             "architecture": {"model_type": "llama", "vocab_size": VOCAB}}
    cfg = {"backend": yaml.safe_load((ROOT / "conf" / "backend" / f"{backend}.yaml").read_text()), "model": model,
           "workload": {"kind": "generate", "batch_sizes": [1]}, "weights": weights, "device": "cpu",
           "quality": {"text": str(text_file), "eval_tokens": 16, "generations": 3, "generation_tokens": 5, **quality}}
    return RunConfig.from_dict(cfg, backend)


def _ref_path(run: RunConfig) -> Path:
    return Q.reference_path(reference_run(run, "cpu", ConfigSearch()), "cpu")


def _status(run: RunConfig, **kw) -> ReferenceStatus:
    ref = reference_run(run, "cpu", ConfigSearch())
    return ReferenceStatus(ref.backend.name, str(Q.reference_path(ref, "cpu")), Q.is_self(run, ref), **kw)


def test_reference_is_computed_once_then_loaded(tmp_path):
    run = _run(tmp_path)
    path = _ref_path(run)
    first = FakeEngine()
    out, hit = Q.ensure_reference(path, first, run)
    assert not hit and first.calls == {"score": 1, "generate": 1}
    assert out.tokens.shape == (16,) and out.prompts.shape == (3, 5) and out.generations.shape == (3, 5)
    second = FakeEngine()
    again, hit = Q.ensure_reference(path, second, run)
    assert hit and not second.calls  # loaded, not recomputed
    np.testing.assert_array_equal(again.logprobs.values, out.logprobs.values)


def test_reference_key_follows_text_tokens_and_backend(tmp_path):
    base = _ref_path(_run(tmp_path))
    assert _ref_path(_run(tmp_path)) == base
    assert _ref_path(_run(tmp_path, text="another text entirely, long enough " * 4)) != base
    assert _ref_path(_run(tmp_path, eval_tokens=12)) != base
    assert _ref_path(_run(tmp_path, reference="bf16")) != base
    # The measured backend does not change its reference: every backend of a sweep shares one.
    assert _ref_path(_run(tmp_path, backend="bnb_int8")) == base
    assert reference_name(_run(tmp_path).quality.reference, "cuda") == "fp16"


def test_reference_of_a_users_own_backend_yaml_is_found_on_the_search_path(tmp_path):
    mine = tmp_path / "myconf" / "backend"
    mine.mkdir(parents=True)
    (mine / "my_fp32.yaml").write_text("engine: transformers\ndescription: mine\noptions: {dtype: float32}\n")
    search = ConfigSearch.from_args([f"hydra.searchpath=[file://{tmp_path / 'myconf'}]"])
    ref = reference_run(_run(tmp_path, reference="my_fp32"), "cpu", search)
    assert ref.backend.name == "my_fp32" and ref.backend.description == "mine"


def test_reference_backend_compares_to_itself(tmp_path):
    run = _run(tmp_path)
    q = measure_quality(FakeEngine(), run, _status(run)).flat()
    assert q["kl_mean_nats"] == 0 and q["kl_p99_nats"] == 0 and q["top1_agreement_pct"] == 100
    assert q["identical_generations_pct"] == 100 and q["kl_method"] == "full"
    assert q["perplexity"] == q["reference_perplexity"] > 1 and q["reference_source"] == "self (computed now)"
    assert measure_quality(FakeEngine(), run, _status(run)).facts["reference_source"] == "self (cached)"


def test_other_backend_reads_the_cached_reference(tmp_path):
    ref_run = _run(tmp_path)
    Q.ensure_reference(_ref_path(ref_run), FakeEngine(), ref_run)
    run = _run(tmp_path, backend="bnb_int8")
    status = _status(run)
    assert not status.is_self and Q.ready(Path(status.path))
    q = measure_quality(FakeEngine(noise=0.5), run, status).flat()
    assert 0 < q["kl_mean_nats"] <= q["kl_p99_nats"] <= q["kl_max_nats"] < 5
    assert 0 <= q["top1_agreement_pct"] < 100 and q["reference"] == "fp32" and q["reference_source"] == "cache"
    assert q["perplexity"] != q["reference_perplexity"]
    assert json.dumps(q)  # the record stores it as JSON


def test_missing_reference_is_launched_once_before_the_run_and_failure_is_absent(tmp_path, monkeypatch):
    from runners.launch import job
    from runners.launch.child import Exit
    from runners.plan.planner import Plan

    calls = []

    def fake_launch(plan, workdir, name, timeout_s, on_message, console, extra_env=None):
        calls.append((plan.kind, plan.run.backend.name, name))
        on_message({"reference": {"absent": "reference fp32: oom: x"}, "final": True})
        return Exit(0, False, 1.5)

    monkeypatch.setattr(job, "launch", fake_launch)
    run = _run(tmp_path, backend="bnb_int8")
    plan = Plan(kind="run", run=run, device="cpu", run_id="r", engine_run=run.engine_view("cpu"),
                reference=reference_run(run, "cpu", ConfigSearch()))
    status = job.prepare_reference(plan, tmp_path / "out", True, sys.stderr)
    assert calls == [("reference", "fp32", "reference")] and status["reason"] == "reference fp32: oom: x"
    assert status["compute_s"] == 1.5 and not status["is_self"]
    q = measure_quality(FakeEngine(), run, ReferenceStatus(**status)).flat()
    assert q == {"absent": "reference fp32: oom: x", "reference": "fp32"}


def test_absent_reasons_never_numbers(tmp_path):
    assert measure_quality(None, _run(tmp_path, weights="synthetic"), None).flat() == {"absent": "synthetic weights"}
    assert measure_quality(None, _run(tmp_path, enabled=False), None).flat() == {"absent": "quality.enabled=false"}
    run = _run(tmp_path)
    q = measure_quality(FakeEngine(fail=True), run, _status(run)).flat()
    assert set(q) == {"absent"} and "scoring exploded" in q["absent"]
    with pytest.raises(ConfigError, match="quality.reference: unknown backend 'no_such_backend'; choose auto or "):
        reference_run(_run(tmp_path, reference="no_such_backend"), "cpu", ConfigSearch())
    cls = RunConfig.from_dict({
        "backend": {"engine": "transformers"}, "weights": "pretrained",
        "model": {"name": "c", "task": "sequence_classification", "hub_id": "x/y", "architecture": {"model_type": "bert"}},
        "workload": {"kind": "classify", "batch_sizes": [1]}}, "fp32")
    assert "no labelled evaluation set" in measure_quality(None, cls, None).flat()["absent"]


# -- end to end, real models on CPU ---------------------------------------------------------------
SMALL = ["workload.batch_sizes=[1]", "workload.warmup=1", "workload.repeats=2", "workload.prompt_tokens=8",
         "workload.new_tokens=4", "report.html=false"]


@pytest.mark.slow
def test_minilm_bbc_classifier_accuracy(tmp_path, cache_dir):
    # minilm-bbc's own recipe, trained on 150 articles a class instead of all 1,701 (minutes saved):
    # the test model is the product's YAML with that one knob (tests/conf/model/minilm-bbc-small.yaml).
    product = yaml.safe_load((ROOT / "conf" / "model" / "minilm-bbc.yaml").read_text())
    assert product["source"]["function"] == "runners.recipes.minilm_bbc:ensure_minilm_bbc"
    bench("backend=fp32", "model=minilm-bbc-small", "workload=classify", *SMALL, "quality.max_examples=100",
          f"hydra.run.dir={tmp_path}", check=True, timeout=900)
    [rec] = find_records(tmp_path)
    assert rec.status == "ok" and rec.weights == "pretrained"
    assert rec.quality.facts["num_examples"] == 100
    assert rec.quality.metrics["macro_f1_pct"] > 80 and rec.quality.metrics["accuracy_pct"] > 80
    # The head was really trained here, on real BBC News, and holds up on the whole held-out split too.
    trained = load_metrics(minilm_bbc_path(train_per_class=150))
    assert trained["num_train"] == 5 * 150 and trained["num_test"] == 426
    assert trained["accuracy"] > 0.85 and trained["macro_f1"] > 0.85
