"""Where a session's nodes ran, read from an ORT profile: the proof that a "CUDA" row ran on CUDA."""
from __future__ import annotations

from collections import Counter
from typing import Any

# Dtypes of shape / index / mask bookkeeping: nodes that touch only these are cheap wherever they run
# (ORT keeps shape subgraphs on CPU on purpose); a node touching anything else does real work.
INDEX_DTYPES = {"int64", "int32", "bool"}


def _touches_data(args: dict) -> bool:
    tensors = [t for key in ("input_type_shape", "output_type_shape") for t in args.get(key) or []]
    if not tensors:
        return True  # no type information: count it as real work rather than hide it
    return any(dtype not in INDEX_DTYPES for t in tensors for dtype in t)


def node_placement(profile: list[dict]) -> dict[str, Any]:
    """Which provider ran each graph node, from an ORT profile (`enable_profiling` JSON events).

    Counts distinct nodes (after ORT's own graph optimizations), not kernel launches, so several
    profiled runs give the same numbers. `data_node_placement` counts only nodes that read or write
    float or quantized tensors: a CPU fallback there costs copies and time, unlike shape arithmetic.
    """
    placed: dict[str, tuple[str, str, bool]] = {}
    for ev in profile:
        args = ev.get("args") or {}
        if ev.get("cat") != "Node" or "provider" not in args:
            continue
        name = ev.get("name", "")
        for suffix in ("_kernel_time", "_fence_before", "_fence_after"):
            name = name.removesuffix(suffix)
        placed[name] = (args["provider"], args.get("op_name", "?"), _touches_data(args))
    counts = Counter(p for p, _, _ in placed.values())
    data = Counter(p for p, _, d in placed.values() if d)
    ops: dict[str, Counter] = {}
    for provider, op, _ in placed.values():
        ops.setdefault(provider, Counter())[op] += 1
    return {
        "node_placement": dict(counts.most_common()),
        "data_node_placement": {p: data.get(p, 0) for p in counts},
        "nodes_total": len(placed),
        "ops_by_provider": {p: dict(c.most_common()) for p, c in ops.items()},
    }


def placement_text(placement: dict[str, int], total: int, data: dict[str, int] | None = None) -> str:
    """`CUDA 412/430 nodes, CPU 18/430 nodes (2 on float/quantized tensors)`: what a table cell shows."""
    if not total:
        return "no nodes profiled"
    parts = []
    for i, (provider, n) in enumerate(sorted(placement.items(), key=lambda kv: -kv[1])):
        text = f"{provider.removesuffix('ExecutionProvider')} {n}/{total} nodes"
        if i and data is not None:  # the minority providers: is it bookkeeping or real work?
            text += f" ({data.get(provider, 0)} on float/quantized tensors)"
        parts.append(text)
    return ", ".join(parts)


def session_ops(ops_by_provider: dict[str, dict[str, int]], op_types: set[str]) -> dict[str, int]:
    """How many nodes of `op_types` the session ran, over all providers: after ORT's own fusions
    (on CPU most MatMulInteger + scale pairs become MatMulIntegerToFloat), unlike the saved graph."""
    out: Counter = Counter()
    for ops in ops_by_provider.values():
        out.update({op: n for op, n in ops.items() if op in op_types})
    return dict(out.most_common())
