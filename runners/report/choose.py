"""Which backend, for this model × workload × batch size, under my constraints.

    python -m runners.report DIR --require "peak_vram<=24GiB,kl_mean<=0.05,ttft_p90<=500ms" \\
        --maximize output_tokens_per_s

(or `report.require=...` / `report.maximize=...` / `report.minimize=...` in the sweep's config).

**Constraints** (`--require`): `METRIC OP NUMBER[UNIT]`, separated by commas.
- METRIC: any declared metric key (`kl_mean_nats`), or the key without its unit (`kl_mean`,
  `peak_vram`, `ttft`). A metric measured over repeats takes a statistic before its unit:
  `ttft_p90`, `ttft_p90_ms`, `output_tokens_p10_per_s`, `tpot_max`, `e2e_cv` — statistics `median`
  (the default), `mean`, `min`, `max`, `p1`, `p10`, `p50`, `p90`, `p99` (from the stored samples) and
  `cv` (coefficient of variation, %).
- OP: `<=`, `<`, `>=`, `>`.
- UNIT (optional; default: the metric's own unit): time `ns us ms s min`; memory `B KB MB GB TB KiB
  MiB GiB TiB` (KB/MB/GB are 10^3/10^6/10^9 bytes); rates `/s tok/s tokens/s ex/s req/s`;
  bandwidth `MB/s GB/s TB/s`; energy `mJ J kJ`; `%`; `nats`. A unit of another dimension is an error.

**Objective** (`--maximize` / `--minimize`, a metric as above): what ranks the backends that meet
every constraint. Default: the first higher-is-better speed metric the block measured
(`output_tokens_per_s` for generate, `examples_per_s` for classify).

**Verdicts**, per backend of each block: *meets* every constraint; *rejected*, naming each constraint
it failed with its value; *unknown*, naming each constraint whose metric this backend did not measure
and why (e.g. quality with synthetic weights) — never a silent pass or fail; or the run's failure
status. A pass or fail whose threshold lies inside the metric's min–max range over the repeats is
marked *marginal*. A constraint on a metric that does not apply to a block's workload (TTFT for a
classifier) is noted and ignored there.

**Ties, spread-aware**: the leader is the best objective value; every other backend whose difference
from the leader is not significant (its 95% bootstrap interval includes zero, or too few repeats to
tell: the `n.s.` rule of runners.report.spread) ties with it, and the answer says so instead of
naming a winner.

**Pareto front** over speed / memory / quality, among the backends that meet every constraint (with
no constraints: every backend that ran): speed is the objective when it is a speed metric, else the
default above; memory the first of `peak_vram_mib`, `peak_rss_mib` (CPU runs only), `weights_mib`;
quality the first of `kl_mean_nats`, `macro_f1_pct`, `accuracy_pct`, `top1_agreement_pct`,
`perplexity` — each the first that every candidate measured, so no backend is compared on a number
the others lack (an axis without one is dropped, and the note says who lacks what). A backend is
dominated when another is at least as good on every axis — a difference inside the spread counts as
equal — and better beyond the spread on at least one.

**Serve runs** answer one question more, which load each backend carries under a serving SLO
(`--slo` / `report.slo`): their capacity, in runners.report.capacity; the record-level terms of
`--require` (quality, e.g. `kl_mean<=0.05`) are its floors.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from backends.contract import Catalogue
from runners.measure.breakdown import why_slower
from runners.report.metrics import UNIT_WORDS, Metric, Unit, catalogue, format_number, format_value, unit_of
from runners.report.spread import Spread, within_spread
from runners.report.table import Block, Cell, Table

STATS = ("median", "mean", "min", "max", "p1", "p10", "p50", "p90", "p99", "cv")
OPS = {"<=": lambda v, t: v <= t, "<": lambda v, t: v < t, ">=": lambda v, t: v >= t, ">": lambda v, t: v > t}
MEMORY_AXIS = ("peak_vram_mib", "peak_rss_mib", "weights_mib")
HOST_MEMORY = "peak_rss_mib"  # the memory of a CPU run; on a GPU it is not what runs out
QUALITY_AXIS = ("kl_mean_nats", "macro_f1_pct", "accuracy_pct", "top1_agreement_pct", "perplexity")
_PERCENT = unit_of("x_pct")
_CONSTRAINT = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*(<=|>=|<|>)\s*"
                         r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([^\s\d].*?)?\s*$")


class ConstraintError(ValueError):
    """A --require / --maximize string that cannot be read; the message is one line."""


def valid_names_line(cat: Catalogue | None = None) -> str:
    names = ", ".join(m.name for m in (cat or catalogue()))
    units = "; ".join(f"{dim} {' '.join(ws)}" for dim, ws in _units_by_dimension().items())
    return (f"valid metrics: {names} (or their full keys, e.g. kl_mean_nats; a repeated metric takes "
            f"_{'/_'.join(STATS)} before its unit, e.g. ttft_p90); units: {units}")


def _units_by_dimension() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for word, (dim, _) in UNIT_WORDS.items():
        out.setdefault(dim, []).append(word)
    return out


# -- what a constraint or objective names --------------------------------------------------------
@dataclass(frozen=True)
class Target:
    metric: Metric
    stat: str  # "median" or another of STATS
    text: str  # as written

    @property
    def unit(self) -> Unit:
        return _PERCENT if self.stat == "cv" else self.metric.unit

    @property
    def label(self) -> str:
        return self.metric.label if self.stat == "median" else f"{self.metric.label} ({self.stat})"

    def value(self, cell: Cell) -> tuple[float | None, Spread | None]:
        got = cell.values.get(self.metric.key)
        if got is None:
            return None, None
        if self.stat == "median":
            return got.value, got.spread
        return (got.spread.stat(self.stat) if got.spread else None), None

    def fmt(self, value: float) -> str:
        text = format_number(value, 3) if self.stat == "cv" else format_value(self.metric, value)
        symbol = self.unit.symbol
        if symbol in ("", "/s"):  # a rate's label says what per second
            return text
        return text + symbol if symbol == "%" else f"{text} {symbol}"


def resolve(name: str, context: str, cat: Catalogue | None = None) -> Target:
    """A metric name as a user writes it -> Target; ConstraintError (one line) otherwise. `cat`: the
    metrics to choose from (default: those quantbench ships)."""
    n = name.strip().lower()
    cat = cat or catalogue()
    for m in cat:
        if n in (m.key, m.name):
            return Target(m, "median", name.strip())
    for m in cat:
        for q in STATS:
            forms = {f"{m.name}_{q}", f"{m.name}_{q}{m.unit.suffix}"} | ({f"{m.name}_cv_pct"} if q == "cv" else set())
            if n in forms:
                if m.source != "repeats":
                    raise ConstraintError(f"{context}: {name.strip()!r}: {m.key} is measured once, not over repeats, "
                                          f"so it has no {q}; use {m.name}")
                return Target(m, q, name.strip())
    raise ConstraintError(f"{context}: unknown metric {name.strip()!r}; {valid_names_line(cat)}")


@dataclass(frozen=True)
class Constraint:
    target: Target
    op: str
    threshold: float  # in the target's unit
    text: str  # as written, e.g. "peak_vram<=24GiB"

    def holds(self, value: float) -> bool:
        return OPS[self.op](value, self.threshold)

    @property
    def explained(self) -> str:
        return f"{self.text} ({self.target.label} {self.op} {self.target.fmt(self.threshold)})"


def _convert(number: float, unit_word: str | None, target: Target, text: str) -> float:
    if not unit_word:
        return number
    got = {w.lower(): v for w, v in UNIT_WORDS.items()}.get(unit_word.strip().lower())
    want = target.unit
    if got is None:
        raise ConstraintError(f"--require: {text!r}: unknown unit {unit_word!r}; {valid_names_line()}")
    dim, scale = got
    if dim != want.dimension:
        mine = " ".join(w for w, (d, _) in UNIT_WORDS.items() if d == want.dimension) or "no unit"
        raise ConstraintError(f"--require: {text!r}: {unit_word} is a {dim} unit but {target.text} is measured in "
                              f"{want.symbol or 'no unit'} ({want.dimension}); use one of: {mine}")
    return number * scale / want.scale


def parse_constraints(text: str | None) -> list[Constraint]:
    """'peak_vram<=24GiB, kl_mean<=0.05' -> constraints; ConstraintError names valid metrics and units."""
    out = []
    for part in [p.strip() for p in (text or "").split(",")]:
        if not part:
            continue
        m = _CONSTRAINT.match(part)
        if not m:
            raise ConstraintError(f"--require: {part!r} is not METRIC OP NUMBER[UNIT] (OP one of <= < >= >), e.g. "
                                  f"ttft_p90<=500ms; {valid_names_line()}")
        name, op, number, unit_word = m.groups()
        target = resolve(name, "--require")
        out.append(Constraint(target, op, _convert(float(number), unit_word, target, part), part))
    return out


@dataclass(frozen=True)
class Objective:
    target: Target
    maximize: bool

    @property
    def text(self) -> str:
        return f"{'maximize' if self.maximize else 'minimize'} {self.target.label}"


def parse_objective(maximize: str | None, minimize: str | None) -> Objective | None:
    if maximize and minimize:
        raise ConstraintError("give --maximize or --minimize, not both")
    name = maximize or minimize
    if not name:
        return None
    target = resolve(name, "--maximize" if maximize else "--minimize")
    wrong = "lower" if maximize else "higher"
    if target.metric.better == wrong and target.stat != "cv":
        flag = "--minimize" if maximize else "--maximize"
        raise ConstraintError(f"{'--maximize' if maximize else '--minimize'} {name}: {wrong} is better for "
                              f"{target.metric.label}; use {flag} {name}")
    return Objective(target, bool(maximize))


# -- verdicts -------------------------------------------------------------------------------------
@dataclass
class Verdict:
    column: str
    cell: Cell
    kind: str  # meets | rejected | unknown | failed
    checks: dict[str, str] = field(default_factory=dict)  # constraint text -> "612 ms ✗"
    failed: list[str] = field(default_factory=list)
    unmeasured: list[str] = field(default_factory=list)
    marginal: list[str] = field(default_factory=list)
    objective: float | None = None
    objective_spread: Spread | None = None

    @property
    def why(self) -> str:
        if self.kind == "failed":
            return self.cell.status_text(200)
        parts = []
        if self.failed:
            parts.append("failed " + "; ".join(self.failed))
        if self.unmeasured:
            parts.append("not measured: " + "; ".join(self.unmeasured))
        return "; ".join(parts)


@dataclass
class BlockDecision:
    block: Block
    objective: Objective | None
    verdicts: list[Verdict]
    ranked: list[Verdict]  # meets, best first
    answer: str
    tie: list[str]
    pareto: list[str]
    pareto_axes: list[Target]
    notes: list[str]

    def rejected(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.kind in ("rejected", "failed")]

    def unknown(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.kind == "unknown"]


@dataclass
class Decision:
    constraints: list[Constraint]
    objective: Objective | None
    blocks: list[BlockDecision]

    @property
    def heading(self) -> str:
        req = ", ".join(c.explained for c in self.constraints) or "none"
        obj = self.objective.text if self.objective else "the first higher-is-better speed metric of each block"
        return f"Constraints: {req}. Ranked by: {obj}."


def _applies(block: Block, m: Metric) -> bool:
    return any(m.key in c.values or m.key in c.absent for c in block.cells)


def _marginal(c: Constraint, spread: Spread | None) -> bool:
    return bool(spread and c.target.stat == "median" and spread.n >= 2 and spread.min <= c.threshold <= spread.max)


def _verdict(column: str, cell: Cell, constraints: list[Constraint], objective: Objective | None) -> Verdict:
    if not cell.ok:
        return Verdict(column, cell, "failed")
    v = Verdict(column, cell, "meets")
    for c in constraints:
        value, spread = c.target.value(cell)
        if value is None:
            why = cell.absent.get(c.target.metric.key) or f"no {c.target.stat} over repeats recorded"
            v.unmeasured.append(f"{c.target.text} ({why})")
            v.checks[c.text] = f"n/a ({why})"
            continue
        ok = c.holds(value)
        mark = "✓" if ok else "✗"
        if _marginal(c, spread):
            v.marginal.append(c.text)
            mark += " marginal"
        v.checks[c.text] = f"{c.target.fmt(value)} {mark}"
        if not ok:
            v.failed.append(f"{c.target.text} = {c.target.fmt(value)}, needs {c.op} {c.target.fmt(c.threshold)}")
    v.kind = "rejected" if v.failed else "unknown" if v.unmeasured else "meets"
    if objective is not None:
        v.objective, v.objective_spread = objective.target.value(cell)
    return v


def _default_objective(block: Block) -> Objective | None:
    for m in block.catalogue:
        if m.group == "speed" and m.better == "higher" and any(m.key in c.values for c in block.cells):
            return Objective(Target(m, "median", m.key), True)
    return None


def _better(a: float, b: float, maximize: bool) -> bool:
    return a > b if maximize else a < b


def _rank(verdicts: list[Verdict], objective: Objective | None) -> tuple[list[Verdict], list[str], str]:
    meets = [v for v in verdicts if v.kind == "meets"]
    if not meets:
        return [], [], "no backend meets every constraint"
    if objective is None:
        return meets, [], "no speed metric to rank by"
    have = [v for v in meets if v.objective is not None]
    sign = -1 if objective.maximize else 1
    ranked = sorted(have, key=lambda v: sign * v.objective) + [v for v in meets if v.objective is None]
    if not have:
        return ranked, [], f"{objective.target.label} was not measured for any backend that meets the constraints"
    lead = ranked[0]
    label, fmt = objective.target.label, objective.target.fmt
    tie = [lead] + [v for v in ranked[1:] if v.objective is not None and _tied(lead, v)]
    if len(tie) > 1:
        ranges = "; ".join(_range_text(v, objective) for v in tie)
        return ranked, [v.column for v in tie], (
            f"tie between {', '.join(v.column for v in tie)}: their {label} differ by no more than the repeats can "
            f"tell (95% interval of the difference includes zero, or too few repeats; {ranges}), so "
            "the difference is inside the measurement spread")
    n = len(meets)
    best = f"{label} {fmt(lead.objective)}"
    if n == 1:
        return ranked, [], f"{lead.column}: the only backend that meets every constraint ({best})"
    return ranked, [], f"{lead.column}: best {label} ({fmt(lead.objective)}) of the {n} backends that meet every " \
                       "constraint"


def _tied(a: Verdict, b: Verdict) -> bool:
    if a.objective_spread is not None and b.objective_spread is not None:
        return bool(within_spread(a.objective_spread, b.objective_spread))
    return a.objective == b.objective


def _range_text(v: Verdict, objective: Objective) -> str:
    sp, fmt = v.objective_spread, objective.target.fmt
    return f"{v.column} {fmt(sp.min)}–{fmt(sp.max)}" if sp else f"{v.column} {fmt(v.objective)}"


def _pareto(block: Block, verdicts: list[Verdict], objective: Objective | None) -> tuple[list[str], list[Target],
                                                                                          list[str]]:
    pool = [v for v in verdicts if v.kind == "meets"]
    notes: list[str] = []
    if len(pool) < 1:
        return [], [], notes
    speed = objective if objective and objective.target.metric.group == "speed" else _default_objective(block)
    axes: list[Target] = [speed.target] if speed else []
    memory = [k for k in MEMORY_AXIS if block.device == "cpu" or k != HOST_MEMORY]
    for name, keys in (("memory", memory), ("quality", QUALITY_AXIS)):
        # An axis every candidate measured, so that no backend is compared on a number others lack.
        key = next((k for k in keys if all(k in v.cell.values for v in pool)), None)
        if key is not None:
            axes.append(Target(block.catalogue[key], "median", key))
            continue
        some = next((k for k in keys if any(k in v.cell.values for v in pool)), None)
        if some is None:
            reasons = sorted({v.cell.absent[k] for v in pool for k in keys if k in v.cell.absent})
            notes.append(f"No {name} axis: {name} not measured{' (' + '; '.join(reasons) + ')' if reasons else ''}")
        else:
            lack = [f"{v.column} ({v.cell.absent.get(some, 'not measured')})" for v in pool
                    if some not in v.cell.values]
            notes.append(f"No {name} axis: {block.catalogue[some].label} is not measured for {'; '.join(lack)}")
    front = [v.column for v in pool if not any(_dominates(o, v, axes) for o in pool if o is not v)]
    return front, axes, notes


def _axis_cmp(t: Target, a: Cell, b: Cell) -> int:
    """+1 when a is better than b beyond the spread, -1 when worse, 0 when equal or inside the spread."""
    (va, sa), (vb, sb) = t.value(a), t.value(b)
    if within_spread(sa, sb):
        return 0
    if va == vb:
        return 0
    return 1 if _better(va, vb, t.metric.better == "higher") else -1


def _dominates(a: Verdict, b: Verdict, axes: list[Target]) -> bool:
    signs = [_axis_cmp(t, a.cell, b.cell) for t in axes if t.metric.better != "none"]
    return bool(signs) and all(s >= 0 for s in signs) and any(s > 0 for s in signs)


def decide_block(block: Block, constraints: list[Constraint], objective: Objective | None) -> BlockDecision:
    notes = [f"{c.text}: {c.target.metric.label} does not apply to {block.workload}; ignored here"
             for c in constraints if not _applies(block, c.target.metric)]
    mine = [c for c in constraints if _applies(block, c.target.metric)]
    obj = objective
    if obj is not None and not _applies(block, obj.target.metric):
        obj = _default_objective(block)
        notes.append(f"{objective.target.text} does not apply to {block.workload}; ranked by "
                     f"{obj.target.label if obj else 'nothing'} here")
    obj = obj or _default_objective(block)
    verdicts = [_verdict(col, cell, mine, obj) for col, cell in zip(block.columns, block.cells)]
    ranked, tie, answer = _rank(verdicts, obj)
    front, axes, pnotes = _pareto(block, verdicts, obj)
    return BlockDecision(block, obj, verdicts, ranked, answer, tie, front, axes, notes + pnotes)


def decide(table: Table, constraints: list[Constraint], objective: Objective | None) -> Decision:
    return Decision(constraints, objective, [decide_block(b, constraints, objective) for b in table.blocks])


def verdict_text(d: BlockDecision, v: Verdict) -> str:
    if v.kind == "meets":
        rank = d.ranked.index(v) + 1 if v in d.ranked else None
        text = "meets all" + (f", #{rank}" if rank else "")
        if v.column in d.tie:
            text += ", tie"
    elif v.kind == "failed":
        text = v.why
    else:
        text = f"{v.kind}: {v.why}"
    if v.column in d.pareto:
        text += ", Pareto front"
    if v.cell.run_note:
        text += f" ({v.cell.run_note})"
    return text


def markdown(decision: Decision) -> str:
    """The answer as a markdown section (the CLI prints it; table.md opens with it)."""
    out = ["## Which backend", "", decision.heading, ""]
    for d in decision.blocks:
        out += [f"### {d.block.title}", "", f"**Answer:** {d.answer}.", ""]
        head = ["backend", "verdict"] + ([d.objective.target.label] if d.objective else []) + \
            [c.text for c in decision.constraints if c.text in _checked(d)]
        out.append("| " + " | ".join(_md(h) for h in head) + " |")
        out.append("|" + "---|" * len(head))
        order = d.ranked + [v for v in d.verdicts if v not in d.ranked]
        for v in order:
            row = [v.column, verdict_text(d, v)]
            if d.objective:
                row.append(d.objective.target.fmt(v.objective) if v.objective is not None else "—")
            row += [v.checks.get(c.text, "—") for c in decision.constraints if c.text in _checked(d)]
            out.append("| " + " | ".join(_md(x) for x in row) + " |")
        out.append("")
        if d.pareto_axes:
            out.append(f"{pareto_text(d)}.  ")
        out += [f"{n}.  " for n in d.notes]
        out.append("")
    return "\n".join(out) + "\n"


def pareto_text(d: BlockDecision) -> str:
    return pareto_text_of(d.pareto, d.pareto_axes)


def _checked(d: BlockDecision) -> set[str]:
    return {t for v in d.verdicts for t in v.checks}


def _md(text: str) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


# -- the answer without constraints ------------------------------------------------------------------
# KL (nats) at or under which a backend "keeps" the reference's quality in the overview's words. A
# reading aid only: the numbers beside it are what a user judges by. (0.05 nats is where greedy
# generations of the SmolLM2 rows start to differ from the reference's in quantbench's own results.)
KEEPS_QUALITY_NATS = 0.05
SPEED_KEYS = ("output_tokens_per_s", "examples_per_s")
QUALITY_KEY, AGREEMENT_KEY = "kl_mean_nats", "top1_agreement_pct"


@dataclass
class Overview:
    """What a block answers with no constraint given: its Pareto front, and a line per backend saying how
    it compares with the baseline on speed, memory and quality, from the measured rows and their intervals."""

    block: Block
    pareto: list[str]
    pareto_axes: list[Target]
    lines: list[str]
    notes: list[str]

    @property
    def answer(self) -> str:
        front = f"Pareto front: {', '.join(self.pareto)}" if self.pareto else "no Pareto front"
        return f"{front}. " + "; ".join(self.lines) if self.lines else front


def _ratio_text(ratio: float) -> str:
    return f"{ratio:.2g}x" if ratio < 10 else f"{ratio:.0f}x"


def _speed_phrase(block: Block, cell: Cell, base: Cell) -> str | None:
    key = next((k for k in SPEED_KEYS if k in cell.values and k in base.values), None)
    if key is None:
        return None
    a, b = cell.values[key].value, base.values[key].value
    cmp = block.compare(cell, key)
    ratio = f"{_ratio_text(a / b)} faster than" if a >= b else f"{_ratio_text(b / a)} slower than"
    if cmp is not None and cmp.within_spread:
        if cmp.reason:  # too few repeats to judge: say the measured ratio, and that it is not a verdict
            return f"{ratio} {base.backend} by its medians ({cmp.reason}: not significant)"
        return f"as fast as {base.backend} (the 95% interval of the difference includes no change)"
    return f"{ratio} {base.backend}"


def _memory_phrase(block: Block, cell: Cell, base: Cell) -> str | None:
    keys = ("peak_vram_mib", "weights_mib") if block.device == "cuda" else ("peak_rss_mib", "weights_mib")
    key = next((k for k in keys if k in cell.values and k in base.values), None)
    if key is None:
        return None
    ratio = cell.values[key].value / base.values[key].value
    if 0.95 <= ratio <= 1.05:
        return None  # within 5%: not worth a word beside speed and quality
    label = {"peak_vram_mib": "peak VRAM", "weights_mib": "weight memory", "peak_rss_mib": "peak host memory"}[key]
    return f"{ratio:.2g}x the {label}"


def _quality_phrase(cell: Cell) -> tuple[str | None, bool | None]:
    """(phrase, keeps) from the cell's KL and top-1 agreement against the quality reference."""
    kl = cell.value(QUALITY_KEY)
    agree = cell.value(AGREEMENT_KEY)
    if kl is None:
        return None, None
    ref = cell.record.quality.reference or "the reference"
    keeps = kl <= KEEPS_QUALITY_NATS
    if keeps:
        return f"keeps {ref}'s quality within {format_number(kl, 2)} nats (KL)", True
    lost = f"loses {format_number(100 - agree, 2)}% top-1 agreement " if agree is not None else "loses quality "
    return f"{lost}(KL {format_number(kl, 2)} nats vs {ref})", False


