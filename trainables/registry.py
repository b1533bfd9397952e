"""The one rule every name registry in ``trainables`` follows (losses, regularizers, feature
extractors, datasets): a name is registered once; registering it again is an error naming it."""

from __future__ import annotations

from typing import Any

__all__ = ["claim"]


def claim(registry: dict[str, Any], kind: str, name: str) -> None:
    """Raise ValueError when ``name`` is already in ``registry`` (``kind`` names the registry in
    the message, e.g. ``"loss"``); call it before adding ``name``."""
    if name in registry:
        old = registry[name]
        label = getattr(old, "__qualname__", None) or type(old).__qualname__
        raise ValueError(f"{kind} {name!r} is already registered ({label})")
