"""Why it is slow: one profiled pass after the timed repeats, classified into where the time goes."""
from __future__ import annotations

import gzip
import json

import pytest

from backends.contract.profiling import Activity, Trace, trace_from_chrome
from runners.measure.breakdown import CLASS_KEYS, breakdown, classify, why_slower
from runners.record.store import find_records

from .conftest import FAST, TEST_CONF, bench


@pytest.mark.parametrize("name, cls", [
    ("void cutlass::Kernel<cutlass_80_tensorop_i8816gemm>", "quantized_matmul"),
    ("kgemm_4bit_inference_naive<half, 128, 16>", "quantized_matmul"),
    ("Marlin<256, 1, 8, 8, 4, 8>", "quantized_matmul"),
    ("MatMulInteger", "quantized_matmul"),
    ("kInt8VectorQuant", "activation_quant"),
    ("DynamicQuantizeLinear", "activation_quant"),
    ("flash_fwd_kernel", "attention"),
    ("aten::scaled_dot_product_attention", "attention"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32", "float_matmul"),
    ("aten::mm", "float_matmul"),
    ("aten::argmax", "sampling"),
    ("void at::native::vectorized_elementwise_kernel<4, CUDAFunctor_add>", "norms_elementwise"),
    ("Memcpy DtoH (Device -> Pinned)", "copies_indexing"),
    ("aten::index_select", "copies_indexing"),
    ("some_custom_kernel_xyz", "other"),
    # Seen on an H200 (issue 34): cuBLAS's Hopper GEMMs, bitsandbytes' CUTLASS int8 GEMM, a torch.cat copy.
    ("nvjet_sm90_hsh_128x8_64x12_4x1_v_bz_TNT", "float_matmul"),
    ("nvjet_sm90_hsh_128x8_64x12_2x1_v_bz_splitK_TNT", "float_matmul"),
    ("void cutlass::Kernel2<cutlass_80_tensorop_i16832gemm_s8_64x64_64x6_tn_align16>(...)", "quantized_matmul"),
    ("void cutlass::Kernel2<cutlass_75_tensorop_f16_s1688gemm_f16_64x64_nn_align1>(...)", "float_matmul"),
    ("void at::native::(anonymous namespace)::CatArrayBatchedCopy_vectorized<OpaqueType<2u>>", "copies_indexing"),
    ("void kdequant_mm_int32_fp16<4, 512>(int*, float*, float*, __half*, __half*, int, int, int)", "activation_quant"),
])
def test_the_classifier_names_each_class(name, cls):
    assert classify(name) == cls


def test_a_gpu_trace_counts_launches_syncs_and_busy_share():
    events = [
        {"ph": "X", "cat": "kernel", "name": "sm90_xmma_gemm", "ts": 0, "dur": 40},
        {"ph": "X", "cat": "kernel", "name": "flash_fwd_kernel", "ts": 30, "dur": 20},  # overlaps on a stream
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy DtoH", "ts": 60, "dur": 10},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 0, "dur": 2},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 5, "dur": 2},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaStreamSynchronize", "ts": 61, "dur": 9},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 5},
    ]
    trace = trace_from_chrome({"traceEvents": events}, "cuda", span_us=200.0, units=2, profiler="t")
    assert (trace.launches, trace.syncs, trace.device_us) == (2, 1, 60.0)  # union: 0-50 and 60-70
    b = breakdown(trace)
    assert b.metrics["device_busy_pct"] == 30.0 and b.metrics["kernel_launches_per_unit"] == 1.0
    assert b.metrics["time_float_matmul_ms"] == 0.02 and b.metrics["time_attention_ms"] == 0.01
    assert b.metrics["host_syncs_per_unit"] == 0.5
    assert why_slower(b.metrics) == "GPU idle 70% of the step; 0 host synchronizations per token; float matmul 57% " \
                                    "of device time" or "GPU idle 70% of the step" in why_slower(b.metrics)


def test_cpu_operators_count_their_own_time_once():
    events = [{"ph": "X", "cat": "cpu_op", "name": "aten::linear", "ts": 0, "dur": 100, "pid": 1, "tid": 1},
              {"ph": "X", "cat": "cpu_op", "name": "aten::addmm", "ts": 10, "dur": 80, "pid": 1, "tid": 1},
              {"ph": "X", "cat": "cpu_op", "name": "aten::add", "ts": 150, "dur": 20, "pid": 1, "tid": 1}]
    trace = trace_from_chrome({"traceEvents": events}, "cpu", span_us=300.0, units=1, profiler="t")
    own = {a.name: a.dur_us for a in trace.activities}
    assert own == {"aten::linear": 20.0, "aten::addmm": 80.0, "aten::add": 20.0} and trace.device_us == 120.0
    b = breakdown(trace)
    assert "device_busy_pct" not in b.metrics and "CPU run" in b.absent["device_busy_pct"]
    assert abs(sum(b.metrics[f"time_{c}_ms"] for c in CLASS_KEYS) - b.metrics["profiled_device_ms"]) < 1e-9


