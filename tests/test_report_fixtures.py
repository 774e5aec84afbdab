"""Hand-made records for the report tests (no tests here): what runners/launch writes, built by hand."""
from __future__ import annotations

from backends import engine_class, engine_names
from runners.catalogue import for_run
from runners.measure.memory import with_peak_vram
from runners.measure.stats import Stat
from runners.record.schema import Point, Quality, RunRecord
from runners.workload import workload as workload_kind

CPU_ENV = {"device": "cpu", "cpu": "AMD EPYC 7B13", "cpu_count": 2, "torch_threads": 2, "host": "ci",
           "packages": {"torch": "2.13.0", "transformers": "5.24.0"}, "git": {"commit": "0123456789abcdef"},
           "python": "3.11.7"}
GPU_ENV = {"device": "cuda", "gpu": {"gpu_name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "driver": "570.1",
                                     "cuda_runtime": "12.8", "total_vram_mib": 81559},
           "cpu": "Intel Xeon", "cpu_count": 16, "torch_threads": 16,
           "packages": {"torch": "2.8.0", "transformers": "5.5.0"}, "git": {"commit": "0123456789abcdef"},
           "python": "3.11.7"}


def stat(median: float, spread: float = 0.05, n: int = 5) -> Stat:
    """A Stat of n samples spread evenly over median × (1 ± spread)."""
    if n == 1:
        return Stat.of([median])
    samples = [median * (1 - spread + 2 * spread * i / (n - 1)) for i in range(n)]
    return Stat.of(samples)


def gen_point(bs: int, tok_s: float, spread: float = 0.05, device: str = "cpu", **extra) -> Point:
    metrics = {"ttft_ms": stat(1000.0 / tok_s, spread), "tpot_ms": stat(900.0 / tok_s, spread),
               "e2e_ms": stat(4000.0 / tok_s, spread), "output_tokens_per_s": stat(tok_s, spread),
               "total_tokens_per_s": stat(3 * tok_s, spread), "requests_per_s": stat(tok_s / 4, spread),
               "peak_rss_mib": 900.0 + bs}
    absent = {}
    if device == "cpu":
        absent.update(dict.fromkeys(("peak_allocated_mib", "peak_reserved_mib", "peak_process_vram_mib",
                                     "peak_device_vram_mib"), "CPU run: no device memory"))
        absent.update(dict.fromkeys(("energy_per_output_token_mj", "energy_j"),
                                    "CPU run: NVML's energy counter is GPU-only"))
    metrics.update(extra)
    for key in extra:
        absent.pop(key, None)
    return Point(bs, metrics=metrics, absent=absent)


def config(backend: str, new_tokens: int = 4, batch_sizes=(1, 2), workload: str = "generate",
           options: dict | None = None, baseline: str | None = None, **report) -> dict:
    task = "causal_lm" if workload == "generate" else "sequence_classification"
    return {"backend": {"name": backend, "engine": "transformers", "options": options or {"dtype": "float32"},
                        "description": "", "expect": {"quantized": None}},
            "model": {"name": "tiny", "task": task, "architecture": {"model_type": "llama"}},
            "workload": {"kind": workload, "batch_sizes": list(batch_sizes), "prompt_tokens": 8,
                         "new_tokens": new_tokens, "warmup": 1, "repeats": 5, "seed": 0},
            "weights": "synthetic", "device": "cpu", "timeout_s": 1800.0, "resume": False, "isolate": True,
            "quality": {"enabled": True, "reference": "auto"}, "report": {"baseline": baseline, "html": True, **report},
            "task": task}


def record(backend: str, points: list[Point], order: int = 0, engine: str = "transformers", status: str = "ok",
           reason: str | None = None, cfg: dict | None = None, env: dict | None = None, model: str = "tiny",
           workload: str = "generate", weights: str = "synthetic", device: str = "cpu", **kw) -> RunRecord:
    if isinstance(kw.get("quality"), dict):  # written flat, as version-2 records hold it
        kw["quality"] = Quality.from_v2(kw["quality"])
    if "declared" not in kw and engine in engine_names():
        task = "causal_lm" if workload == "generate" else "sequence_classification"
        kw["declared"] = for_run(workload_kind(workload), engine_class(engine), task).to_list()
    cfg = cfg if cfg is not None else config(backend)
    if isinstance(cfg.get("backend"), dict):  # what the runner writes: a record names what its config says
        cfg = {**cfg, "backend": {**cfg["backend"], "name": backend, "engine": engine}}
    rec = RunRecord(run_id=f"{backend}-{order}", backend=backend, engine=engine, model=model, workload=workload,
                    weights=weights, device=device, status=status, reason=reason,
                    config=cfg, points=points,
                    env=dict(env if env is not None else CPU_ENV), order=order,
                    started_at=f"2026-01-01T00:00:{order:02d}", wall_s=10.0 + order, **kw)
    rec.env.setdefault("load_average", {"start": [0.5, 0.4, 0.3], "end": [1.2, 0.6, 0.4]})
    for p in rec.points:  # the memory watcher adds the largest per-process VRAM reading (runners.measure.memory)
        numbers = {k: v for k, v in p.metrics.items() if isinstance(v, (int, float))}
        with_peak_vram(numbers, p.absent)
        if "peak_vram_mib" in numbers:
            p.metrics["peak_vram_mib"] = numbers["peak_vram_mib"]
    rec.summarize_status()
    return rec


BACKENDS = ("fp32", "bnb_int8", "ort_int8")


def twelve_cell_sweep() -> list[RunRecord]:
    """`-m backend=fp32,bnb_int8,ort_int8 workload.batch_sizes=[1,2] workload.new_tokens=4,8`: 6 runs,
    12 cells, each with its own output rate so that any overwritten cell shows."""
    recs = []
    order = 0
    for b_i, backend in enumerate(BACKENDS):
        for new_tokens in (4, 8):
            points = [gen_point(bs, tok_s=rate(b_i, new_tokens, bs)) for bs in (1, 2)]
            engine = "onnxruntime" if backend.startswith("ort") else "transformers"
            recs.append(record(backend, points, order=order, engine=engine, cfg=config(backend, new_tokens),
                               load={"load_s": 1.5 + b_i, "prepare_s": 0.25}, quality={"absent": "synthetic weights"}))
            order += 1
    return recs


def rate(backend_index: int, new_tokens: int, bs: int) -> float:
    return 100.0 + 10 * backend_index + new_tokens + 1000 * bs
