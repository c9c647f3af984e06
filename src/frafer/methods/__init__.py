"""The pre-training methods, by the name a config's `method:` key gives."""

from __future__ import annotations

from frafer.errors import FraferError
from frafer.methods import byol, fra, moco_v2
from frafer.methods.base import Method

METHODS: dict[str, Method] = {m.name: m for m in (fra.METHOD, byol.METHOD, moco_v2.METHOD)}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise FraferError(f"unknown method '{name}' (known: {', '.join(METHODS)})")
    return METHODS[name]
