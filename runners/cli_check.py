"""Command-line overrides checked before Hydra composes anything.

Hydra's own answer to a typo is a multi-line "Key 'x' is not in struct" that names no valid choice,
and it also rejects real options a given YAML happens not to spell out (`model.path=...` on a model
whose YAML has no `path`). This pass gives one line naming the valid choices for a misspelt group
option or key, and turns an override of a real field that the selected YAML leaves at its default
into Hydra's add-or-override form (`++key=value`), so the typed config check sees it.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("backend", "model", "workload")
# Sections whose keys are typed dataclass fields; `backend.options` depends on the engine.
_SECTION_TYPES = {"model": "ModelSpec", "workload": "WorkloadSpec", "quality": "QualitySpec", "report": "ReportSpec"}
_OVERRIDE = re.compile(r"^(?P<key>[A-Za-z_][\w.]*)=(?P<value>.*)$", re.S)


class CliError(ValueError):
    pass


def _search_dirs(args: list[str]) -> list[Path]:
    dirs = [CONF]
    for a in args:
        if a.startswith("hydra.searchpath="):
            dirs += [Path(p.strip().removeprefix("file://")) for p in a.split("=", 1)[1].strip("[]").split(",")
                     if p.strip().startswith("file://")]
    return dirs


def _choices(group: str, dirs: list[Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in reversed(dirs):  # earlier search-path entries win, as in Hydra
        for f in sorted((d / group).glob("*.yaml")):
            found[f.stem] = f
    return found


def _defaults() -> dict[str, str]:
    cfg = yaml.safe_load((CONF / "config.yaml").read_text())
    out = {}
    for item in cfg.get("defaults", []):
        if isinstance(item, dict):
            out.update({k: str(v) for k, v in item.items() if k in GROUPS})
    return out


def _top_keys() -> set[str]:
    return set(yaml.safe_load((CONF / "config.yaml").read_text())) - {"defaults", "hydra"}


def _values(raw: str) -> list[str] | None:
    """A plain value or a comma sweep list; None for Hydra sweep functions we leave to Hydra."""
    if "(" in raw or raw.startswith("["):
        return None
    return [v.strip() for v in raw.split(",") if v.strip()]


def _load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    defaults = data.pop("defaults", None) or []
    for item in defaults:  # an alias YAML (qwen32b) takes its fields from the one it names
        if isinstance(item, str) and item != "_self_":
            base = path.parent / f"{item.split('/')[-1]}.yaml"
            if base.exists():
                data = {**_load_yaml(base), **data}
    return data


def _fields(section: str, selected: list[Path]) -> tuple[set[str], list[dict]]:
    """Valid keys of a section and the YAML mappings that set it (one per selected group option)."""
    import runners.config as config

    if section == "backend.options":
        from backends import engine_class

        yamls = [_load_yaml(p) for p in selected]
        names: set[str] = set()
        for y in yamls:
            names |= {f.name for f in dataclasses.fields(engine_class(y["engine"]).Options)}
        return names, [y.get("options") or {} for y in yamls]
    if section == "backend":
        return {"engine", "options", "description"}, [_load_yaml(p) for p in selected]
    cls = getattr(config, _SECTION_TYPES[section])
    names = {f.name for f in dataclasses.fields(cls)}
    if section in GROUPS:
        return names, [_load_yaml(p) for p in selected]
    top = yaml.safe_load((CONF / "config.yaml").read_text())
    return names, [top.get(section) or {}]


def check(args: list[str]) -> list[str]:
    """Validate and normalise overrides; raises CliError with one line."""
    dirs = _search_dirs(args)
    selected = dict(_defaults())
    picked: dict[str, list[str]] = {}
    for a in args:
        m = _OVERRIDE.match(a)
        if m and m["key"] in GROUPS:
            names = _values(m["value"])
            if names is None:
                continue
            valid = _choices(m["key"], dirs)
            bad = [n for n in names if n not in valid]
            if bad:
                raise CliError(f"unknown {m['key']} {', '.join(map(repr, bad))}; valid {m['key']}s: "
                               f"{', '.join(sorted(valid))}")
            picked[m["key"]] = names
    groups = {g: [_choices(g, dirs)[n] for n in picked.get(g, [selected.get(g)]) if n] for g in GROUPS}
    top = _top_keys()
    out = []
    for a in args:
        m = _OVERRIDE.match(a)
        if not m or m["key"] in GROUPS or m["key"].startswith("hydra") or "." not in m["key"] and m["key"] in top:
            out.append(a)
            continue
        parts = m["key"].split(".")
        if parts[0] not in top | set(GROUPS):
            raise CliError(f"unknown key {m['key']!r}; valid top-level keys: {', '.join(sorted(top | set(GROUPS)))}")
        section = "backend.options" if parts[:2] == ["backend", "options"] and len(parts) > 2 else parts[0]
        key = parts[2] if section == "backend.options" else parts[1] if len(parts) > 1 else None
        if key is None or section not in ("backend", "backend.options", *_SECTION_TYPES):
            out.append(a)
            continue
        selected_files = groups.get(section.split(".")[0], [])
        names, yamls = _fields(section, selected_files)
        if key not in names:
            raise CliError(f"unknown key {section}.{key}; valid keys: {', '.join(sorted(names))}")
        # A real field that some selected YAML leaves to its default: add it instead of failing.
        out.append(f"++{a}" if any(key not in y for y in yamls) else a)
    return out
