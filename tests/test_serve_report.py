"""The report of `serve` runs: blocks per offered rate, the SLO applied at report time (goodput from the
raw samples), the capacity answer, CSV columns, the CLI's --slo, report.slo checked before any run, and the
serving plots. Hand-made records from request samples of known timings; no server, CPU only."""
from __future__ import annotations

import csv
import json
import math

import pytest

from backends import engine_class
from runners import catalogue
from runners.measure.serving import RequestSample, load_point_stats
from runners.record.schema import Point, RunRecord
from runners.record.store import write_record
from runners.report import capacity, csvjson, plots
from runners.report import html as report_html
from runners.report.cli import main as report_main
from runners.report.outputs import build_report, write_outputs, write_report
from runners.report.table import build
from runners.workload import workload as workload_kind

from .test_plot_layout import check_layout
from .test_report_fixtures import CPU_ENV, config, gen_point, record

SLO = "ttft_p90<=500ms,tpot_p90<=50ms"
RATES = (1.0, 2.0, 4.0)
N = 10  # requests per load point
TOKENS = 5  # output tokens per request: 4 decode gaps
MODEL = "smollm2-135m"
DECLARED = catalogue.for_run(workload_kind("serve"), engine_class("transformers"), "causal_lm").to_list()
# Per backend: offered rate -> (TTFT of even requests, TTFT of odd requests, decode gap), seconds.
TIMINGS = {
    "fp16": {1.0: (0.10, 0.10, 0.02), 2.0: (0.20, 0.20, 0.02), 4.0: (0.40, 0.40, 0.02)},  # meets it everywhere
    # TTFT p90 300 ms at 2 req/s (0.6 of the limit), 700 ms at 4 req/s (1.4): crosses it at 3 req/s.
    "awq": {1.0: (0.10, 0.10, 0.02), 2.0: (0.30, 0.30, 0.02), 4.0: (0.30, 0.70, 0.02)},
    "bnb_int8": {r: (0.10, 0.10, 0.06) for r in RATES},  # TPOT 60 ms > 50 ms from the lowest rate on
    "hqq": {r: (0.05, 0.05, 0.01) for r in RATES},  # fastest, but loses quality (KL 0.08 nats)
}
KL = {"fp16": 0.0, "awq": 0.02, "bnb_int8": 0.01, "hqq": 0.08}


def samples(rate: float, even_ttft_s: float, odd_ttft_s: float, gap_s: float) -> list[RequestSample]:
    """N requests sent at a constant `rate` (all at t=0 for inf), each TOKENS tokens in one-token chunks."""
    out = []
    for i in range(N):
        sent = 0.0 if math.isinf(rate) else i / rate
        first = sent + (odd_ttft_s if i % 2 else even_ttft_s)
        out.append(RequestSample(sent, [first + k * gap_s for k in range(TOKENS)], TOKENS, 8))
    return out


def serve_point(rate: float, reqs: list[RequestSample]) -> Point:
    """What the serve workload writes: statistics without an SLO, and the raw samples."""
    stats = load_point_stats(reqs, rate)
    return Point(None, metrics=dict(stats.metrics), absent=dict(stats.absent),
                 facts={"requests": [s.to_compact() for s in reqs], "arrival": "constant"}, rate_per_s=rate)


def serve_config(backend: str, rates=RATES, engine: str = "transformers") -> dict:
    cfg = config(backend)
    cfg["backend"] = {**cfg["backend"], "name": backend, "engine": engine}
    cfg["model"] = {"name": MODEL, "task": "causal_lm", "architecture": {"model_type": "llama"}}
    cfg["workload"] = {"kind": "serve", "batch_sizes": [1], "prompt_tokens": 8, "new_tokens": TOKENS, "warmup": 1,
                       "repeats": 5, "seed": 0,
                       "serve": {"rates": ["inf" if math.isinf(r) else r for r in rates], "requests": N}}
    cfg["weights"] = "pretrained"
    return cfg


