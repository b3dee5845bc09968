"""Compression of trainable state: svd at full rank is exact, int8 stays within its stated error.

    python -m pytest tests/test_compress.py -q

int8 tolerance, stated and tested: every element within scale / 2 of the original (scale =
(max - min) / 255 of its channel, range widened to hold 0), and on the ViT below (deep prompts +
bottleneck adapters + LoRA, trained-size values) the class probabilities within 0.01.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from promptsearch.compress import (CompressError, compress, decompress, matrix_view, parse_spec, read_compressed,
                                   stored_bytes, write_compressed)
from promptsearch.prompts import build_prompted_model
from promptsearch.space import Architecture

ARCH = Architecture(module="token", tokens=10, depth="deep", lora_rank=4, adapter="bottleneck", init="normal")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(vit):
    """A model whose every trainable tensor is non-zero (LoRA B and adapter up start at zero)."""
    torch.manual_seed(0)
    model = build_prompted_model(ARCH, vit, 3).eval()
    with torch.no_grad():
        for p in model.trainable_parameters():
            if p.abs().sum() == 0:
                p.normal_(std=0.02)
    return model


def _predict(vit, state, x):
    model = build_prompted_model(ARCH, vit, 3).eval()
    model.load_trainable_state_dict(state)
    with torch.no_grad():
        return torch.softmax(model(x), -1)


def test_matrix_view_is_the_most_square_split():
    assert matrix_view((24, 192)) == (24, 192)
    assert matrix_view((64, 32, 1, 1)) == (64, 32)
    assert matrix_view((12, 1, 10, 192)) == (120, 192)
    assert matrix_view((3, 500)) == (3, 500)


def test_svd_at_full_rank_reproduces_predictions(vit, trained):
    x = torch.rand(8, 1, 28, 28)
    state = trained.trainable_state_dict()
    ref = _predict(vit, state, x)
    full = max(min(matrix_view(tuple(v.shape))) for v in state.values() if v.ndim > 1)
    tensors, manifest = compress(state, f"svd:{full}")
    assert stored_bytes(tensors) == stored_bytes(state)  # every tensor has rank <= RANK: stored as is
    assert torch.allclose(_predict(vit, decompress(tensors, manifest), x), ref, atol=1e-5)
    # the factorised path: every tensor made of rank <= 6 is stored as US (rows, 6) and V (6, cols)
    low = {}
    for k, v in state.items():
        rows, cols = matrix_view(tuple(v.shape)) if v.ndim > 1 else (1, 1)
        low[k] = (torch.randn(rows, 6) @ torch.randn(6, cols) * 0.01).reshape(v.shape) if min(rows, cols) > 6 else v
    ref = _predict(vit, low, x)
    tensors, manifest = compress(low, "svd:6")
    assert tensors["prompt.blocks/us"].shape == (120, 6) and tensors["prompt.blocks/v"].shape == (6, 192)
    assert manifest["tensors"]["prompt.blocks"]["codec"] == "svd"
    assert manifest["tensors"]["inserts.adapter.sites.blocks_0_mlp.down.weight"]["codec"] == "svd"  # (24, 192)
    assert stored_bytes(tensors) < stored_bytes(low)
    back = decompress(tensors, manifest)
    assert set(back) == set(low) and all(back[k].shape == low[k].shape for k in low)
    assert torch.allclose(_predict(vit, back, x), ref, atol=1e-5)
    # truncation: lower rank, fewer bytes, larger error
    errs = [(decompress(*compress(state, f"svd:{r}"))["prompt.blocks"] - state["prompt.blocks"]).norm() for r in (2, 8, 32)]
    assert errs[0] > errs[1] > errs[2]


@pytest.mark.parametrize("spec", ["int8", "int8:tensor", "svd:8+int8"])
def test_int8_stays_within_its_tolerance(vit, trained, spec):
    x = torch.rand(8, 1, 28, 28)
    state = trained.trainable_state_dict()
    tensors, manifest = compress(state, spec)
    back = decompress(tensors, manifest)
    assert all(back[k].dtype == state[k].dtype and back[k].shape == state[k].shape for k in state)
    assert stored_bytes(tensors) < 0.27 * stored_bytes(state)  # ~1/4, plus scales and zero points
    if spec.startswith("int8"):
        for k, v in state.items():
            scale = tensors[f"{k}/scale"]
            assert (back[k] - v).abs().max() <= scale.max() / 2 + 1e-6, k
    ref = _predict(vit, state, x)
    out = _predict(vit, back, x)
    if spec.startswith("int8"):
        assert (out - ref).abs().max() < 0.01
    assert out.argmax(-1).tolist() == out.argmax(-1).tolist() and torch.isfinite(out).all()


def test_int8_keeps_zeros_and_odd_tensors():
    state = {"zero": torch.zeros(4, 8), "bias": torch.tensor([0.5, -2.0, 0.0]), "const": torch.full((3, 3), 7.0),
             "half": torch.randn(6, 10).half(), "index": torch.arange(5)}
    back = decompress(*compress(state, "int8"))
    assert torch.equal(back["zero"], state["zero"])
    assert back["bias"][2] == 0  # 0 is exactly representable
    assert torch.allclose(back["const"], state["const"], atol=7 / 510 + 1e-6)
    assert back["half"].dtype == torch.float16 and torch.allclose(back["half"].float(), state["half"].float(), atol=0.05)
    assert torch.equal(back["index"], state["index"])  # not float: stored as is


def test_write_and_read_a_compressed_file(tmp_path, trained):
    state = trained.trainable_state_dict()
    manifest = write_compressed(tmp_path / "p.safetensors", state, "svd:8+int8")
    assert manifest["spec"] == "svd:8+int8" and json.loads(json.dumps(manifest)) == manifest
    back = read_compressed(tmp_path / "p.safetensors")
    assert set(back) == set(state)
    assert (tmp_path / "p.safetensors").stat().st_size < stored_bytes(state) / 4
    plain = tmp_path / "plain.safetensors"
    save_file(state, str(plain))
    assert all(torch.equal(a, state[k]) for k, a in read_compressed(plain).items())
    tensors = load_file(str(tmp_path / "p.safetensors"))
    with pytest.raises(CompressError, match="missing"):
        decompress({k: v for k, v in list(tensors.items())[1:]}, manifest)
    with pytest.raises(CompressError, match="manifest"):
        decompress(tensors, {"format": "other"})


@pytest.mark.parametrize("spec, match", [("svd", "rank >= 1"), ("svd:0", "rank >= 1"), ("zip", "unknown"),
                                         ("int8+svd:4", "must be the last"), ("int8:x", "mode"),
                                         ("svd:4+svd:8", "at most once")])
def test_bad_specs(spec, match):
    with pytest.raises(CompressError, match=match):
        parse_spec(spec)
    assert parse_spec("none") == [] and parse_spec("svd:4+int8:tensor") == [("svd", 4), ("int8", "tensor")]


def test_compressed_bytes_read_back_and_payload(tmp_path, trained):
    from safetensors.torch import save

    from promptsearch.compress import header, payload_bytes, read_compressed_bytes

    state = trained.trainable_state_dict()
    path = tmp_path / "p.safetensors"
    manifest = write_compressed(path, state, "int8", metadata={"format": "x"})
    blob = path.read_bytes()
    back, got = read_compressed_bytes(blob)
    assert got == manifest and set(back) == set(state) and header(blob)["__metadata__"]["format"] == "x"
    assert payload_bytes(blob) == stored_bytes(compress(state, "int8")[0]) < len(blob)
    plain = save(state)
    same, none = read_compressed_bytes(plain)
    assert none is None and all(torch.equal(same[k], v) for k, v in state.items())
    assert payload_bytes(plain) == stored_bytes(state)


@pytest.mark.parametrize("spec", ["none", "int8", "svd:4+int8"])
def test_file_bytes_is_the_written_file_size(tmp_path, trained, spec):
    from safetensors.torch import save_file

    from promptsearch.compress import file_bytes

    state = trained.trainable_state_dict()
    path = tmp_path / "p.safetensors"
    meta = {"format": "promptsearch-bundle/1", "candidate": "abc"}
    if spec == "none":
        save_file(state, str(path), metadata=meta)
    else:
        write_compressed(path, state, spec, metadata=meta)
    assert file_bytes(state, spec, meta) == path.stat().st_size
