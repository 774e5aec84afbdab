"""Decisions several stages need, kept apart from the stages that act on them (no imports of ours).

- Does decoder quality apply to a run? The planner plans a reference for it, the launcher computes that
  reference's outputs, the quality stage compares with them: one answer for all three.
- Which backend is the reference? `quality.reference=auto` means fp32 on a CPU and fp16 on a GPU.
- Which engine calls does quality make? A run's engine must implement them as well as the workload's.
"""
from __future__ import annotations

CAUSAL_LM = "causal_lm"
CLASSIFIER = "sequence_classification"


def decoder_quality_applies(enabled: bool, weights: str, task: str) -> bool:
    """Decoder quality against a reference: quality on, real weights, a causal LM."""
    return enabled and weights != "synthetic" and task == CAUSAL_LM


def reference_name(requested: str, device: str) -> str:
    """The reference backend's name for `quality.reference` on a resolved device."""
    return ("fp16" if device == "cuda" else "fp32") if requested == "auto" else requested


def quality_calls(enabled: bool, weights: str, task: str) -> frozenset[str]:
    """The engine calls quality makes: decoders score text and generate greedily; classifiers classify."""
    if not enabled or weights == "synthetic":
        return frozenset()
    return frozenset({"score", "generate"}) if task == CAUSAL_LM else frozenset({"classify"})