def serve_record(backend: str, order: int, timings: dict[float, tuple[float, float, float]] | None = None,
                 engine: str = "transformers", **kw) -> RunRecord:
    timings = timings if timings is not None else TIMINGS[backend]
    points = [serve_point(r, samples(r, *t)) for r, t in timings.items()]
    quality = {"kl_mean_nats": KL[backend]} if backend in KL else {"absent": "no quality"}
    return record(backend, points, order=order, engine=engine, model=MODEL, workload="serve", weights="pretrained",
                  cfg=serve_config(backend, tuple(timings), engine), declared=DECLARED, quality=quality, **kw)


def refused(order: int) -> RunRecord:
    """onnxruntime has no server: the run is refused before any load point."""
    why = "the onnxruntime engine has no server for backend ort_int8"
    return record("ort_int8", [], order=order, engine="onnxruntime", model=MODEL, workload="serve",
                  weights="pretrained", cfg=serve_config("ort_int8", engine="onnxruntime"), declared=DECLARED,
                  status="invalid_config", reason=why)


def sweep() -> list[RunRecord]:
    return [serve_record(b, i) for i, b in enumerate(TIMINGS)] + [refused(len(TIMINGS))]


def _folder(tmp_path, recs, report: dict | None = None):
    root = tmp_path / "sweep"
    for r in recs:
        write_record(root / f"backend={r.backend}" / "record.json", r)
    if report is not None:
        (root / "sweep.json").write_text(json.dumps({"sweep_id": "s", "backends": [r.backend for r in recs],
                                                     "report": report}))
    return root


def _block_text(md: str, title: str) -> str:
    """A results block of table.md (the answer sections above name the blocks too)."""
    return md.split("\n## Results\n", 1)[1].split(f"### {title}\n", 1)[1].split("\n### ", 1)[0]


