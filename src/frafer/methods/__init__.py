"""The pre-training methods, by the name a config's `method:` key gives.

The registry is the package itself: every module here that defines a `METHOD` (a `Method`) is one, so adding a
method is its file (model, loss call, config section, defaults, checks), its loss in `frafer.losses` and a recipe.
"""

from __future__ import annotations

import importlib
import pkgutil

from frafer.errors import FraferError
from frafer.methods.base import Method


def _discover() -> dict[str, Method]:
    """Every `METHOD` defined by a module of this package; FRA first (the project's own), then by name."""
    found: dict[str, Method] = {}
    for info in pkgutil.iter_modules(__path__):
        method = getattr(importlib.import_module(f"{__name__}.{info.name}"), "METHOD", None)
        if isinstance(method, Method):
            if method.name in found:
                raise TypeError(f"two pre-training methods are named '{method.name}'")
            found[method.name] = method
    return dict(sorted(found.items(), key=lambda item: (item[0] != "fra", item[0])))


METHODS: dict[str, Method] = _discover()


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise FraferError(f"unknown method '{name}' (known: {', '.join(METHODS)})")
    return METHODS[name]
