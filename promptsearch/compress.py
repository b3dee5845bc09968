"""Compression of a trainable state dict for deployment: pure functions, tensors in, tensors out.

    python -c "import torch; from promptsearch.compress import compress, decompress, stored_bytes; s = {'w': torch.randn(64, 8) @ torch.randn(8, 192)}; t, m = compress(s, 'svd:8+int8'); print(stored_bytes(s), '->', stored_bytes(t), (decompress(t, m)['w'] - s['w']).abs().max())"

A *spec* is ``none`` or steps joined by ``+``, applied in order (:data:`CODECS`):

* ``svd:RANK``: each tensor, seen as a matrix (rows x cols, split where its shape is most square),
  is stored as the factors ``US`` (rows, r) and ``V`` (r, cols) of its truncated SVD. Tensors with
  min(rows, cols) <= RANK (rank <= RANK), 1-D tensors, and those whose factors would not be
  smaller are stored as they are (so a full-rank ``svd`` is exact).
* ``int8`` (per channel: one scale and zero point per row or per column of the matrix view,
  whichever are fewer; 1-D tensors per tensor) or ``int8:tensor`` (one for the whole tensor):
  affine quantisation ``q = round(x / scale) + zp`` in [-128, 127], the range widened to hold 0
  (so zeros stay exact). The error is at most scale / 2 per element: ``(max - min) / 510`` of the
  channel (or tensor).
* ``svd:R+int8``: the SVD factors are quantised. ``int8`` must be the last step.

:func:`compress` returns the tensors to write (a flat dict for ``safetensors.torch.save_file``)
and a JSON-able manifest; :func:`decompress` inverts it. The manifest says how to rebuild each
tensor, as a tree of codec nodes; an export writes it beside the tensors (e.g. as safetensors
metadata, :func:`write_compressed` / :func:`read_compressed`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from .registry import Registry

FORMAT = "promptsearch-compressed"
VERSION = 1
METADATA_KEY = "promptsearch.compress"  # the manifest's key in a safetensors file's metadata


class CompressError(ValueError):
    """A bad spec, or tensors and manifest that do not fit together."""


class Codec(Protocol):
    """One step. ``parse`` checks the spec's argument (``svd:8`` -> 8); ``encode`` returns (meta,
    parts), or None to leave the tensor as it is for the next step."""

    terminal: bool  # its parts are final: no later step applies to them

    def parse(self, arg: str | None) -> Any: ...

    def encode(self, t: torch.Tensor, arg: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None: ...

    def decode(self, meta: dict[str, Any], parts: dict[str, torch.Tensor]) -> torch.Tensor: ...


CODECS: Registry = Registry("compression step")


def matrix_view(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, cols) of the split ``shape[:k] | shape[k:]`` that is most square: a Linear weight
    (out, in) stays so, a 1x1 conv (out, in, 1, 1) is (out, in), deep prompts (L, n, T, D) are
    (L*n*T, D)."""
    splits = [(math.prod(shape[:k]), math.prod(shape[k:])) for k in range(1, len(shape))]
    return max(splits, key=lambda rc: (min(rc), -abs(rc[0] - rc[1])))


class SVD:
    terminal = False

    def parse(self, arg: str | None) -> int:
        if arg is None or not arg.isdigit() or int(arg) < 1:
            raise CompressError(f"svd:{arg}: give a rank >= 1, e.g. svd:8")
        return int(arg)

    def encode(self, t: torch.Tensor, rank: int):
        if t.ndim < 2 or not t.is_floating_point():
            return None
        rows, cols = matrix_view(tuple(t.shape))
        if min(rows, cols) <= rank or rank * (rows + cols) >= rows * cols:
            return None  # its rank is <= RANK already, or the factors would be no smaller
        U, S, Vh = torch.linalg.svd(t.detach().reshape(rows, cols).double(), full_matrices=False)
        us = (U[:, :rank] * S[:rank]).to(t.dtype)  # (rows, r)
        v = Vh[:rank].to(t.dtype)  # (r, cols)
        return {"rank": rank, "shape": list(t.shape)}, {"us": us.contiguous(), "v": v.contiguous()}

    def decode(self, meta, parts):
        return (parts["us"].float() @ parts["v"].float()).reshape(meta["shape"])  # (rows, cols) -> shape


class Int8:
    terminal = True

    def parse(self, arg: str | None) -> str:
        if arg not in (None, "channel", "tensor"):
            raise CompressError(f"int8:{arg}: the mode is 'channel' (the default) or 'tensor'")
        return arg or "channel"

    def encode(self, t: torch.Tensor, mode: str):
        if not t.is_floating_point():
            return None
        x = t.detach().float()
        rows, cols = matrix_view(tuple(t.shape)) if t.ndim >= 2 else (1, t.numel())
        axis = None if mode == "tensor" or t.ndim < 2 else (0 if rows <= cols else 1)  # the fewer channels
        flat = x.reshape(rows, cols) if axis == 0 else x.reshape(rows, cols).T if axis == 1 else x.reshape(1, -1)
        lo = flat.amin(1).clamp(max=0.0)  # (C,): the range holds 0, so zeros stay exact
        hi = flat.amax(1).clamp(min=0.0)  # (C,)
        scale = (hi - lo) / 255.0
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero channel
        zp = torch.round(-128.0 - lo / scale).clamp(-128, 127)  # (C,)
        q = torch.round(flat / scale[:, None] + zp[:, None]).clamp(-128, 127).to(torch.int8)  # (C, per channel)
        return ({"axis": axis, "shape": list(t.shape)},
                {"q": q.contiguous(), "scale": scale.contiguous(), "zero_point": zp.to(torch.int8)})

    def decode(self, meta, parts):
        q, scale, zp = parts["q"].float(), parts["scale"].float(), parts["zero_point"].float()
        x = (q - zp[:, None]) * scale[:, None]  # (C, per channel)
        return (x.T if meta["axis"] == 1 else x).reshape(meta["shape"])


