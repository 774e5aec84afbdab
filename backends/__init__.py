"""Engine registry: `backends/<engine>.py` modules and `backends/<engine>/` packages, found by name.

Adding an engine is adding a module that sets `ENGINE = <Engine subclass>`; nothing else lists it.
An engine kept outside this folder is named by its dotted module path (`engine: my_pkg.my_engine`).
"""
from __future__ import annotations

import importlib
import pkgutil

from backends.contract import ConfigError

_NOT_ENGINES = {"contract"}


def engine_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__)
                  if m.name not in _NOT_ENGINES and not m.name.startswith("_"))


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


def engine_packages() -> tuple[str, ...]:
    """Every distribution the bundled engines declare (what an environment record lists)."""
    out: dict[str, None] = {}
    for name in engine_names():
        out.update(dict.fromkeys(engine_class(name).packages))
    return tuple(out)
