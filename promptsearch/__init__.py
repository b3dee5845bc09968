"""promptsearch: automated prompt architecture search for medical visual prompt tuning.

    promptsearch --help

Importing the package imports nothing but its version: the names below load their module on first
use, so a light user (``promptsearch jobs``, the API's schemas) pays only for what it touches.
"""

from __future__ import annotations

import importlib
from typing import Any

from .version import __version__  # noqa: F401

# public name -> the module that defines it (imported on first access)
_LAZY = {"Candidate": ".space", "SearchSpace": ".space", "load_space": ".space", "load_exported": ".export"}

__all__ = ["Candidate", "SearchSpace", "load_space", "load_exported"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
