"""Files: atomic replacement and content hashes, the two things every writer here needs.

    python -c "from promptsearch.files import atomic_write, file_sha256; atomic_write('/tmp/x.txt', 'hi'); print(file_sha256('/tmp/x.txt'))"
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, data: str | bytes | Callable[[Path], None], mode: int | None = None) -> None:
    """Write-then-rename: a reader sees the old file or the new one, never half of one.

    ``data``: text, bytes, or a function that writes the temporary path it is given (safetensors,
    torch.save). ``mode``: the file's permission bits (default: what the umask gives a new file).
    A failed write removes its temporary file and leaves the old file as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        if callable(data):
            data(tmp)
        elif isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def bundled(folder: str) -> Path:
    """A folder of the package's data (bundled spaces, default jobs), found with importlib.resources
    so that an installed wheel finds it as well as a checkout."""
    from importlib.resources import files

    return Path(str(files("promptsearch") / folder))


def find_named(path: str | Path, folder: Path, suffix: str = ".yaml") -> Path | None:
    """``path`` if it is a file, else a bare name (``medical``, ``pixel.yaml``) looked up in
    ``folder``; ``None`` when neither exists."""
    import re

    p = Path(path)
    if p.is_file():
        return p
    if p.parent == Path(".") and re.fullmatch(r"[A-Za-z0-9_.-]+", p.name):
        for cand in (folder / p.name, folder / f"{p.name}{suffix}"):
            if cand.is_file():
                return cand
    return None


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
