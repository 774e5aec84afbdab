"""scripts/vllm_factors.py on CPU: a stand-in vLLM whose passes cost a known time on an injected clock, so
the study's pairing, rotation, budget, validity check and table are checked exactly (the GPU numbers are
the device campaign's)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("vllm_factors", ROOT / "scripts" / "vllm_factors.py")
F = importlib.util.module_from_spec(spec)
sys.modules["vllm_factors"] = F  # dataclasses look their module up while the class is made
spec.loader.exec_module(F)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class CostLLM:
    """generate() advances the clock: 1 s, +2% for temperature 1.0, +1% for a list of params, +3% for text
    prompts; a drift of +0.1% per call makes unpaired medians wrong and paired ones right."""

    def __init__(self, clock: Clock, short_by: int = 0):
        self.clock, self.calls, self.short_by = clock, 0, short_by
        self.llm_engine = SimpleNamespace(log_stats=True, output_processor=SimpleNamespace(log_stats=True),
                                          logger_manager="mgr")

    def generate(self, prompts, params, use_tqdm=True):
        first = params[0] if isinstance(params, list) else params
        cost = 1.0
        cost *= 1.02 if first.get("temperature") == 1.0 else 1.0
        cost *= 1.01 if isinstance(params, list) else 1.0
        cost *= 1.03 if "prompt" in prompts[0] else 1.0
        cost *= 0.98 if not self.llm_engine.log_stats else 1.0
        cost *= 1 + 0.001 * self.calls
        self.calls += 1
        self.clock.t += cost
        n = first["max_tokens"] - self.short_by
        return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=list(range(n)))]) for _ in prompts]


def _cell(clock, llm, **kw):
    return F.Cell(llm=llm, num_prompts=4, output_len=8, ids=[[1, 2, 3]] * 4, clock=clock, **kw)


def test_effects_are_paired_by_round_and_match_the_costs(fake_vllm):
    clock = Clock()
    llm = CostLLM(clock)
    cell = _cell(clock, llm, bench_ids=[[5, 6]] * 4, bench_requests=[SimpleNamespace(prompt="a b")] * 4)
    fns = F.variant_fns(cell)
    assert {"bare", "min_tokens", "tqdm", "param_list", "random_sampling", "bench_token_ids",
            "text_prompts"} <= set(fns) and "watcher" not in fns  # no watcher given: not offered
    names = ["bare", "random_sampling", "param_list", "text_prompts", "min_tokens"]
    rounds_seen = []
    passes, short = F.run_rounds(fns, names, rounds=3, budget_s=1e9, on_round=lambda p: rounds_seen.append(len(p)),
                                 clock=clock, log=lambda s: None)
    assert short is None and rounds_seen == [5, 10, 15, 20]  # warm-up round + 3, each written
    assert [p.variant for p in passes[:5]] == names  # warm-up and round 0 in the given order
    assert [p.variant for p in passes[10:15]] == F.rotated(names, 1) == names[1:] + names[:1]
    s = F.summarize(passes, expected_tokens=32)
    assert s["bare"]["n"] == 3 and "vs_bare" not in s["bare"]
    # Tokens/s fall by the cost: 1/1.02 - 1 = -1.96%; paired rounds cancel the drift within ~0.3%.
    assert s["random_sampling"]["vs_bare"]["effect_pct"] == pytest.approx(-1.96, abs=0.3)
    assert s["param_list"]["vs_bare"]["effect_pct"] == pytest.approx(-0.99, abs=0.3)
    assert s["text_prompts"]["vs_bare"]["effect_pct"] == pytest.approx(-2.91, abs=0.3)
    assert abs(s["min_tokens"]["vs_bare"]["effect_pct"]) < 0.3
    lo, hi = s["random_sampling"]["vs_bare"]["effect_range_pct"]
    assert lo <= s["random_sampling"]["vs_bare"]["effect_pct"] <= hi
    assert not any("invalid" in e for e in s.values())


def test_short_outputs_mark_the_variant_invalid_and_the_table_says_so(fake_vllm):
    clock = Clock()
    cell = _cell(clock, CostLLM(clock, short_by=1))
    fns = F.variant_fns(cell)
    passes, _ = F.run_rounds(fns, ["bare", "tqdm"], 1, 1e9, lambda p: None, clock=clock, log=lambda s: None)
    s = F.summarize(passes, expected_tokens=32)
    assert "28" in s["tqdm"]["invalid"] and "32" in s["tqdm"]["invalid"]
    table = F.factor_table({"backend": "vllm_fp16", "model": "m", "num_prompts": 4, "input_len": 3,
                            "output_len": 8, "gpu": "GPU X", "rounds_run": 1, "summary": s, "verdict": {}})
    assert "**invalid**" in table and "| `tqdm` |" in table and "GPU X" in table


def test_budget_stops_before_a_round_that_would_pass_it(fake_vllm):
    clock = Clock()
    cell = _cell(clock, CostLLM(clock))
    fns = F.variant_fns(cell)
    # Each round of two variants costs ~2 s: after the warm-up (2 s) and round 0 (4 s) a third round
    # would end past 5 s.
    passes, short = F.run_rounds(fns, ["bare", "tqdm"], 5, 5.0, lambda p: None, clock=clock, log=lambda s: None)
    assert max(p.round for p in passes) == 0 and short.startswith("budget")


def test_verdict_and_the_quantbench_and_vllm_bench_sides(fake_vllm):
    clock = Clock()
    llm = CostLLM(clock)

    def qb():  # 0.5% slower than bare
        clock.t += 1.005
        return 1.005, 32

    def vb():
        clock.t += 1.05
        return 1.05, 32

    cell = _cell(clock, llm, quantbench_pass=qb, vllm_bench_pass=vb)
    fns = F.variant_fns(cell)
    passes, _ = F.run_rounds(fns, ["bare", "quantbench", "vllm_bench"], 3, 1e9, lambda p: None, clock=clock,
                             log=lambda s: None)
    s = F.summarize(passes, 32)
    v = F.verdict(s, goal_pct=1.0)
    assert v["quantbench_within_goal"] is True and -1.0 < v["quantbench_vs_bare_pct"] < 0
    assert v["quantbench_over_vllm_bench"] == pytest.approx(1.05 / 1.005, abs=1e-3)
    assert F.verdict(s, goal_pct=0.1)["quantbench_within_goal"] is False


def test_frontend_stats_off_is_restored_even_when_a_pass_fails(fake_vllm):
    clock = Clock()
    llm = CostLLM(clock)
    cell = _cell(clock, llm)
    out = F.stats_off_pass(cell, 2)
    assert [p.variant for p in out] == ["frontend_stats_off"] * 2 and out[0].round == F.EXTRA_ROUND
    assert out[0].seconds < 1.0  # the stand-in is 2% faster with stats off
    eng = llm.llm_engine
    assert (eng.log_stats, eng.output_processor.log_stats, eng.logger_manager) == (True, True, "mgr")
    llm.generate = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom"))
    with pytest.raises(RuntimeError):
        F.stats_off_pass(cell, 1)
    assert (eng.log_stats, eng.logger_manager) == (True, "mgr")


def test_unknown_variant_is_refused_with_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exc:
        F.main(["--variants", "bare,nope", "--out", "/nonexistent/x.json"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "nope" in err and "random_sampling" in err and "vllm_bench" in err


def test_main_writes_json_and_table_pairs_stats_off_and_ends_the_engine(fake_vllm, monkeypatch, tmp_path):
    clock = Clock()
    llm = CostLLM(clock)
    closed = []
    cell = _cell(clock, llm, close=lambda: closed.append(True))
    monkeypatch.setattr(F, "open_cell", lambda args: (cell, {"gpu": "Stand-in GPU", "engine_open": {"open_s": 1.0}}))
    out = tmp_path / "f.json"
    assert F.main(["--variants", "random_sampling,tqdm", "--rounds", "2", "--out", str(out)]) == 0
    import json

    result = json.loads(out.read_text())
    assert result["variants"] == ["bare", "random_sampling", "tqdm"] and result["rounds_run"] == 2
    assert result["summary"]["random_sampling"]["vs_bare"]["effect_pct"] < -1.5
    # The stats-off passes sit beside bare passes of their own rounds, paired with them only.
    stats_off = result["summary"]["frontend_stats_off"]
    assert stats_off["n"] == 2 and stats_off["vs_bare"]["rounds"] == 2 and stats_off["vs_bare"]["effect_pct"] > 1.0
    assert closed == [True]
    md = out.with_suffix(".md").read_text()
    assert "Stand-in GPU" in md and "| `frontend_stats_off` |" in md and "2 rounds" in md
