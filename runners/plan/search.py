"""Where configs are found: the ones quantbench ships, then every `hydra.searchpath` entry.

The same search serves the command-line check (before Hydra runs), the planner (the quality
reference's backend YAML) and anything else that names a group option, so a user's own backend YAML
in a folder on `hydra.searchpath` is found everywhere Hydra would find it.
"""
from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from backends.contract import ConfigError

GROUPS = ("backend", "model", "workload")


def shipped_conf() -> Path:
    """The configs that ship with quantbench: package data in an installed wheel (`runners/conf`),
    the checkout's top-level `conf/` in a source tree or an editable install."""
    runners_dir = Path(__file__).resolve().parents[1]
    for candidate in (runners_dir / "conf", runners_dir.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"quantbench's configs are missing: neither {runners_dir / 'conf'} nor "
                            f"{runners_dir.parent / 'conf'} holds config.yaml; reinstall quantbench")


def _as_dir(entry: str) -> Path | None:
    """A search path entry (`file://DIR`, `pkg://PACKAGE`, or a plain folder) as a folder, if it is one."""
    entry = entry.strip().strip("'\"")
    if entry.startswith("pkg://"):
        try:
            return Path(str(importlib.resources.files(entry[len("pkg://"):].replace("/", "."))))
        except (ModuleNotFoundError, TypeError, ValueError):
            return None
    if entry.startswith("structured://"):
        return None
    return Path(entry.removeprefix("file://")).expanduser()


@dataclass
class ConfigSearch:
    """Config folders in Hydra's order: earlier entries win."""

    dirs: list[Path] = field(default_factory=lambda: [shipped_conf()])

    @staticmethod
    def from_args(args: list[str]) -> "ConfigSearch":
        """From command-line overrides (`hydra.searchpath=[file://a,file://b]`)."""
        dirs = [shipped_conf()]
        for a in args:
            key, sep, value = a.lstrip("+~").partition("=")
            if sep and key == "hydra.searchpath":
                dirs += [d for d in (_as_dir(p) for p in value.strip("[]").split(",") if p.strip()) if d]
        return ConfigSearch(dirs)

    @staticmethod
    def from_hydra(config_sources: Any) -> "ConfigSearch":
        """From a running Hydra job's `runtime.config_sources`."""
        dirs: list[Path] = []
        for src in config_sources or []:
            if src.get("provider") in ("hydra", "schema"):
                continue
            d = _as_dir(f"{src.get('schema')}://{src.get('path')}")
            if d is not None and d not in dirs:
                dirs.append(d)
        return ConfigSearch(dirs or [shipped_conf()])

    def choices(self, group: str) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for d in reversed(self.dirs):
            for f in sorted((d / group).glob("*.yaml")):
                found[f.stem] = f
        return found

    def load(self, group: str, name: str) -> dict[str, Any]:
        """One group option as a plain mapping; an alias YAML (`defaults: [other]`) takes the fields of
        the option it names, as Hydra composes it."""
        path = self.choices(group).get(name)
        if path is None:
            raise ConfigError(f"unknown {group} {name!r}; valid {group}s: {', '.join(sorted(self.choices(group)))}")
        data = yaml.safe_load(path.read_text()) or {}
        defaults = data.pop("defaults", None) or []
        for item in defaults:
            if isinstance(item, str) and item != "_self_":
                data = {**self.load(group, item.split("/")[-1]), **data}
        return data

    def primary(self) -> dict[str, Any]:
        return yaml.safe_load((self.dirs[0] / "config.yaml").read_text()) or {}

    def default_choices(self) -> dict[str, str]:
        out = {}
        for item in self.primary().get("defaults", []):
            if isinstance(item, dict):
                out.update({k: str(v) for k, v in item.items() if k in GROUPS})
        return out

    def top_keys(self) -> set[str]:
        return set(self.primary()) - {"defaults", "hydra"}
