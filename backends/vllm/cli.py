"""`vllm.LLM` keyword arguments -> `vllm bench throughput` engine flags (scripts/vllm_fidelity.py).

Both name the same `EngineArgs` fields (vllm/engine/arg_utils.py), so one mapping keeps vLLM's own
benchmark on exactly the engine settings quantbench ran.
"""
from __future__ import annotations

import json
from typing import Any

# EngineArgs fields declared with action="store_true" (no --no- form).
STORE_TRUE_FLAGS = frozenset({"disable_log_stats"})


def kwargs_to_cli(kwargs: dict[str, Any]) -> list[str]:
    """`vllm.LLM` kwargs -> `vllm bench throughput` engine flags (same EngineArgs names)."""
    args: list[str] = []
    for key, value in kwargs.items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            if key in STORE_TRUE_FLAGS:
                args += [flag] if value else []
            else:  # EngineArgs makes every bool field a BooleanOptionalAction: --x / --no-x
                args.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, (dict, list)):
            args += [flag, json.dumps(value)]
        else:
            args += [flag, str(value)]
    return args
