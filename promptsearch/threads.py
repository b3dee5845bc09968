"""Torch intra-op threads for a stretch of code, restored after it.

    python -c "from promptsearch.threads import torch_threads; exec('with torch_threads(1): pass')"

One thread per reserved CPU: two trials with two threads each on two cores run 5x slower than
with one each (they only spin). torch is imported when the block runs, so core modules may import this.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """``torch.set_num_threads(n)`` inside the block (``None``: leave as is), the old value after."""
    if not n:
        yield
        return
    import torch

    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if old != n:
            torch.set_num_threads(old)
