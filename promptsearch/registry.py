"""A tiny name -> object registry (timm's ``@register_model`` idea).

    python -c "from promptsearch.prompts import FUSIONS; print(sorted(FUSIONS))"
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """A dict filled by a decorator; a duplicate name warns and the later entry wins."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self:
                warnings.warn(f"{self.kind} {name!r} registered twice; the later one wins", stacklevel=2)
            self[name] = obj
            return obj

        return deco

    def get_or_raise(self, name: str) -> T:
        try:
            return self[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self))}") from None
