"""Prompted models: every fusion x placement x depth runs, trains only prompts + head, counts exactly.

    python -m pytest tests/test_prompts.py -q
"""

from __future__ import annotations

import itertools

import pytest
import torch
from safetensors.torch import save_file

from promptsearch.backbones import BackboneSpec, build_backbone
from promptsearch.prompts import FUSIONS, PLACEMENTS, IncompatibleCandidate, build_prompted_model
from promptsearch.space import Architecture

VIT = BackboneSpec("vit_tiny_patch16_224", image_size=28, patch_size=4)
COMPONENTS = {"anatomical": ("lung", "heart"), "modality": ("xray",)}  # n = 3 blocks


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return build_backbone(BackboneSpec("torchvision:mobilenet_v2", image_size=32))


def _check_training_reaches_only_prompt_and_head(model, x):
    model.train()
    assert not model.backbone.training  # frozen backbone stays in eval mode
    model.zero_grad()
    out = model(x)
    out.sum().backward()
    for name, p in model.named_parameters():
        if name.startswith("backbone."):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.requires_grad, name
    prompt_grads = [p.grad for p in model.prompt_parameters()]
    assert all(g is not None for g in prompt_grads)
    assert any(g.abs().sum() > 0 for g in prompt_grads)
    assert model.head.weight.grad.abs().sum() > 0
    return out


@pytest.mark.parametrize("fusion, placement, depth",
                         list(itertools.product(sorted(FUSIONS), sorted(PLACEMENTS), ["shallow", "first_3", "deep"])))
def test_token_prompts_every_fusion_placement_depth(vit, fusion, placement, depth):
    arch = Architecture(module="token", components=COMPONENTS, tokens=4, fusion=fusion, placement=placement,
                        depth=depth, init="normal")
    model = build_prompted_model(arch, vit, num_outputs=5)
    x = torch.rand(2, 1, 28, 28)
    out = _check_training_reaches_only_prompt_and_head(model, x)
    assert out.shape == (2, 5)
    P = 3 * 4 if fusion == "concat" else 4
    layers = {"shallow": 1, "first_3": 3, "deep": 12}[depth]
    D = vit.model.embed_dim
    extra = {"concat": 0, "attention": layers * 4 * D, "gate": layers * 3}[fusion]
    cost = model.cost()
    assert cost["prompt_tokens"] == P and cost["prompted_layers"] == layers
    assert cost["prompt_params"] == layers * 3 * 4 * D + extra  # exact
    assert cost["head_params"] == D * 5 + 5
    assert cost["trainable_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
def test_prompts_change_the_output_and_are_stripped(vit, placement):
    arch = Architecture(module="token", tokens=5, placement=placement, init="normal")
    model = build_prompted_model(arch, vit, num_outputs=2).eval()
    x = torch.rand(3, 1, 28, 28)
    seen = {}

    def grab(module, inputs, output):
        seen["norm"] = output.shape

    h = model.backbone.norm.register_forward_hook(grab)
    with torch.no_grad():
        a = model(x)
        model.prompt.blocks.add_(torch.randn_like(model.prompt.blocks))  # (a constant would vanish in LayerNorm)
        b = model(x)
    h.remove()
    n = model.backbone.patch_embed.num_patches + model.backbone.num_prefix_tokens
    assert seen["norm"][1] == (n if placement == "replace" else n + 5)  # prompts inside the blocks
    assert not torch.allclose(a, b)  # the prompt matters


def test_prompts_go_after_all_prefix_tokens():
    bb = build_backbone(BackboneSpec("vit_tiny_patch16_224", image_size=28, patch_size=4, kwargs={"reg_tokens": 4}))
    assert bb.model.num_prefix_tokens == 5
    model = build_prompted_model(Architecture(module="token", tokens=3), bb, 2)
    assert model.start == 5  # after cls + 4 register tokens, not a hard-coded 1
    _check_training_reaches_only_prompt_and_head(model, torch.rand(2, 3, 28, 28))


def test_vpt_without_components_is_one_block_with_dropout(vit):
    arch = Architecture(module="token", tokens=10, depth="deep", dropout=0.1)
    model = build_prompted_model(arch, vit, 2)
    assert model.cost()["prompt_params"] == 12 * 10 * vit.model.embed_dim
    assert model.cost()["prompt_tokens"] == 10


@pytest.mark.parametrize("fusion, pixel_prompt", list(itertools.product(sorted(FUSIONS), ["frame", "overlay"])))
def test_pixel_prompts_on_a_cnn(cnn, fusion, pixel_prompt):
    arch = Architecture(module="pixel", components=COMPONENTS, pixel_prompt=pixel_prompt, frame_width=3,
                        fusion=fusion, init="uniform")
    model = build_prompted_model(arch, cnn, num_outputs=3)
    out = _check_training_reaches_only_prompt_and_head(model, torch.rand(2, 1, 28, 28))
    assert out.shape == (2, 3)
    S = 32
    R = S * S - (S - 6) ** 2 if pixel_prompt == "frame" else S * S
    expected = {"concat": 3 * R, "gate": 3 * 3 * R + 3, "attention": 3 * 3 * R + 3 * 3 + 3}[fusion]
    cost = model.cost()
    assert cost["prompt_pixels"] == R
    assert cost["prompt_params"] == expected
    assert cost["head_params"] == 1280 * 3 + 3


def test_pixel_prompt_touches_only_the_frame(cnn):
    arch = Architecture(module="pixel", pixel_prompt="frame", frame_width=2, init="uniform")
    model = build_prompted_model(arch, cnn, 2)
    x = torch.zeros(1, 3, 32, 32)
    delta = model.prompt(x) - x  # (1, 3, S, S)
    inner = delta[..., 2:-2, 2:-2]
    assert inner.abs().sum() == 0
    assert (delta[..., :2, :].abs() > 0).float().mean() > 0.99


def test_pixel_prompts_on_a_vit(vit):
    arch = Architecture(module="pixel", pixel_prompt="frame", frame_width=2, fusion="gate",
                        components={"modality": ("ct", "mri")})
    model = build_prompted_model(arch, vit, 2)
    _check_training_reaches_only_prompt_and_head(model, torch.rand(2, 1, 28, 28))


def test_token_prompts_on_a_cnn_are_rejected_clearly(cnn):
    with pytest.raises(IncompatibleCandidate, match="token prompts need a timm VisionTransformer"):
        build_prompted_model(Architecture(module="token"), cnn, 2)


def test_impossible_candidates_are_rejected(vit, cnn):
    with pytest.raises(IncompatibleCandidate, match="depth first_20 needs 20 blocks"):
        build_prompted_model(Architecture(module="token", depth="first_20"), vit, 2)
    with pytest.raises(IncompatibleCandidate, match="replace placement"):
        build_prompted_model(Architecture(module="token", tokens=60, placement="replace"), vit, 2)
    with pytest.raises(IncompatibleCandidate, match="frame width 16"):
        build_prompted_model(Architecture(module="pixel", frame_width=16), cnn, 2)


def test_timm_cnn_takes_pixel_prompts():
    bb = build_backbone(BackboneSpec("resnet18", image_size=32))
    assert not bb.is_vit
    model = build_prompted_model(Architecture(module="pixel", pixel_prompt="overlay"), bb, 2)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 2)