CODECS.register("svd")(SVD())
CODECS.register("int8")(Int8())


def parse_spec(spec: str) -> list[tuple[str, Any]]:
    """``"svd:8+int8"`` -> [("svd", 8), ("int8", "channel")]; ``"none"`` or ``""`` -> []."""
    if spec in ("", "none"):
        return []
    steps = []
    for part in spec.split("+"):
        name, _, arg = part.partition(":")
        if name not in CODECS:
            raise CompressError(f"unknown compression step {name!r} in {spec!r}; known: {', '.join(CODECS)}")
        steps.append((name, CODECS[name].parse(arg or None)))
    names = [n for n, _ in steps]
    if len(set(names)) != len(names):
        raise CompressError(f"{spec!r}: each step at most once")
    early = [n for n in names[:-1] if CODECS[n].terminal]
    if early:
        raise CompressError(f"{spec!r}: {', '.join(early)} must be the last step")
    return steps


def _encode(key: str, t: torch.Tensor, steps: list[tuple[str, Any]], out: dict[str, torch.Tensor]) -> dict:
    """A manifest node: ``{}`` = stored as is under ``key``, else codec, meta and a node per part
    (stored under ``key/part``)."""
    for i, (name, arg) in enumerate(steps):
        done = CODECS[name].encode(t, arg)
        if done is None:
            continue
        meta, parts = done
        rest = [] if CODECS[name].terminal else steps[i + 1:]
        return {"codec": name, "meta": meta, "parts": {p: _encode(f"{key}/{p}", v, rest, out) for p, v in parts.items()}}
    out[key] = t.detach().contiguous()
    return {}


def _decode(key: str, node: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    if "codec" not in node:
        if key not in tensors:
            raise CompressError(f"tensor {key!r} named by the manifest is missing")
        return tensors[key]
    parts = {p: _decode(f"{key}/{p}", n, tensors) for p, n in node["parts"].items()}
    return CODECS.get_or_raise(node["codec"]).decode(node["meta"], parts)


def compress(state: Mapping[str, torch.Tensor], spec: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A trainable state dict -> (tensors to store, manifest). Keys of the stored tensors are the
    state's keys, with ``/part`` suffixes for encoded ones."""
    steps = parse_spec(spec)
    tensors: dict[str, torch.Tensor] = {}
    nodes = {}
    for name, t in state.items():
        node = _encode(name, t.detach().cpu(), steps, tensors)
        node["dtype"] = str(t.dtype).removeprefix("torch.")
        nodes[name] = node
    return tensors, {"format": FORMAT, "version": VERSION, "spec": spec, "tensors": nodes}


def decompress(tensors: Mapping[str, torch.Tensor], manifest: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """(stored tensors, manifest) -> the state dict, each tensor in its original dtype and shape."""
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise CompressError(f"not a {FORMAT} v{VERSION} manifest")
    return {name: _decode(name, node, tensors).to(getattr(torch, node["dtype"])).contiguous()
            for name, node in manifest["tensors"].items()}


def stored_bytes(tensors: Mapping[str, torch.Tensor]) -> int:
    """Payload bytes of a tensor dict (a state dict, or what :func:`compress` returns); a
    safetensors file adds a small JSON header."""
    return sum(t.numel() * t.element_size() for t in tensors.values())


def write_compressed(path: str | Path, state: Mapping[str, torch.Tensor], spec: str,
                     metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Compress ``state`` into one safetensors file, the manifest in its metadata (beside any other
    ``metadata``); returns the manifest."""
    from safetensors.torch import save_file

    tensors, manifest = compress(state, spec)
    meta = {**(metadata or {}), METADATA_KEY: json.dumps(manifest, separators=(",", ":"))}
    save_file(tensors, str(path), metadata=meta)
    return manifest


def file_bytes(state: Mapping[str, torch.Tensor], spec: str = "none", metadata: Mapping[str, str] | None = None) -> int:
    """Size in bytes of the safetensors file that stores ``state`` compressed with ``spec`` (``none``:
    as it is), header and manifest included: what an export's ``prompts.safetensors`` weighs with
    the same ``metadata`` (the objective ``prompt_bytes``; the tensors alone: :func:`stored_bytes`)."""
    from safetensors.torch import save

    plain = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if not parse_spec(spec):
        return len(save(plain, metadata=dict(metadata) if metadata else None))
    tensors, manifest = compress(plain, spec)
    return len(save(tensors, metadata={**(metadata or {}), METADATA_KEY: json.dumps(manifest, separators=(",", ":"))}))


def header(blob: bytes) -> dict[str, Any]:
    """The JSON header of safetensors bytes: tensor name -> {dtype, shape, data_offsets}, and
    ``__metadata__``."""
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n])


def payload_bytes(blob: bytes) -> int:
    """Tensor bytes of a safetensors file's contents (the file size less its 8-byte length and header)."""
    return sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header(blob).items() if k != "__metadata__")


def read_compressed_bytes(blob: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(state dict, manifest or None) from the bytes of :func:`write_compressed`'s file, or of a
    plain safetensors file (read as is, manifest None)."""
    from safetensors.torch import load

    meta = (header(blob).get("__metadata__") or {}).get(METADATA_KEY)
    tensors = load(blob)
    if not meta:
        return tensors, None
    manifest = json.loads(meta)
    return decompress(tensors, manifest), manifest


def read_compressed(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict from :func:`write_compressed`'s file (a plain safetensors file reads as is)."""
    return read_compressed_bytes(Path(path).read_bytes())[0]
