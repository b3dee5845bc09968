"""A tiny name -> object registry (timm's ``@register_model`` idea).

    python -c "from promptsearch.prompts import FUSIONS; print(sorted(FUSIONS))"
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Lazy:
    """A name whose entry registers itself when ``module`` is imported (on first use)."""

    def __init__(self, module: str):
        self.module = module


class Registry(dict[str, T], Generic[T]):
    """A dict filled by a decorator; a duplicate name warns and the later entry wins.

    :meth:`register_lazy` lists a name whose module is imported only when the entry is first
    fetched (a strategy that needs torch must not make job validation import torch)."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self and not isinstance(dict.get(self, name), _Lazy):
                warnings.warn(f"{self.kind} {name!r} registered twice; the later one wins", stacklevel=2)
            self[name] = obj
            return obj

        return deco

    def register_lazy(self, name: str, module: str) -> None:
        """``name`` is known now; ``module`` (which registers it) is imported on first :meth:`get_or_raise`."""
        self[name] = _Lazy(module)  # type: ignore[assignment]

    def get_or_raise(self, name: str) -> T:
        try:
            entry = self[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self))}") from None
        if isinstance(entry, _Lazy):
            import importlib

            importlib.import_module(entry.module)
            entry = self[name]
            if isinstance(entry, _Lazy):
                raise KeyError(f"{self.kind} {name!r}: importing {entry.module} did not register it")
        return entry
