"""Engine registry: `backends/<engine>.py` modules and `backends/<engine>/` packages, found by name.

Adding an engine is adding a module that sets `ENGINE = <Engine subclass>`; nothing else lists it.
A module of this folder that sets no `ENGINE` (the contract, `compress`: helpers several engines
share) is not an engine. An engine kept outside this folder is named by its dotted module path
(`engine: my_pkg.my_engine`). Engine modules import nothing heavy at top level, so discovering them
costs milliseconds.
"""
from __future__ import annotations

import importlib
import pkgutil

from backends.contract import ConfigError, Engine


def _is_engine(name: str) -> bool:
    module = importlib.import_module(f"{__name__}.{name}")
    cls = getattr(module, "ENGINE", None)
    return isinstance(cls, type) and issubclass(cls, Engine)


def engine_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__)
                  if not m.name.startswith("_") and m.name != "contract" and _is_engine(m.name))


def engine_class(name: str) -> type:
    """`name` is a module of this package, or a dotted module path of an engine kept elsewhere."""
    if "." in name:
        try:
            return importlib.import_module(name).ENGINE
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"backend.engine: cannot load engine module {name!r}: {exc}") from None
    names = engine_names()
    if name not in names:
        raise ConfigError(f"backend.engine: unknown engine {name!r}; valid engines: {', '.join(names)}")
    return importlib.import_module(f"{__name__}.{name}").ENGINE


def engine_metrics() -> list:
    """The metrics every bundled engine declares (backends.contract.Metric), engines in name order."""
    return [m for name in engine_names() for m in engine_class(name).metrics]


def engine_packages() -> tuple[str, ...]:
    """Every distribution the bundled engines declare (what an environment record lists)."""
    out: dict[str, None] = {}
    for name in engine_names():
        out.update(dict.fromkeys(engine_class(name).packages))
    return tuple(out)