def test_local_weights_load_and_bad_files_fail_clearly(tmp_path, mobilenet_weights):
    real = build_backbone(BackboneSpec("torchvision:mobilenet_v2", image_size=32, weights=str(mobilenet_weights)))
    torch.manual_seed(0)
    rand = build_backbone(BackboneSpec("torchvision:mobilenet_v2", image_size=32))
    w_real = dict(real.model.named_parameters())["features.0.0.weight"]
    w_rand = dict(rand.model.named_parameters())["features.0.0.weight"]
    assert not torch.allclose(w_real, w_rand)
    state = torch.load(mobilenet_weights, weights_only=True)
    assert torch.equal(w_real, state["features.0.0.weight"])
    # a ViT saved as safetensors loads back exactly, even at another image size (pos-embed resampled)
    torch.manual_seed(1)
    vit = build_backbone(VIT).model
    f = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(f))
    again = build_backbone(BackboneSpec("vit_tiny_patch16_224", image_size=28, patch_size=4, weights=str(f))).model
    assert all(torch.equal(a, b) for a, b in zip(vit.state_dict().values(), again.state_dict().values()))
    bigger = build_backbone(BackboneSpec("vit_tiny_patch16_224", image_size=56, patch_size=4, weights=str(f))).model
    assert bigger.pos_embed.shape[1] == 14 * 14 + 1
    with pytest.raises(ValueError, match="does not match the backbone|shapes differ"):
        build_backbone(BackboneSpec("vit_small_patch16_224", image_size=28, patch_size=4, weights=str(f)))
    with pytest.raises(FileNotFoundError, match="not found"):
        build_backbone(BackboneSpec("torchvision:mobilenet_v2", weights=str(tmp_path / "nope.pth")))


def test_trainable_state_round_trip(cnn):
    arch = Architecture(module="pixel", components=COMPONENTS, fusion="attention")
    torch.manual_seed(0)
    a = build_prompted_model(arch, cnn, 2)
    torch.manual_seed(1)
    b = build_prompted_model(arch, cnn, 2)
    x = torch.rand(2, 1, 28, 28)
    a.eval(), b.eval()
    assert not torch.allclose(a(x), b(x))
    state = a.trainable_state_dict()
    assert all(not k.startswith("backbone.") for k in state)
    b.load_trainable_state_dict(state)
    assert torch.equal(a(x), b(x))
    with pytest.raises(ValueError, match="do not match"):
        b.load_trainable_state_dict({k: v for k, v in list(state.items())[1:]})


def test_candidates_without_inserts_keep_their_weight_names(vit, cnn):
    """Bundles exported before adapters existed still load: no inserts, only prompt.* and head.*."""
    for arch, backbone in ((Architecture(module="token", components=COMPONENTS, fusion="gate"), vit),
                           (Architecture(module="pixel", fusion="attention", components=COMPONENTS), cnn)):
        model = build_prompted_model(arch, backbone, 2)
        assert len(model.inserts) == 0
        assert all(k.split(".")[0] in ("prompt", "head") for k in model.trainable_state_dict())
        assert not {"adapter_params", "lora_params"} & set(model.cost())


@pytest.mark.parametrize("backbone", ["vit", "cnn"])
def test_module_none_trains_the_head_alone(request, backbone):
    bb = request.getfixturevalue(backbone)
    model = build_prompted_model(Architecture(module="none"), bb, 3)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model.features(x), bb.model(model.preprocess(x)))  # the stock backbone, untouched
    cost = model.cost()
    assert cost["prompt_params"] == 0 and cost["trainable_params"] == cost["head_params"] == bb.num_features * 3 + 3
    assert set(model.trainable_state_dict()) == {"head.weight", "head.bias"}