def cell_metrics(cell: Cell) -> dict[str, float]:
    return {k: v.value for k, v in cell.values.items()}


def overview_block(block: Block) -> Overview:
    """The default answer of one block (no constraint): the unconstrained Pareto front and one line per
    backend against the block's baseline."""
    d = decide_block(block, [], None)
    base = block.baseline
    lines: list[str] = []
    notes = list(d.notes)
    if base is None:
        notes.append(block.baseline_note or "no baseline in this block: no comparison")
    for col, cell in zip(block.columns, block.cells):
        if not cell.ok:
            lines.append(f"{col}: {cell.status_text(120)}")
            continue
        quality, keeps = _quality_phrase(cell)
        if cell is base:
            if quality and cell.value(QUALITY_KEY) not in (None, 0.0):
                lines.append(f"{col} (the baseline) {quality}")
            continue
        if base is None:
            continue
        speed, memory = _speed_phrase(block, cell, base), _memory_phrase(block, cell, base)
        if speed and "slower" in speed and (why := why_slower(cell_metrics(cell))):
            speed += f" (where its time goes: {why})"
        parts = [p for p in (speed, memory) if p]
        if quality:
            joiner = " but " if (keeps is False and speed and "faster" in speed) or \
                                (keeps and speed and "slower" in speed) else " and "
            text = f"{col} is {', '.join(parts)}{joiner}{quality}" if parts else f"{col} {quality}"
        elif parts:
            text = f"{col} is {', '.join(parts)}"
        else:
            continue
        lines.append(text)
    if all(c.value(QUALITY_KEY) is None for c in block.cells if c.ok) and not any("quality" in n for n in notes):
        why = next((c.absent.get(QUALITY_KEY) for c in block.cells if QUALITY_KEY in c.absent), None)
        if why:
            notes.append(f"quality not measured ({why}): speed and memory only")
    return Overview(block, d.pareto, d.pareto_axes, lines, notes)


def overview(table: Table) -> list[Overview]:
    return [overview_block(b) for b in table.blocks if b.cells]


def overview_markdown(items: list[Overview]) -> str:
    """The answer table.md opens with when no constraint was given."""
    out = ["## Answer", "", "No constraints given: per block, the backends no other beats on every axis (the "
           "Pareto front) and how each compares with the baseline. Add `--require` / `report.require` to ask "
           "which backend meets your limits.", ""]
    for o in items:
        out += [f"### {o.block.title}", ""]
        if o.pareto_axes:
            out.append(f"**{pareto_text_of(o.pareto, o.pareto_axes)}.**  ")
        out += [f"- {_md(line)}" for line in o.lines]
        out += [f"_{_md(n)}._  " for n in o.notes]
        out.append("")
    return "\n".join(out) + "\n"


def pareto_text_of(front: list[str], axes: list[Target]) -> str:
    names = ", ".join(f"{t.metric.label} {'↑' if t.metric.better == 'higher' else '↓'}" for t in axes)
    return f"Pareto front ({names}): {', '.join(front) or 'none'}"
