"""Rewrite tests/durations.json (the order parallel workers take the long tests in) from a JUnit XML:

    python -m pytest -q -n 2 --dist loadgroup --junitxml=/tmp/junit.xml
    python tests/durations.py /tmp/junit.xml

Only the order matters (longest first): stale numbers never change what a test checks.
"""
from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

OUT = Path(__file__).with_name("durations.json")
AT_LEAST_S = 4.0


def durations(junit: Path) -> dict[str, int]:
    found: dict[str, float] = {}
    for case in ET.parse(junit).iter("testcase"):
        nodeid = case.get("classname").replace(".", "/") + ".py::" + case.get("name").split("@")[0]
        found[nodeid] = found.get(nodeid, 0.0) + float(case.get("time") or 0.0)
    return {k: round(v) for k, v in sorted(found.items(), key=lambda kv: -kv[1]) if v >= AT_LEAST_S}


if __name__ == "__main__":
    OUT.write_text(json.dumps(durations(Path(sys.argv[1])), indent=1) + "\n")
    print(f"wrote {OUT}")
