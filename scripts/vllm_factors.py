"""Why quantbench's vLLM number and vLLM's own benchmark differ: one factor at a time, on one warm engine.

quantbench's `vllm_fp16` / `fp8` once read 2-3% above `vllm bench throughput` and ~2% above a bare
`llm.generate` loop on the same cell; days earlier, with another memory watcher, 2.5% below. This
opens ONE engine the way quantbench does (its YAMLs, `llm_kwargs`, `VllmEngine.load`) and times, on
that engine, passes that differ from an independent minimal loop (`bare`) in exactly one thing each:

    bare              prebuilt TokensPrompt list, one greedy SamplingParams(max_tokens, ignore_eos,
                      detokenize=False), no progress bar, perf_counter around llm.generate
    min_tokens        + min_tokens=new_tokens (what quantbench's engine asked until this study)
    watcher           + quantbench's memory watcher thread and NVML energy meter around the call
    watcher_100ms     + the same, polling every 100 ms instead of 10 ms
    tqdm              + vLLM's progress bar (use_tqdm=True: what `vllm bench throughput` shows)
    param_list        + one SamplingParams object per request (vllm bench's request construction)
    random_sampling   + temperature 1.0, top_p 1.0 (vllm bench's sampler; greedy is argmax)
    bench_token_ids   + vllm bench's random-dataset prompts, as token ids (prompt token values)
    text_prompts      + those prompts as text, tokenized by vLLM inside the timed call
    quantbench        quantbench's measured path itself: the workload loop (memory watcher, energy
                      meter, StepTimer) around `VllmEngine.generate`
    vllm_bench        vLLM's own timed region, `vllm.benchmarks.throughput._run_vllm_requests`, on
                      its own random-dataset requests (what `vllm bench throughput` times, minus its
                      process and engine start)
    frontend_stats_off  bare with the front end's per-request stats off (the engine core keeps its
                      own: that is fixed when the engine starts); run after the rounds, then restored

Every round runs every variant once, in an order rotated by one each round (drift and position
cancel); a warm-up round is not counted. Each variant's effect is the median over rounds of its
pass's tokens/s divided by `bare`'s in the same round (paired), with the rounds' range. Every pass
must return exactly num_prompts x output_len tokens, or the variant is marked invalid.

The engine is quantbench's with two changes: `skip_tokenizer_init=False` with the model's tokenizer
(the `detokenize: true` option while it loads), because vllm bench's text prompts need one, and
`max_model_len` 32 tokens longer, because those prompts re-tokenize to input_len give or take a few.
With `detokenize=False` vLLM's output path uses no tokenizer either way (vllm/v1/engine/
output_processor.py: `if not sampling_params.detokenize: tokenizer = None`), so only the input path
differs, and only for text prompts.

    python scripts/vllm_factors.py --backend vllm_fp16 --model qwen2.5-7b --tokenizer /tmp/qb/tok/qwen2 \\
        --num-prompts 64 --input-len 512 --output-len 256 --rounds 4 --budget-s 300 \\
        --out results/h200/fidelity/factors_vllm_fp16_qwen2.5-7b.json

Writes the JSON (atomically, after every round: a cut run keeps its finished rounds) and a Markdown
factor table beside it.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
# The repository (runners, backends) and this folder (vllm_fidelity: the cell's plan and vllm bench's flags).
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

BASELINE = "bare"
EXTRA_ROUND = 1000  # rounds from here on: the passes after the rotated rounds (frontend_stats_off, paired)
GOAL_PCT = 1.0
DESCRIPTIONS = {
    "bare": "independent minimal loop: prebuilt TokensPrompt list, one greedy SamplingParams, no progress bar",
    "min_tokens": "+ min_tokens = output_len (quantbench's sampling parameters before this study)",
    "watcher": "+ quantbench's memory watcher thread (10 ms NVML/psutil polling) and energy meter",
    "watcher_100ms": "+ the same watcher polling every 100 ms instead of 10 ms",
    "tqdm": "+ vLLM's progress bar (use_tqdm=True, as vllm bench)",
    "param_list": "+ one SamplingParams per request (vllm bench's request construction)",
    "random_sampling": "+ temperature 1.0, top_p 1.0 (vllm bench's sampler)",
    "bench_token_ids": "+ vllm bench's random-dataset prompts as token ids (prompt token values)",
    "text_prompts": "+ vllm bench's prompts as text, tokenized inside the timed call",
    "quantbench": "quantbench's measured path (workload loop around VllmEngine.generate)",
    "vllm_bench": "vLLM's own timed region (_run_vllm_requests) on its random-dataset requests",
    "frontend_stats_off": "bare with the front end's per-request stats off (after the rounds)",
}
ALL = [k for k in DESCRIPTIONS if k != "frontend_stats_off"]


@dataclass(frozen=True)
class Pass:
    variant: str
    round: int  # -1: warm-up
    seconds: float
    output_tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.seconds


@dataclass
class Cell:
    """What every pass needs, built once (nothing here is rebuilt inside a timed window unless a variant
    says so)."""
    llm: Any
    num_prompts: int
    output_len: int
    ids: list[list[int]]  # quantbench's seeded prompts
    bench_requests: list[Any] = field(default_factory=list)  # vllm bench's SampleRequests (text prompts)
    bench_ids: list[list[int]] = field(default_factory=list)  # the same prompts, tokenized outside
    quantbench_pass: Callable[[], tuple[float, int]] | None = None
    vllm_bench_pass: Callable[[], tuple[float, int]] | None = None
    watch: Callable[[float], Any] | None = None  # interval_s -> a context manager (quantbench's watcher + energy)
    clock: Callable[[], float] = time.perf_counter
    close: Callable[[], None] | None = None  # ends the engine (its engine-core process) at the end


def _count(outs: list[Any]) -> int:
    return sum(len(o.outputs[0].token_ids) for o in outs)


def _params(cell: Cell, **kw):
    from vllm import SamplingParams

    base = dict(temperature=0.0, max_tokens=cell.output_len, ignore_eos=True, detokenize=False)
    base.update(kw)
    return SamplingParams(**base)


def _timed(cell: Cell, prompts, params, use_tqdm: bool = False) -> tuple[float, int]:
    t0 = cell.clock()
    outs = cell.llm.generate(prompts, params, use_tqdm=use_tqdm)
    return cell.clock() - t0, _count(outs)


def _tokens(ids: list[list[int]]) -> list[dict]:
    return [{"prompt_token_ids": list(p)} for p in ids]


def variant_fns(cell: Cell) -> dict[str, Callable[[], tuple[float, int]]]:
    prompts = _tokens(cell.ids)
    greedy = _params(cell)
    fns: dict[str, Callable[[], tuple[float, int]]] = {
        "bare": lambda: _timed(cell, prompts, greedy),
        "min_tokens": lambda: _timed(cell, prompts, _params(cell, min_tokens=cell.output_len)),
        "tqdm": lambda: _timed(cell, prompts, greedy, use_tqdm=True),
        "param_list": lambda: _timed(cell, prompts, [_params(cell) for _ in prompts]),
        "random_sampling": lambda: _timed(cell, prompts, _params(cell, temperature=1.0, top_p=1.0)),
    }
    if cell.watch is not None:
        def watched(interval_s: float) -> tuple[float, int]:
            with cell.watch(interval_s):
                return _timed(cell, prompts, greedy)
        fns["watcher"] = lambda: watched(0.01)
        fns["watcher_100ms"] = lambda: watched(0.1)
    if cell.bench_ids:
        bench_prompts = _tokens(cell.bench_ids)
        fns["bench_token_ids"] = lambda: _timed(cell, bench_prompts, greedy)
    if cell.bench_requests:
        texts = [{"prompt": r.prompt} for r in cell.bench_requests]
        fns["text_prompts"] = lambda: _timed(cell, texts, greedy)
    if cell.quantbench_pass is not None:
        fns["quantbench"] = cell.quantbench_pass
    if cell.vllm_bench_pass is not None:
        fns["vllm_bench"] = cell.vllm_bench_pass
    return fns


def rotated(names: list[str], r: int) -> list[str]:
    k = r % len(names)
    return names[k:] + names[:k]


def run_rounds(fns: dict[str, Callable[[], tuple[float, int]]], names: list[str], rounds: int, budget_s: float,
               on_round: Callable[[list[Pass]], None], clock: Callable[[], float] = time.monotonic,
               log: Callable[[str], None] = print) -> tuple[list[Pass], str | None]:
    """A warm-up round, then up to `rounds` timed rounds while the budget lasts. Returns the passes and
    why it stopped short (None: all rounds ran)."""
    passes: list[Pass] = []
    start = clock()
    for r in range(-1, rounds):
        t_round = clock()
        for name in rotated(names, max(r, 0)):
            seconds, tokens = fns[name]()
            passes.append(Pass(name, r, seconds, tokens))
            log(f"round {r:>2} {name:<16} {tokens / seconds:10.1f} tok/s  ({seconds:.3f} s, {tokens} tokens)")
        on_round(passes)
        round_s = clock() - t_round
        if r + 1 < rounds and clock() - start + round_s > budget_s:
            return passes, f"budget: {budget_s:g} s would be passed by round {r + 2} (a round takes {round_s:.0f} s)"
    return passes, None


def _range_pct(values: list[float]) -> list[float]:
    return [round((min(values) - 1) * 100, 2), round((max(values) - 1) * 100, 2)]


def summarize(passes: list[Pass], expected_tokens: int, baseline: str = BASELINE) -> dict[str, Any]:
    """Per variant: tokens/s over the timed rounds, and its effect against `baseline` paired by round."""
    timed = [p for p in passes if p.round >= 0]
    by_round: dict[int, dict[str, Pass]] = {}
    for p in timed:
        by_round.setdefault(p.round, {})[p.variant] = p
    out: dict[str, Any] = {}
    for name in dict.fromkeys(p.variant for p in timed):
        mine = [p for p in timed if p.variant == name]
        rates = [p.tokens_per_s for p in mine]
        entry: dict[str, Any] = {
            "description": DESCRIPTIONS.get(name, name), "n": len(rates),
            "tokens_per_s": {"median": round(statistics.median(rates), 2), "min": round(min(rates), 2),
                             "max": round(max(rates), 2),
                             "cv_pct": round(statistics.stdev(rates) / statistics.mean(rates) * 100, 3)
                             if len(rates) > 1 else None,
                             "first": round(rates[0], 2)},
        }
        wrong = sorted({p.output_tokens for p in mine if p.output_tokens != expected_tokens})
        if wrong:
            entry["invalid"] = f"passes returned {wrong} output tokens, not {expected_tokens}"
        ratios = [rd[name].tokens_per_s / rd[baseline].tokens_per_s for rd in by_round.values()
                  if name in rd and baseline in rd]
        if ratios and name != baseline:
            med = statistics.median(ratios)
            entry["vs_" + baseline] = {"ratio_median": round(med, 4), "effect_pct": round((med - 1) * 100, 2),
                                       "effect_range_pct": _range_pct(ratios), "rounds": len(ratios)}
        out[name] = entry
    return out


def verdict(summary: dict[str, Any], goal_pct: float = GOAL_PCT) -> dict[str, Any]:
    """The two questions of the study, answered from the summary (absent where a side did not run)."""
    v: dict[str, Any] = {"goal_pct": goal_pct}
    qb = summary.get("quantbench", {}).get("vs_" + BASELINE)
    if qb:
        v["quantbench_vs_bare_pct"] = qb["effect_pct"]
        v["quantbench_vs_bare_range_pct"] = qb["effect_range_pct"]
        v["quantbench_within_goal"] = abs(qb["effect_pct"]) <= goal_pct
    q, b = summary.get("quantbench"), summary.get("vllm_bench")
    if q and b:
        v["quantbench_over_vllm_bench"] = round(q["tokens_per_s"]["median"] / b["tokens_per_s"]["median"], 4)
    return v


def factor_table(result: dict[str, Any]) -> str:
    """Markdown: one row per variant, the effect against the bare loop with its range over rounds."""
    s = result["summary"]
    base = s.get(BASELINE, {}).get("tokens_per_s", {}).get("median")
    lines = [f"**{result['backend']} on {result['model']}**, {result['num_prompts']} requests x "
             f"({result['input_len']} + {result['output_len']} tokens), {result.get('gpu', 'GPU ?')}: "
             f"{result.get('rounds_run', '?')} rounds; bare loop {base} output tokens/s",
             "", "| variant | what differs from the bare loop | output tokens/s (median) | effect vs bare "
             "(median over rounds) | range over rounds |", "|---|---|---|---|---|"]
    for name, e in s.items():
        vs = e.get("vs_" + BASELINE)
        eff = f"{vs['effect_pct']:+.2f}%" if vs else "—"
        rng = f"{vs['effect_range_pct'][0]:+.2f}% .. {vs['effect_range_pct'][1]:+.2f}%" if vs else "—"
        note = f" (**invalid**: {e['invalid']})" if e.get("invalid") else ""
        lines.append(f"| `{name}` | {e['description']}{note} | {e['tokens_per_s']['median']:,.1f} | {eff} | {rng} |")
    v = result.get("verdict", {})
    if "quantbench_vs_bare_pct" in v:
        lines += ["", f"quantbench vs the bare loop: {v['quantbench_vs_bare_pct']:+.2f}% "
                      f"(goal ±{v['goal_pct']:g}%: {'met' if v['quantbench_within_goal'] else 'NOT met'})"]
    if "quantbench_over_vllm_bench" in v:
        lines.append(f"quantbench / vLLM's timed region, same engine: {v['quantbench_over_vllm_bench']:.4f}")
    return "\n".join(lines) + "\n"


# -- the GPU side: opening quantbench's engine and vLLM's benchmark inputs -------------------------------

def open_cell(args) -> tuple[Cell, dict[str, Any]]:
    from runners.measure.energy import EnergyMeter
    from runners.measure.memory import MemoryWatcher
    from runners.open.engine import make_engine, open_engine, vocab_size
    from runners.workload.generate import WORKLOAD
    from runners.workload.inputs import token_ids
    from vllm_fidelity import run_from_yamls

    # Text prompts (vllm bench's) need vLLM's tokenizer: `detokenize: true` is the option that loads it
    # (skip_tokenizer_init=False). Set back to false after the load, so quantbench's own passes ask
    # detokenize=False as they always do. vllm bench's prompts re-tokenize to input_len give or take a
    # few tokens (its RandomDataset decodes and re-encodes): room for 32 more, as quantbench's serve
    # workload leaves at 512 prompt tokens (RunConfig.retokenize_slack).
    options = {"detokenize": True,
               "max_model_len": args.max_model_len or args.input_len + args.output_len + 32}
    workload = {"prompt_tokens": args.input_len, "new_tokens": args.output_len, "batch_sizes": [args.num_prompts],
                "warmup": 0, "repeats": 1}
    run = run_from_yamls(args.backend, args.model, workload, options,
                         {"tokenizer": args.tokenizer} if args.tokenizer else None)
    engine = make_engine(run.backend, run.model, run.engine_view("cuda"))
    facts: dict[str, Any] = {}
    t = time.perf_counter()
    open_engine(engine, run.backend, facts)
    facts["open_s"] = round(time.perf_counter() - t, 1)
    engine.options = replace(engine.options, detokenize=False)
    llm = engine.llm
    vocab = vocab_size(engine)
    ids = token_ids(run.workload.seed, args.num_prompts, args.input_len, vocab).tolist()

    def quantbench_pass() -> tuple[float, int]:
        # The workload kind's own run(): memory watcher, energy meter, StepTimer, VllmEngine.generate,
        # its token-count check; warm-up 0 and one repeat, so each call is one timed pass.
        point = WORKLOAD.run(engine, run.workload, args.num_prompts, vocab, "cuda", lambda: None)
        if point.status != "ok":
            raise RuntimeError(f"quantbench's pass failed: {point.status}: {point.reason}")
        e2e_s = point.metrics["e2e_ms"].median / 1e3
        return e2e_s, args.num_prompts * args.output_len  # run() raised unless every sequence had that many

    class Watch:
        def __init__(self, interval_s: float):
            self.interval_s = interval_s

        def __enter__(self):
            self.w = MemoryWatcher("cuda", interval_s=self.interval_s).__enter__()
            self.e = EnergyMeter("cuda")
            self.e.start()

        def __exit__(self, *exc):
            self.e.stop()
            self.w.__exit__(*exc)

    from runners.measure.env import capture

    env = capture("cuda", ("vllm", "torch", "transformers", "flashinfer-python"))
    cell = Cell(llm=llm, num_prompts=args.num_prompts, output_len=args.output_len, ids=ids,
                quantbench_pass=quantbench_pass, watch=Watch, close=engine.close)
    info = {"gpu": (env.get("gpu") or {}).get("gpu_name", "GPU ?"), "env": env, "engine_open": facts,
            "llm_kwargs": {k: v for k, v in engine.kwargs.items() if k != "model"}, "vocab_size": vocab,
            "engine_info": {k: v for k, v in engine.describe().items()
                            if k in ("linear_kernels", "attention_backend", "quantization", "fp8_mode",
                                     "quantized_linear_layers", "vllm")}}
    add_vllm_bench(cell, args, engine.kwargs["model"], info)
    return cell, info


def add_vllm_bench(cell: Cell, args, model_path: str, info: dict[str, Any]) -> None:
    """vLLM's own request sampling (its parser, seed handling and get_requests, as its main() does) and its
    own timed region on the warm engine."""
    from vllm.benchmarks import throughput as vb
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    from vllm_fidelity import random_dataset_flags

    parser = FlexibleArgumentParser()
    vb.add_cli_args(parser)
    flags = ["--model", model_path, *random_dataset_flags(args.input_len, args.output_len, args.num_prompts),
             "--disable-detokenize"]
    if args.tokenizer:
        flags += ["--tokenizer", args.tokenizer]
    bargs = parser.parse_args(flags)
    vb.validate_args(bargs)
    if bargs.seed is None:
        bargs.seed = 0
    random.seed(bargs.seed)
    tokenizer = vb.get_tokenizer(bargs.tokenizer, tokenizer_mode=bargs.tokenizer_mode,
                                 trust_remote_code=bargs.trust_remote_code)
    requests = vb.get_requests(bargs, tokenizer)
    cell.bench_requests = requests
    cell.bench_ids = [tokenizer.encode(r.prompt) for r in requests]
    lengths = sorted({len(x) for x in cell.bench_ids})
    info["vllm_bench_prompts"] = {"count": len(requests), "token_lengths": lengths[:5] + lengths[-5:],
                                  "sampled_prompt_len": sorted({r.prompt_len for r in requests})[:5]}

    def vllm_bench_pass() -> tuple[float, int]:
        elapsed, outs = vb._run_vllm_requests(cell.llm, requests, bargs.n, True, do_profile=False,
                                              prequeue_requests=False, enable_lora=False)
        return elapsed, _count(outs)

    cell.vllm_bench_pass = vllm_bench_pass


def stats_off_pass(cell: Cell, repeats: int) -> list[Pass]:
    """`bare` with the front end's stats off (LLMEngine.log_stats and the output processor's), restored after."""
    eng = cell.llm.llm_engine
    saved = (eng.log_stats, eng.output_processor.log_stats, eng.logger_manager)
    eng.log_stats, eng.output_processor.log_stats, eng.logger_manager = False, False, None
    try:
        fn = variant_fns(cell)["bare"]
        out = []
        for i in range(repeats):
            seconds, tokens = fn()
            out.append(Pass("frontend_stats_off", EXTRA_ROUND + i, seconds, tokens))
        return out
    finally:
        eng.log_stats, eng.output_processor.log_stats, eng.logger_manager = saved


def _write(out: Path, result: dict[str, Any]) -> None:
    from backends.contract.safefs import write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(result, indent=1, default=str))
    write_text(out.with_suffix(".md"), factor_table(result))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="vllm_fp16", help="a conf/backend YAML with engine: vllm")
    ap.add_argument("--model", default="qwen2.5-7b", help="a conf/model YAML (synthetic weights)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder for vllm bench's text prompts (the "
                    "model's own if its YAML names one)")
    ap.add_argument("--input-len", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--max-model-len", type=int, default=None, help="default input + output + 32")
    ap.add_argument("--rounds", type=int, default=4, help="timed rounds (after one warm-up round)")
    ap.add_argument("--budget-s", type=float, default=300, help="no round starts that would end past this")
    ap.add_argument("--variants", default=",".join(ALL), help=f"comma list from {','.join(ALL)} (bare is "
                    "always run: every effect is paired with it)")
    ap.add_argument("--stats-off-repeats", type=int, default=2, help="passes of frontend_stats_off (0: none)")
    ap.add_argument("--out", required=True, help="JSON to write; the factor table goes beside it (.md)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; valid: {', '.join(ALL)}")
    if BASELINE not in names:
        names.insert(0, BASELINE)
    out = Path(args.out)
    started = time.time()
    cell, info = open_cell(args)
    fns = variant_fns(cell)
    missing = [n for n in names if n not in fns]
    names = [n for n in names if n in fns]

    result: dict[str, Any] = {
        "backend": args.backend, "model": args.model, "num_prompts": args.num_prompts, "input_len": args.input_len,
        "output_len": args.output_len, "variants": names, "variants_not_run": missing, "method": __doc__, **info,
    }
    expected = args.num_prompts * args.output_len

    def on_round(passes: list[Pass]) -> None:
        result["passes"] = [p.__dict__ for p in passes]
        result["rounds_run"] = len({p.round for p in passes if 0 <= p.round < EXTRA_ROUND})
        result["summary"] = summarize(passes, expected)
        result["verdict"] = verdict(result["summary"])
        result["wall_s"] = round(time.time() - started, 1)
        _write(out, result)

    passes, short = run_rounds(fns, names, args.rounds, args.budget_s - (time.time() - started), on_round)
    result["stopped_short"] = short
    if args.stats_off_repeats > 0 and result.get("rounds_run", 0) > 0:
        try:
            # Each stats-off pass is paired with a bare pass run just after them all (stats restored), so
            # drift since the rounds does not count.
            extra = []
            for i, p in enumerate(stats_off_pass(cell, args.stats_off_repeats)):
                s, n = fns[BASELINE]()
                extra += [Pass(BASELINE, EXTRA_ROUND + i, s, n), p]
            passes = passes + extra
        except Exception as exc:  # noqa: BLE001 — the rounds stand; this factor says why it is absent
            result["frontend_stats_off_error"] = f"{type(exc).__name__}: {exc}"
    on_round(passes)
    print(factor_table(result))
    print(f"written: {out} and {out.with_suffix('.md')}", flush=True)
    if cell.close is not None:
        # Without this the interpreter's exit waits on vLLM's engine-core process (seen on the H100: the
        # finished study sat in multiprocessing's atexit join until the call's timeout).
        cell.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
