"""Quality beside speed (placeholder until the quality metrics land)."""
from __future__ import annotations


def measure_quality(engine, run, device) -> dict:
    if not run.quality.enabled:
        return {"absent": "quality.enabled=false"}
    if run.weights == "synthetic":
        return {"absent": "synthetic weights"}
    return {"absent": "quality metrics not implemented yet"}
