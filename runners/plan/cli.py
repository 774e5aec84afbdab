"""Command-line overrides checked before Hydra composes anything.

Hydra's own answer to a typo is a multi-line "Key 'x' is not in struct" (or a lexer error) that names
no valid choice, and it also rejects real options a given YAML happens not to spell out
(`model.path=...` on a model whose YAML has no `path`). This pass gives one line naming the valid
choices for a misspelt group option or key, and turns an override of a real field that the selected
YAML leaves at its default into Hydra's add-or-override form (`++key=value`), so the typed config
check sees it.
"""
from __future__ import annotations

import dataclasses
import re

from hydra.core.override_parser.overrides_parser import OverridesParser

from backends import engine_class
from runners.plan.config import BackendYaml, section_types
from runners.plan.search import GROUPS, ConfigSearch

_OVERRIDE = re.compile(r"^(?P<prefix>\+\+|\+|~)?(?P<key>[A-Za-z_][\w.]*)=(?P<value>.*)$", re.S)
# Hydra's flags that take a value: their value must stay right after them.
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--experimental-rerun", "--info", "-i"}
# --info's value is optional: only these words are its value.
_INFO_VALUES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


class CliError(ValueError):
    pass


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra flags with their values, in order; overrides). `--cfg job` keeps `job` with its flag."""
    flags: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("-") and not _OVERRIDE.match(a):
            flags.append(a)
            takes = a in _FLAGS_WITH_VALUE and "=" not in a
            if takes and i + 1 < len(argv):
                nxt = argv[i + 1]
                if a not in ("--info", "-i") or nxt in _INFO_VALUES:
                    flags.append(nxt)
                    i += 1
        else:
            overrides.append(a)
        i += 1
    return flags, overrides


def _values(raw: str) -> list[str] | None:
    """A plain value or a comma sweep list; None for Hydra sweep functions we leave to Hydra."""
    if "(" in raw or raw.startswith("["):
        return None
    return [v.strip() for v in raw.split(",")]


def _fields(section: str, selected: list[dict], search: ConfigSearch) -> tuple[set[str], list[dict]]:
    """Valid keys of a section and the YAML mappings that set it (one per selected group option)."""
    if section == "backend.options":
        names: set[str] = set()
        for y in selected:
            if "engine" in y:
                names |= {f.name for f in dataclasses.fields(engine_class(y["engine"]).Options)}
        return names, [y.get("options") or {} for y in selected]
    if section == "backend":
        return {f.name for f in dataclasses.fields(BackendYaml)}, selected
    cls = section_types()[section]
    names = {f.name for f in dataclasses.fields(cls)}
    if section == "backend.expect":
        return names, [y.get("expect") or {} for y in selected]
    if section in GROUPS:
        return names, selected
    return names, [search.primary().get(section) or {}]


def _bad_shape(arg: str) -> str | None:
    if "=" not in arg:
        return None
    key = arg.split("=", 1)[0]
    if key != key.strip() or " " in key:
        return f"bad override {arg!r}: no spaces in a key or around '=' (write {key.strip().replace(' ', '')}=...)"
    return None


def _lexable(arg: str) -> bool:
    try:
        OverridesParser.create().parse_overrides([arg])
    except Exception:  # noqa: BLE001 — Hydra's lexer and parser errors share no base class worth naming
        return False
    return True


def quoted(arg: str) -> str:
    """An override whose value Hydra's lexer cannot read (`report.require=tpot<=5ms`, a non-ASCII path), with
    the value quoted the way Hydra reads it; CliError (one line, with the quoting that works) otherwise."""
    if _lexable(arg):
        return arg
    m = _OVERRIDE.match(arg)
    if m and "'" not in m["value"] and not m["value"].startswith(("[", "{")):
        fixed = f"{m['prefix'] or ''}{m['key']}='{m['value']}'"
        if _lexable(fixed):
            return fixed
    key = m["key"] if m else arg.split("=", 1)[0]
    raise CliError(f"cannot read {arg!r}: quote its value for Hydra, inside shell quotes: '{key}=\"...\"'")


def check(args: list[str], search: ConfigSearch | None = None) -> list[str]:
    """Validate and normalise overrides; raises CliError with one line."""
    search = search or ConfigSearch.from_args(args)
    selected = search.default_choices()
    picked: dict[str, list[str]] = {}
    for a in args:
        if why := _bad_shape(a):
            raise CliError(why)
    args = [quoted(a) for a in args]
    for a in args:
        m = _OVERRIDE.match(a)
        if m and m["key"] in GROUPS and m["value"].strip().startswith("["):
            # Hydra composes `backend=[a,b]` into one merged config named `?`: never what a user means.
            items = m["value"].strip()[1:-1]
            raise CliError(f"{m['key']}={m['value']} is a list, and a run has one {m['key']}; to compare "
                           f"{m['key']}s, sweep them: -m {m['key']}={items or 'A,B'}")
        if m and m["key"] in GROUPS:
            names = _values(m["value"])
            if names is None:
                continue
            valid = search.choices(m["key"])
            if not any(names):
                raise CliError(f"{m['key']}= needs a name; valid {m['key']}s: {', '.join(sorted(valid))}")
            bad = [n for n in names if n not in valid]
            if bad:
                raise CliError(f"unknown {m['key']} {', '.join(map(repr, bad))}; valid {m['key']}s: "
                               f"{', '.join(sorted(valid))}")
            picked[m["key"]] = names
    groups = {g: [search.load(g, n) for n in picked.get(g, [selected.get(g)]) if n] for g in GROUPS}
    top = search.top_keys()
    out = []
    for a in args:
        m = _OVERRIDE.match(a)
        if m is None:
            if not a.startswith("hydra") and "=" not in a:
                raise CliError(f"bad argument {a!r}: overrides are key=value (e.g. backend=fp16)")
            out.append(a)
            continue
        key = m["key"]
        if key in GROUPS or key.startswith("hydra") or ("." not in key and key in top):
            out.append(a)
            continue
        parts = key.split(".")
        if parts[0] not in top | set(GROUPS):
            raise CliError(f"unknown key {key!r}; valid top-level keys: {', '.join(sorted(top | set(GROUPS)))}")
        if parts[:2] in (["backend", "options"], ["backend", "expect"]) and len(parts) > 2:
            section, field_name = ".".join(parts[:2]), parts[2]
        else:
            section, field_name = parts[0], parts[1] if len(parts) > 1 else None
        if field_name is None or section not in ("backend", "backend.options", *section_types()):
            out.append(a)
            continue
        names, yamls = _fields(section, groups.get(section.split(".")[0], []), search)
        if field_name not in names:
            raise CliError(f"unknown key {section}.{field_name}; valid keys: {', '.join(sorted(names))}")
        if m["prefix"] == "~":
            out.append(a)
            continue
        # A real field that some selected YAML leaves to its default: add it instead of failing.
        bare = a.lstrip("+")
        out.append(f"++{bare}" if any(field_name not in y for y in yamls) else bare)
    return out


def normalised(overrides: list[str]) -> list[str]:
    """A command's overrides as a comparable list: order-free, without resume and Hydra's own keys (where
    to write, search path), as Hydra lists a job's task overrides."""
    keys = [(o.lstrip("+"), o.lstrip("+").split("=", 1)[0]) for o in overrides]
    return sorted(o for o, key in keys if key != "resume" and not key.startswith("hydra."))