def _row(text: str, label: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")][1:]


# -- the table model ------------------------------------------------------------------------------------
def test_serve_blocks_are_keyed_by_offered_rate_with_titles_and_values():
    table = build(sweep())
    serve = [b for b in table.blocks if b.serves]
    assert [b.title for b in serve] == [f"{MODEL} · serve · offered {r:g} req/s · pretrained weights · cpu"
                                        for r in RATES]
    assert all(b.batch_size is None for b in serve)
    from runners.report.markdown import document

    md = document(table)
    text = _block_text(md, serve[1].title)  # 2 req/s
    assert text.splitlines()[1].startswith("| | fp16 | awq | bnb_int8 | hqq | ort_int8 |")
    ttft = _row(text, "TTFT, ms")
    assert ttft[0] == "200" and ttft[1].startswith("300") and ttft[2].startswith("100")
    assert _row(text, "Completed requests")[:4] == ["10"] * 4
    assert _row(text, "Status")[4].startswith("invalid_config: the onnxruntime engine has no server")
    # Without an SLO goodput is absent, with the record's reason.
    assert "Not measured (no SLO given (report.slo)): Goodput (requests meeting the SLO), req/s; SLO attainment" in text
    assert "Capacity needs an SLO: give `report.slo`" in md


def test_all_at_once_sorts_last_and_reads_so_in_titles_and_csv(tmp_path):
    recs = [serve_record("fp16", 0, {math.inf: (0.4, 0.4, 0.02), 1.0: (0.1, 0.1, 0.02)})]
    table = build(recs)
    assert [b.title for b in table.blocks] == [f"{MODEL} · serve · offered 1 req/s · pretrained weights · cpu",
                                               f"{MODEL} · serve · all at once · pretrained weights · cpu"]
    rows = csvjson.flat_rows(table)
    assert [r["offered_rate_per_s"] for r in rows] == ["inf", 1.0]  # records' order; blocks sort
    root = _folder(tmp_path, recs)
    write_outputs(root, html=False)
    with open(root / "table.csv", newline="") as f:
        got = list(csv.DictReader(f))
    assert sorted(r["offered_rate_per_s"] for r in got) == ["1.0", "inf"]
    assert all(r["batch_size"] == "" for r in got)
    assert [json.loads(ln)["offered_rate_per_s"] for ln in (root / "rows.jsonl").read_text().splitlines()] == \
        ["inf", 1.0]


def test_csv_offered_rate_column_sits_next_to_batch_size_and_is_empty_offline(tmp_path):
    offline = record("fp32", [gen_point(1, 50.0)], order=9)
    root = _folder(tmp_path, [serve_record("fp16", 0), offline])
    write_outputs(root, html=False)
    with open(root / "table.csv", newline="") as f:
        reader = csv.DictReader(f)
        head = reader.fieldnames
        got = list(reader)
    assert head[head.index("batch_size") + 1] == "offered_rate_per_s"
    serve_rows = [r for r in got if r["workload"] == "serve"]
    assert [(r["batch_size"], r["offered_rate_per_s"]) for r in serve_rows] == [("", "1.0"), ("", "2.0"), ("", "4.0")]
    [off] = [r for r in got if r["workload"] == "generate"]
    assert (off["batch_size"], off["offered_rate_per_s"]) == ("1", "")


# -- the SLO at report time ----------------------------------------------------------------------------
def _hand_goodput(backend: str, rate: float) -> tuple[float, float]:
    """(goodput req/s, attainment %) by hand: requests with TTFT <= 500 ms and TPOT <= 50 ms, over first send
    to last token."""
    even, odd, gap = TIMINGS[backend][rate]
    ttfts = [odd if i % 2 else even for i in range(N)]
    met = sum(1 for t in ttfts if t <= 0.5 and gap <= 0.05)
    end = max(i / rate + t + (TOKENS - 1) * gap for i, t in enumerate(ttfts))
    return met / end, 100.0 * met / N


def test_slo_recomputes_goodput_from_the_samples_and_leaves_the_records_alone(tmp_path):
    recs = sweep()
    root = _folder(tmp_path, recs)
    before = (root / "backend=awq" / "record.json").read_text()
    report = build_report(root, recs, slo=SLO)
    cells = {(c.backend, c.rate_per_s): c for c in report.table.cells}
    for backend in ("fp16", "awq", "hqq"):  # bnb_int8's goodput is 0: the test below
        for rate in RATES:
            goodput, attainment = _hand_goodput(backend, rate)
            c = cells[(backend, rate)]
            assert c.value("goodput_per_s") == pytest.approx(goodput, rel=1e-4), (backend, rate)
            assert c.value("slo_attainment_pct") == pytest.approx(attainment), (backend, rate)
    # awq at 4 req/s: the five odd requests (TTFT 700 ms) miss; the last ends at 9/4 + 0.7 + 0.08 s.
    assert cells[("awq", 4.0)].value("goodput_per_s") == pytest.approx(5 / 3.03, rel=1e-4)
    assert all("goodput_per_s" not in p.metrics for r in recs for p in r.points)  # in memory, on copies
    written = write_report(root, report, html=False)
    assert (root / "backend=awq" / "record.json").read_text() == before
    lines = [json.loads(ln) for ln in (root / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 5 and not any("goodput_per_s" in p["metrics"] for r in lines for p in r["points"])
    assert "goodput_per_s" in written.paths["csv"].read_text().splitlines()[0].split(",")  # the table has it


def test_slo_from_the_sweep_settings_reaches_the_table(tmp_path):
    root = _folder(tmp_path, sweep(), report={"slo": SLO})
    written = write_outputs(root, html=False)
    md = written.markdown
    assert "## Capacity under the SLO (ttft p90 <= 500 ms, tpot p90 <= 50 ms)" in md
    text = _block_text(md, f"{MODEL} · serve · offered 4 req/s · pretrained weights · cpu")
    assert [v.split(" (")[0] for v in _row(text, "SLO attainment, %")[:4]] == ["100", "50.0", "0", "100"]
    with open(root / "table.csv", newline="") as f:
        got = {(r["backend"], r["offered_rate_per_s"]): r for r in csv.DictReader(f)}
    assert float(got[("awq", "4.0")]["goodput_per_s"]) == pytest.approx(5 / 3.03, rel=1e-4)


def test_a_goodput_of_zero_is_a_reading_not_a_rounding(tmp_path):
    table = build_report(_folder(tmp_path, sweep()), slo=SLO).table
    cell = next(c for c in table.cells if (c.backend, c.rate_per_s) == ("bnb_int8", 1.0))
    assert cell.value("slo_attainment_pct") == 0.0  # declared zero_is_real: shown as 0
    assert cell.value("goodput_per_s") == 0.0


def test_a_point_without_samples_says_why_it_has_no_goodput():
    rec = serve_record("fp16", 0)
    rec.points[0].facts.pop("requests")
    report_table = build(capacity.with_slo([rec], capacity.parse_slo(SLO)))
    cell = next(c for c in report_table.cells if c.rate_per_s == 1.0)
    assert cell.absent["goodput_per_s"] == capacity.NO_SAMPLES and "goodput_per_s" not in cell.values


# -- the capacity answer -------------------------------------------------------------------------------
def test_capacity_ranks_backends_with_rates_binding_terms_floors_and_refusals(tmp_path):
    root = _folder(tmp_path, sweep())
    report = build_report(root, slo=SLO, require="kl_mean<=0.05")
    [group] = report.capacity.groups
    rows = {r.column: r for r in group.rows}
    assert [r.column for r in group.rows] == ["fp16", "awq", "bnb_int8", "hqq", "ort_int8"]
    assert [r.kind for r in group.rows] == ["ranked", "ranked", "none", "rejected", "failed"]
    assert rows["fp16"].rate_per_s == 4.0 and rows["fp16"].capacity.how == "measured"
    assert rows["fp16"].text.startswith("≥ 4 req/s") and rows["fp16"].binding.startswith("none")
    assert rows["awq"].capacity.how == "interpolated" and rows["awq"].rate_per_s == pytest.approx(3.0)
    assert rows["awq"].binding == "ttft p90 = 700 ms > 500 ms at 4 req/s"
    assert rows["bnb_int8"].rate_per_s is None and rows["bnb_int8"].binding == "tpot p90 = 60 ms > 50 ms at 1 req/s"
    assert rows["hqq"].text == "rejected: kl_mean = 0.0800 nats, needs <= 0.0500 nats"
    assert "not ranked" in rows["hqq"].notes[0]  # its capacity (every rate passes) is said, not ranked
    assert "has no server" in rows["ort_int8"].text
    assert group.answer.startswith("fp16: the highest capacity, ≥ 4 req/s")
    md = report.markdown()
    section = md.split("## Capacity under the SLO", 1)[1].split("\n## ", 1)[0]
    assert "| 1 | fp16 |" in section and "| 2 | awq | 3 req/s (interpolated between 2 req/s and 4 req/s) |" in section
    assert "| — | ort_int8 | invalid_config: the onnxruntime engine has no server" in section
    assert "Floors from --require / report.require: kl_mean<=0.05" in section


def test_a_load_point_that_failed_stops_the_capacity_below_it():
    rec = serve_record("fp16", 0)
    rec.points[2].status, rec.points[2].reason = "crash", "the server died"
    rec.points[2].metrics.clear()
    report_table = build([rec])
    ans = capacity.answer(report_table, capacity.parse_slo(SLO))
    [row] = ans.groups[0].rows
    assert (row.kind, row.rate_per_s, row.text) == ("ranked", 2.0, "2 req/s")
    assert row.binding == "the load point at 4 req/s failed (crash)"
    assert row.notes == ["load points that failed: 4 req/s crash"]


def test_capacity_in_report_html(tmp_path):
    root = _folder(tmp_path, sweep(), report={"slo": SLO})
    write_outputs(root)
    page = (root / "report.html").read_text()
    section = page.split("<h2>Capacity under the SLO (ttft p90 &lt;= 500 ms, tpot p90 &lt;= 50 ms)</h2>", 1)[1]
    section = section.split("<h2>", 1)[0]
    assert "<th>fp16</th>" in section and "interpolated between 2 req/s and 4 req/s" in section
    for name in ("serve_latency", "serve_goodput", "serve_tradeoff"):
        assert (root / "plots" / f"{name}.png").stat().st_size > 5000, name
    assert not (root / "plots" / "speed.png").exists()  # a serve-only table has no offline plots


# -- the command lines ---------------------------------------------------------------------------------
def test_cli_slo_prints_the_capacity_and_writes_nothing(tmp_path, capsys):
    root = _folder(tmp_path, sweep())
    assert report_main([str(root), "--slo", SLO, "--no-html"]) == 0
    out = capsys.readouterr().out
    assert "## Capacity under the SLO (ttft p90 <= 500 ms, tpot p90 <= 50 ms)" in out and "| 1 | fp16 |" in out
    assert not (root / "table.md").exists()
    assert report_main([str(root), "--slo", SLO, "--no-html", "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "table.md").read_text()
    assert "**Answer:** tie between fp16, hqq: capacity ≥ 4 req/s" in md
    assert "| 1 | fp16 |" in md and "| 1 | hqq |" in md and "| 3 | awq |" in md  # a tie shares its rank


def test_cli_bad_slo_is_one_line_and_exits_like_a_bad_require(tmp_path, capsys):
    root = _folder(tmp_path, sweep())
    bad_require = report_main([str(root), "--require", "speed<=1"])
    capsys.readouterr()
    assert report_main([str(root), "--slo", "ttft_p90>=500ms"]) == bad_require == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: --slo: cannot read 'ttft_p90>=500ms'")
    assert "ttft_p90<=500ms,tpot_p90<=50ms" in err  # names the valid form
    assert not (root / "table.md").exists()


def test_bench_checks_report_slo_before_any_run():
    from runners.bench import check_report_settings
    from runners.plan.cli import CliError
    from runners.plan.search import ConfigSearch

    search = ConfigSearch.from_args([])
    check_report_settings([f"report.slo={SLO}"], search)  # a good one passes
    with pytest.raises(CliError) as err:
        check_report_settings(["report.slo=kl_mean<=0.05"], search)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("report.slo: cannot read 'kl_mean<=0.05'") and "ttft, tpot, e2e" in msg


# -- plots ---------------------------------------------------------------------------------------------
def test_serving_plots_are_drawn_with_the_slo_and_without_goodput_without_it(tmp_path):
    root = _folder(tmp_path, sweep())
    with_slo = build_report(root, slo=SLO).table
    names = [p.name for p in plots.all_plots(with_slo, report_html.pareto_of(None))]
    assert names == ["serve_latency", "serve_goodput", "serve_tradeoff"]
    without = build_report(root).table
    got = plots.all_plots(without, report_html.pareto_of(None))
    assert [p.name for p in got] == ["serve_latency", "serve_tradeoff"] and all(p.figure for p in got)
    offline = build([record("fp32", [gen_point(1, 50.0)])])
    assert [p.name for p in plots.all_plots(offline, report_html.pareto_of(None))] == [n for n, _ in plots.PLOTS]


def test_latency_plot_shows_the_slo_percentile_and_limit_and_all_at_once_on_its_own_tick(tmp_path):
    timings = {1.0: (0.1, 0.1, 0.02), 2.0: (0.2, 0.2, 0.02), math.inf: (0.9, 0.9, 0.03)}
    root = _folder(tmp_path, [serve_record("fp16", 0, timings), serve_record("awq", 1, timings)])
    table = build_report(root, slo="ttft_p99<=500ms,tpot_p90<=50ms").table
    plot = plots.serve_latency(table, plots.colors(table))
    ttft_ax, tpot_ax = [ax for ax in plot.figure.axes if ax.get_visible()]
    assert ttft_ax.get_ylabel().startswith("TTFT p99") and tpot_ax.get_ylabel().startswith("TPOT p90")
    assert [t.get_text() for t in ttft_ax.get_xticklabels()] == ["1", "2", "all at once"]
    assert list(ttft_ax.get_xticks()) == [1.0, 2.0, 4.0]  # all at once: one doubling right of 2 req/s
    [fp16] = [ln for ln in ttft_ax.lines if ln.get_label() == "fp16"]
    assert list(fp16.get_ydata()) == pytest.approx([100.0, 200.0, 900.0], abs=0.01)
    assert any(ln.get_label() == "SLO: p99 <= 500 ms" for ln in ttft_ax.lines)
    assert "one doubling right" in plot.notes[0]
    check_layout(plot.figure, expect_labels=0)


def test_tradeoff_plot_marks_the_pareto_front_and_labels_every_point_off_the_markers(tmp_path):
    root = _folder(tmp_path, sweep())
    table = build_report(root).table
    [blocks] = [bs for bs in plots._groups(table, serves=True).values()]
    points, skipped = plots.trade_data(blocks)
    assert len(points) == 12 and skipped == []  # 4 backends × 3 rates; the refused run has no load point
    front = {(p.column, p.rate_per_s) for p in points if p.on_front}
    # hqq (TPOT 10 ms) is fastest per user at every rate; at 4 req/s it also serves the most tokens/s.
    # hqq 2 req/s is as fast per user as hqq 4 req/s (equal timings) and serves less: dominated, not on it.
    assert front == {("hqq", 4.0)}
    for p in points:
        if (p.column, p.rate_per_s) in front:
            assert not any(o.user_tok_s >= p.user_tok_s and o.gpu_tok_s > p.gpu_tok_s for o in points)
    plot = plots.serve_tradeoff(table, plots.colors(table))
    check_layout(plot.figure, expect_labels=12)


def test_goodput_plot_has_the_offered_rate_line(tmp_path):
    root = _folder(tmp_path, sweep())
    table = build_report(root, slo=SLO).table
    plot = plots.serve_goodput(table, plots.colors(table))
    [ax] = [ax for ax in plot.figure.axes if ax.get_visible()]
    [ideal] = [ln for ln in ax.lines if ln.get_label() == "offered rate (y = x)"]
    assert list(ideal.get_xdata()) == pytest.approx(list(ideal.get_ydata()))
    [awq] = [ln for ln in ax.lines if ln.get_label() == "awq"]
    assert awq.get_ydata()[-1] == pytest.approx(5 / 3.03, rel=1e-4)
    assert plots.serve_goodput(build_report(root).table, plots.colors(table)) is None
    check_layout(plot.figure, expect_labels=0)


def test_a_run_cut_after_its_load_points_shows_its_capacity_but_is_not_ranked(tmp_path):
    """As gptq on the H100: every load point measured, then the run was cut during the census."""
    recs = [serve_record("fp16", 0), serve_record("hqq", 1, status="incomplete",
                                                  reason="run stopped by a signal (Ctrl-C or SIGTERM) before it finished")]
    report = build_report(_folder(tmp_path, recs), slo=SLO)
    [group] = report.capacity.groups
    rows = {r.backend: r for r in group.rows}
    assert rows["fp16"].kind == "ranked" and rows["hqq"].kind == "unknown"
    assert rows["hqq"].text == "not ranked: the run then ended: incomplete"
    assert rows["hqq"].notes[0].startswith("capacity ≥ 4 req/s")
    assert group.answer.startswith("fp16: the highest capacity")