def _profiled_sweep(tmp_path, backends: str, *extra: str):
    sweep = tmp_path / "s"
    bench("-m", f"backend={backends}", *FAST, "weights=synthetic", "workload.batch_sizes=[1]",
          "report.html=true", "profile=true", f"hydra.sweep.dir={sweep}", *extra, check=True, timeout=600)
    return sweep, {r.backend: r for r in find_records(sweep)}


def test_profiling_the_tiny_model_on_cpu_every_engine(tmp_path):
    sweep, recs = _profiled_sweep(tmp_path, "fp32,bnb_int8,ort_fp32")
    for name, rec in recs.items():
        assert rec.status == "ok", (name, rec.reason)
        for p in rec.points:
            total = sum(p.metrics[f"time_{c}_ms"] for c in CLASS_KEYS)
            device = p.metrics["profiled_device_ms"]
            assert device > 0 and abs(total - device) <= 0.05 * device, (name, total, device)
            # The profiled pass came after the timed repeats and was not counted in them.
            assert p.metrics["output_tokens_per_s"].n == 2
            facts = p.facts["profile"]
            path = facts["trace_file"]
            assert path.endswith(f"bs{p.batch_size}.json.gz") and json.loads(gzip.decompress(open(path, "rb").read()))
            assert facts["top"] and facts["classes_sum_of_device_pct"] == pytest.approx(100 * total / device, rel=0.01)
    outliers = recs["bnb_int8"].points[0].facts["profile"]["llm_int8_outliers"]
    assert outliers["layers"] == 14 and outliers["calls"] > 0 and "max_outlier_columns" in outliers
    assert recs["bnb_int8"].points[0].metrics["time_quantized_matmul_ms"] > 0
    assert recs["fp32"].points[0].metrics["time_quantized_matmul_ms"] == 0
    table = (sweep / "table.md").read_text()
    assert "| Profiled time in float matmul, ms per unit |" in table
    assert "Where the time goes" in (sweep / "report.html").read_text()


def test_an_engine_without_a_profiler_says_so(tmp_path):
    sweep = tmp_path / "s"
    bench(f"hydra.searchpath=[file://{TEST_CONF}]", "backend=fault_none", *FAST, "weights=synthetic",
          "workload.batch_sizes=[1]", "report.html=false", "profile=true", f"hydra.run.dir={sweep}", check=True)
    [rec] = find_records(sweep)
    assert rec.status == "ok"
    assert rec.points[0].absent["time_float_matmul_ms"] == "the fault engine has no profiler hook"


def test_the_profiled_pass_never_enters_the_timed_repeats():
    from runners.record.schema import Point
    from runners.workload.loop import profile_point

    calls = []

    class Engine:
        name = "probe"

        def profile(self, run_once, trace_path):
            calls.append("profile")
            units = run_once()
            return Trace("probe", "cpu", 10.0, 8.0, [Activity("aten::mm", 8.0)], units=units)

    point = Point(1, metrics={"e2e_ms": 5.0})
    profile_point(Engine(), point, lambda: calls.append("pass") or 4, None)
    assert calls == ["profile", "pass"] and point.metrics["e2e_ms"] == 5.0
    assert point.metrics["time_float_matmul_ms"] == pytest.approx(0.002) and point.facts["profile"]["units"] == 4


def test_the_profiled_pass_leaves_the_timed_numbers_where_they_were():
    """The same point measured with and without a profiled pass: the timed medians agree within their
    spread (a sleep-paced engine, so the comparison is about the loop, not the machine's noise)."""
    from types import SimpleNamespace

    from runners.workload import workload

    class Paced:
        name = "paced"

        def make_clock(self):
            from backends.contract import HostClock
            return HostClock()

        def generate(self, prompts, new_tokens, timer):
            import time
            for _ in range(new_tokens):
                time.sleep(0.004)
                timer.token()
            return [[1] * new_tokens for _ in prompts]

        def profile(self, run_once, trace_path):
            units = run_once()
            return Trace("paced", "cpu", 1.0, 1.0, [Activity("aten::mm", 1.0)], units=units)

    wl = SimpleNamespace(seed=0, prompt_tokens=4, new_tokens=4, warmup=1, repeats=6, kind="generate",
                         ci_target_pct=1.0, max_repeats=50, max_seconds=300.0)
    kind = workload("generate")
    plain = kind.run(Paced(), wl, 1, 64, "cpu", lambda: None)
    profiled = kind.run(Paced(), wl, 1, 64, "cpu", lambda: None, profile_to=None)
    with_profile = kind.run(Paced(), wl, 1, 64, "cpu", lambda: None, profile_to="unused")
    for p in (plain, profiled, with_profile):
        assert p.status == "ok" and p.metrics["e2e_ms"].n == 6
    a, b = plain.metrics["e2e_ms"], with_profile.metrics["e2e_ms"]
    assert b.min <= a.max * 1.25 and a.min <= b.max * 1.25 and "profiled_device_ms" in with_profile.metrics
