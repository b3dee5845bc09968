"""Explanations: maps at the image's size, finite, summing to 1, following the image; the attention
recomputed from q/k equals what timm's fused kernel computes.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -m pytest tests/test_explain.py -q
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import copy_old_workspace
import torch
from PIL import Image

from promptsearch.backbones import BackboneSpec, build_backbone
from promptsearch.explain import (attention_maps, explain_images, explicit_attention, gradcam_maps,
                                  pixel_prompt_image, record_attention, token_layout)
from promptsearch.prompts import PLACEMENTS, build_prompted_model
from promptsearch.space import Architecture

VIT = BackboneSpec("vit_tiny_patch16_224", image_size=28, patch_size=4)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mobilenet(mobilenet_weights):
    return build_backbone(BackboneSpec("torchvision:mobilenet_v2", image_size=32, weights=str(mobilenet_weights)))


@pytest.fixture(scope="module")
def images(breast):
    return breast.test.images[:2].float() / 255.0  # (2, 1, 28, 28): a real benign and malignant-or-not pair


def _token_lora(vit, placement="prepend"):
    torch.manual_seed(0)
    model = build_prompted_model(Architecture(module="token", tokens=4, depth="deep", placement=placement,
                                              lora_rank=4, init="normal"), vit, 2).eval()
    with torch.no_grad():
        for p in model.inserts.parameters():
            if p.abs().sum() == 0:
                p.normal_(std=0.05)  # LoRA B starts at zero: make LoRA matter
    return model


def _check_maps(maps: torch.Tensor, size):
    assert maps.shape[-2:] == size
    assert torch.isfinite(maps).all() and (maps >= 0).all()
    assert torch.allclose(maps.sum(dim=(-2, -1)), torch.ones(maps.shape[0]), atol=1e-5)


def test_explicit_attention_equals_timms_fused_attention(vit, images):
    model = _token_lora(vit)
    assert all(b.attn.fused_attn for b in model.backbone.blocks)  # timm really runs the fused kernel
    seen = {}

    def check(i):
        def hook(module, args, output):  # inside the forward: LoRA is attached to qkv
            seen[i] = (output, *explicit_attention(module, args[0]))
        return hook

    handles = [b.attn.register_forward_hook(check(i)) for i, b in enumerate(model.backbone.blocks)]
    with torch.no_grad():
        plain = model(images)
    for h in handles:
        h.remove()
    for i, (fused, probs, out) in seen.items():
        assert torch.allclose(out, fused, atol=1e-5), i
        assert torch.allclose(probs.sum(-1), torch.ones_like(probs[..., 0]), atol=1e-5)
    # timm's own unfused path forms the same probabilities (it passes them through attn_drop)
    attn = model.backbone.blocks[5].attn
    attn.fused_attn = False
    unfused = {}
    h = attn.attn_drop.register_forward_hook(lambda m, a, out: unfused.update(p=out))
    try:
        with torch.no_grad():
            model(images)
    finally:
        h.remove()
        attn.fused_attn = True
    assert torch.allclose(unfused["p"], seen[5][1], atol=1e-6)
    # recording attention leaves the model's output exactly as it is
    with record_attention(model, layers=(0, 5, -1)) as rec, torch.no_grad():
        again = model(images)
    assert torch.equal(again, plain) and sorted(rec) == [0, 5, 11]
    assert rec[11].shape == (2, 1 + 4 + 49, 1 + 4 + 49)


@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
def test_attention_maps_follow_the_image_for_every_placement(vit, images, placement):
    model = _token_lora(vit, placement)
    cls, prompts, patches = token_layout(model)
    assert prompts.numel() == 4 and (patches >= 0).sum() == (45 if placement == "replace" else 49)
    assert len(set(prompts.tolist()) | set(patches[patches >= 0].tolist()) | set(cls.tolist())) == \
        1 + 4 + int((patches >= 0).sum())  # prompt, patch and CLS positions never collide
    big = torch.nn.functional.interpolate(images, size=(40, 40), mode="bilinear")  # maps follow the image's size
    for x in (images, big):
        maps = attention_maps(model, x, layers=(0, -1))
        assert set(maps) == {f"attention_{w}_block{i}" for w in ("cls", "prompts") for i in (0, 11)}
        for m in maps.values():
            _check_maps(m, x.shape[-2:])
            assert not torch.allclose(m[0], m[1])  # two images, two maps


def test_gradcam_on_a_vit_drops_prompt_tokens(vit, images):
    pytest.importorskip("pytorch_grad_cam", reason="pip install grad-cam")
    model = _token_lora(vit, "insert")
    maps = gradcam_maps(model, images)
    _check_maps(maps, (28, 28))
    assert not torch.allclose(maps[0], maps[1])
    assert all(p.grad is None for p in model.parameters())  # no gradients left behind
    other = gradcam_maps(model, images, targets=[1, 1])
    _check_maps(other, (28, 28))


@pytest.mark.parametrize("arch", [Architecture(module="pixel", pixel_prompt="frame", frame_width=4, init="uniform"),
                                  Architecture(module="none", adapter="conv", adapter_blocks="last_2", init="normal"),
                                  Architecture(module="none")])  # the head alone: the input still gets gradients
def test_gradcam_on_a_cnn(mobilenet, images, arch):
    pytest.importorskip("pytorch_grad_cam", reason="pip install grad-cam")
    torch.manual_seed(0)
    model = build_prompted_model(arch, mobilenet, 2).eval()
    with torch.no_grad():
        for p in model.inserts.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    maps = gradcam_maps(model, images)
    _check_maps(maps, (28, 28))
    assert not torch.allclose(maps[0], maps[1])
    assert maps.std() > 0  # not the uniform fallback


def test_pixel_prompt_as_an_image(mobilenet):
    model = build_prompted_model(Architecture(module="pixel", pixel_prompt="frame", frame_width=3, init="uniform"),
                                 mobilenet, 2)
    img = pixel_prompt_image(model)
    assert img.shape == (3, 32, 32) and img.min() >= 0 and img.max() <= 1
    assert torch.all(img[:, 3:-3, 3:-3] == 0.5)  # untouched inside the frame
    assert (img - 0.5).abs().amax() == 0.5  # scaled to its largest change


def test_explain_images_writes_overlays(tmp_path, vit, mobilenet, images):
    pytest.importorskip("pytorch_grad_cam", reason="pip install grad-cam")
    png = tmp_path / "case.png"
    Image.fromarray((images[0, 0].numpy() * 255).astype(np.uint8)).save(png)
    model = _token_lora(vit)
    records = explain_images(model, [png, images[1]], tmp_path / "vit", layers=(0, -1))
    assert [r["image"] for r in records] == ["case", "image1"]
    assert set(records[0]["maps"]) == {"attention_cls_block0", "attention_cls_block11", "attention_prompts_block0",
                                       "attention_prompts_block11", "gradcam"}
    json.dumps(records)
    for r in records:
        assert r["size"] == [28, 28] and abs(sum(r["probabilities"]) - 1) < 1e-4
        for f in r["maps"].values():
            with Image.open(tmp_path / "vit" / f) as im:
                assert im.size == (224, 224) and im.mode == "RGB"
    model = build_prompted_model(Architecture(module="pixel", frame_width=2), mobilenet, 2)
    model.bundle = type("Bundle", (), {"classes": ["malignant", "normal, benign"], "task": "binary-class"})()
    records = explain_images(model, [images[0, 0].numpy()], tmp_path / "cnn")
    assert set(records[0]["maps"]) == {"gradcam"} and records[0]["label"] in model.bundle.classes
    assert records[0]["pixel_prompt"] == "pixel_prompt.png" and (tmp_path / "cnn" / "pixel_prompt.png").is_file()


# --- the CLI and the API over export bundles ---------------------------------------------------------------
def test_explain_cli_maps_follow_the_image(tmp_path, vit, breast):
    """``promptsearch explain BUNDLE IMAGE... --out DIR``: per image its prediction (as predict reads
    it) and overlays; the maps (``--arrays``) are at the image's own size, finite, sum to 1 and change
    when the image changes."""
    pytest.importorskip("pytorch_grad_cam", reason="pip install grad-cam")
    from typer.testing import CliRunner

    from promptsearch.cli import app
    from promptsearch.export import read_images, write_bundle
    from promptsearch.space import load_space

    space = load_space("peft")
    cand = space.candidate(space.encode({"module": "token", "tokens": 5, "depth": "shallow", "lora_rank": 4,
                                         "lora_targets": "q+v", "lora_blocks": "last_4", "init": "xavier", "lr": 0.01}))
    torch.manual_seed(3)
    model = build_prompted_model(cand.arch, build_backbone(VIT), 2).eval()  # as load_exported builds it (seed 3)
    with torch.no_grad():
        for p in model.inserts.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    folder = write_bundle(tmp_path / "bundle", space=space, genome=cand.genome, weights=model.trainable_state_dict(),
                          backbone=VIT, task="binary-class", classes=breast.classes, input_channels=1, input_size=28,
                          metrics={}, seed=3)
    a, b = breast.test.images[0, 0].numpy(), breast.test.images[1, 0].numpy()
    paths = {"a": tmp_path / "a.png", "a_changed": tmp_path / "a_changed.png", "b_big": tmp_path / "b_big.png"}
    Image.fromarray(a).save(paths["a"])
    changed = a.copy()
    changed[:14] = 255 - changed[:14]  # the top half inverted
    Image.fromarray(changed).save(paths["a_changed"])
    Image.fromarray(b).resize((56, 48), Image.BILINEAR).save(paths["b_big"])  # another size, not square
    out = tmp_path / "maps"
    res = CliRunner().invoke(app, ["explain", str(folder), *map(str, paths.values()), "--out", str(out), "--arrays",
                                   "--layer", "0", "--layer", "-1", "--json"])
    assert res.exit_code == 0, res.output
    records = json.loads(res.stdout)
    assert records == json.loads((out / "explanations.json").read_text())
    expected = {"gradcam", "attention_cls_block0", "attention_cls_block11", "attention_prompts_block0",
                "attention_prompts_block11"}
    with torch.no_grad():  # the prediction is predict's: the image read at the bundle's input size
        probs = torch.softmax(model(read_images(list(paths.values()), 1, 28)), -1)
    arrays = {}
    for (key, path), rec, p in zip(paths.items(), records, probs):
        w, h = Image.open(path).size
        assert rec["file"] == str(path) and rec["size"] == [h, w] and rec["input_size"] == [28, 28]
        assert set(rec["maps"]) == expected and rec["label"] in breast.classes
        np.testing.assert_allclose(rec["probabilities"], p.numpy(), atol=1e-5)
        with np.load(out / rec["arrays"]) as z:
            arrays[key] = {k: z[k] for k in z.files}
        assert set(arrays[key]) == expected
        for m in arrays[key].values():
            assert m.shape == (h, w) and np.isfinite(m).all() and (m >= 0).all()
            assert abs(float(m.sum()) - 1) < 1e-4
        for f in rec["maps"].values():
            with Image.open(out / f) as im:
                assert im.mode == "RGB" and min(im.size) >= 224 and im.size[0] * h == im.size[1] * w
    for k in expected:  # another image, other maps
        assert not np.allclose(arrays["a"][k], arrays["a_changed"][k], atol=1e-6), k
    res = CliRunner().invoke(app, ["explain", str(folder), str(tmp_path / "nope.png"), "--out", str(out)])
    assert res.exit_code == 2 and "cannot read image" in res.output


def test_explanations_endpoint(tmp_path, data_root, mobilenet_weights):
    """GET /jobs/{id}/trials/{trial}/explanations: the trial's example maps as PNGs inline, built once;
    404/409/422 with reasons; behind the API token like every job endpoint."""
    pytest.importorskip("pytorch_grad_cam", reason="pip install grad-cam")
    import base64
    import io

    from fastapi.testclient import TestClient

    from promptsearch.service.app import create_app
    from promptsearch.service.settings import Settings

    ws, job_id = copy_old_workspace(tmp_path, data_root, mobilenet_weights)
    client = TestClient(create_app(Settings(workspace=ws, token="s3cret"), start_runner=False),
                        raise_server_exceptions=False)
    url = f"/jobs/{job_id}/trials/t0001/explanations"
    assert client.get(url).status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    r = client.get(url, params={"examples": 2}, headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["trial_id"] == "t0001" and body["module"] == "pixel" and body["map_names"] == ["gradcam"]
    assert len(body["examples"]) == 2 and {e["true_label"] for e in body["examples"]} == set(body["classes"])
    for e in body["examples"]:
        assert e["label"] in body["classes"] and abs(sum(e["probabilities"]) - 1) < 1e-4
        for png in [e["input"], *e["maps"].values()]:
            with Image.open(io.BytesIO(base64.b64decode(png["png_base64"]))) as im:
                assert im.format == "PNG" and im.size[0] >= 28
    assert body["pixel_prompt"]["png_base64"]
    cached = ws / "explanations" / job_id / "t0001" / "n2" / "config.json"
    assert cached.is_file()
    stamp = cached.stat().st_mtime_ns
    assert client.get(url, params={"examples": 2}, headers=auth).json() == body and cached.stat().st_mtime_ns == stamp
    assert client.get(f"/jobs/{job_id}/trials/t0009/explanations", headers=auth).status_code == 404
    assert client.get(f"/jobs/{job_id}/trials/t0002/explanations", headers=auth).status_code == 409  # preempted
    assert client.get(f"/jobs/{job_id}/trials/..%2Fx/explanations", headers=auth).status_code in (404, 422)
    assert client.get(url, params={"examples": 99}, headers=auth).status_code == 422
    assert client.get("/jobs/nope/trials/t0001/explanations", headers=auth).status_code == 404
