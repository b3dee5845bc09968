"""Adapters and LoRA: only they (and prompt + head) train, counted exactly, round-tripped exactly.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -m pytest tests/test_adapters.py -q
"""

from __future__ import annotations

import typing

import pytest
import torch
from safetensors.torch import load_file

from promptsearch.adapters import ADAPTER_KINDS, BLOCK_SETS, LORA_TARGETS, select_blocks
from promptsearch.backbones import BackboneSpec, build_backbone
from promptsearch.prompts import INSERTS, PROMPT_MODULES, IncompatibleCandidate, build_prompted_model
from promptsearch.space import BLOCKS_RE, AdapterKind, Architecture, LoraTarget, Module, load_space
from promptsearch.trial import Budget, run_trial

VIT = BackboneSpec("vit_tiny_patch16_224", image_size=28, patch_size=4)
D, HIDDEN_MLP = 192, 768  # vit_tiny: embed dim, MLP width


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return build_backbone(BackboneSpec("torchvision:mobilenet_v2", image_size=32))


def _no_hooks_left(module: torch.nn.Module) -> bool:
    return all(not m._forward_hooks for m in module.modules())


def _train_steps(model, x, steps=3):
    """A few real AdamW steps; returns the trainable state before them."""
    before = model.trainable_state_dict()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=0.05)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1] * (len(x) // 2)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before


def test_vocabulary_matches_adapter_registries():
    assert set(PROMPT_MODULES) == set(typing.get_args(Module))
    assert set(ADAPTER_KINDS) == set(typing.get_args(AdapterKind)) - {"none"}
    assert set(LORA_TARGETS) == set(typing.get_args(LoraTarget))
    assert set(INSERTS) == {"adapter", "lora"}
    assert all(BLOCKS_RE.match(name if name == "all" else f"{name}_2") for name in BLOCK_SETS)


@pytest.mark.parametrize("spec, n, expected", [("all", 4, [0, 1, 2, 3]), ("first_2", 12, [0, 1]),
                                               ("last_3", 12, [9, 10, 11]), ("every_4", 12, [0, 4, 8])])
def test_select_blocks(spec, n, expected):
    assert select_blocks(spec, n) == expected


# arch kwargs -> the exact insert and prompt parameter counts on vit_tiny (12 blocks, D = 192)
VIT_CASES = {
    "bottleneck_all": (dict(module="none", adapter="bottleneck", adapter_reduction=8),
                       {"adapter_params": 12 * (2 * D * 24 + 24 + D)}),
    "bottleneck_last_4": (dict(module="none", adapter="bottleneck", adapter_reduction=32, adapter_blocks="last_4"),
                          {"adapter_params": 4 * (2 * D * 6 + 6 + D)}),
    "lora_qv": (dict(module="none", lora_rank=4), {"lora_params": 12 * 2 * (4 * D + D * 4)}),
    "lora_qkvproj_every_3": (dict(module="none", lora_rank=2, lora_targets="q+k+v+proj", lora_blocks="every_3"),
                             {"lora_params": 4 * 4 * (2 * D + D * 2)}),
    "token_lora": (dict(module="token", tokens=5, lora_rank=4, lora_targets="k+v", lora_blocks="first_2"),
                   {"lora_params": 2 * 2 * (4 * D + D * 4), "token": 5 * D}),
    "token_adapter_lora_deep": (dict(module="token", tokens=2, depth="deep", adapter="bottleneck", adapter_reduction=64,
                                     adapter_blocks="last_2", lora_rank=1, lora_targets="proj"),
                                {"adapter_params": 2 * (2 * D * 3 + 3 + D), "lora_params": 12 * (D + D),
                                 "token": 12 * 2 * D}),
}


@pytest.mark.parametrize("case", sorted(VIT_CASES))
def test_vit_inserts_train_alone_count_exactly_and_round_trip(vit, case):
    kwargs, expected = VIT_CASES[case]
    arch = Architecture(init="normal", **kwargs)
    torch.manual_seed(0)
    model = build_prompted_model(arch, vit, 2)
    x = torch.rand(4, 1, 28, 28)
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    assert all(not k.startswith("backbone.") for k in model.trainable_state_dict())
    before = _train_steps(model, x)
    after = model.trainable_state_dict()
    # the backbone is bit-identical after real optimizer steps; every insert tensor moved
    assert all(torch.equal(frozen[k], v) for k, v in model.backbone.state_dict().items())
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert all(not torch.equal(before[k], after[k]) for k in after if k.startswith("inserts."))
    assert _no_hooks_left(model.backbone)  # hooks live only inside a forward pass
    # exact counts
    cost = model.cost()
    token = expected.get("token", 0)
    inserts = sum(v for k, v in expected.items() if k.endswith("_params"))
    assert {k: cost[k] for k in expected if k.endswith("_params")} == {k: v for k, v in expected.items() if k != "token"}
    assert cost["prompt_params"] == token + inserts
    assert cost["trainable_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert cost["trainable_params"] == sum(v.numel() for v in after.values())
    assert cost["backbone_params"] == sum(p.numel() for p in vit.model.parameters())
    # round trip into a fresh model (other seed): identical outputs
    torch.manual_seed(1)
    fresh = build_prompted_model(arch, vit, 2).eval()
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(x), fresh(x))
        fresh.load_trainable_state_dict(after)
        assert torch.equal(model(x), fresh(x))


def test_inserts_start_as_the_identity_and_leave_a_shared_backbone_stock(vit):
    x = torch.rand(3, 1, 28, 28)
    plain = build_prompted_model(Architecture(module="none"), vit, 2).eval()
    stock = vit.model(plain.preprocess(x)).detach()
    for kwargs in (dict(adapter="bottleneck"), dict(lora_rank=4, lora_targets="q+k+v+proj")):
        for init in ("xavier", "zero"):
            model = build_prompted_model(Architecture(module="none", init=init, **kwargs), vit, 2).eval()
            with torch.no_grad():
                assert torch.allclose(model.features(x), stock, atol=1e-6)  # up/B (or down/A) is zero
    # a trained insert changes its own model only: the shared backbone object stays stock
    model = build_prompted_model(Architecture(module="none", lora_rank=4), vit, 2).eval()
    _train_steps(model, torch.rand(4, 1, 28, 28))
    with torch.no_grad():
        assert not torch.allclose(model.eval().features(x), stock, atol=1e-4)
        assert torch.equal(vit.model(plain.preprocess(x)), stock)
        assert torch.equal(plain.features(x), stock)


@pytest.mark.parametrize("init", ["normal", "xavier", "uniform", "zero"])
def test_init_decision_applies_to_the_input_side_factor(vit, init):
    model = build_prompted_model(Architecture(module="none", adapter="bottleneck", lora_rank=4, init=init), vit, 2)
    lora = model.inserts["lora"].sites["blocks_0_attn_qkv"]
    adapter = model.inserts["adapter"].sites["blocks_0_mlp"]
    for down, up in ((lora.A["q"], lora.B["q"]), (adapter.down.weight, adapter.up.weight)):
        if init == "zero":
            assert down.abs().sum() == 0 and up.abs().sum() > 0  # swapped: both zero would never train
            continue
        assert up.abs().sum() == 0 and down.abs().sum() > 0
        bound = {"uniform": 0.1, "xavier": (6 / (down.shape[0] + down.shape[1])) ** 0.5}.get(init)
        if bound:
            assert down.abs().max() <= bound
        else:
            assert abs(down.std().item() - 0.02) < 0.003
    # gradients reach every insert factor once the zero factor has moved (one step)
    _train_steps(model, torch.rand(4, 1, 28, 28), steps=1)
    model.zero_grad()
    model(torch.rand(4, 1, 28, 28)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.inserts.parameters())


def test_lora_on_q_touches_only_the_q_slice_of_timms_fused_qkv(vit):
    model = build_prompted_model(Architecture(module="none", lora_rank=3, lora_targets="q", lora_blocks="first_1"),
                                 vit, 2).eval()
    with torch.no_grad():
        model.inserts["lora"].sites["blocks_0_attn_qkv"].B["q"].normal_()
    qkv = vit.model.blocks[0].attn.qkv
    seen = {}
    h = qkv.register_forward_hook(lambda m, a, out: seen.update(inp=a[0], out=out))  # runs after LoRA's hook
    with torch.no_grad():
        model(torch.rand(2, 1, 28, 28))
        h.remove()
        delta = seen["out"] - qkv(seen["inp"])  # (B, N, 3 * D)
    assert delta[..., :D].abs().amax() > 1e-3
    assert delta[..., D:].abs().amax() == 0  # k and v untouched


def test_conv_adapters_on_cnn_stages(cnn):
    arch = Architecture(module="none", adapter="conv", adapter_reduction=4, adapter_blocks="last_3", init="normal")
    model = build_prompted_model(arch, cnn, 2)
    assert model.inserts["adapter"].paths == ["features.16", "features.17", "features.18"]
    widths = [160, 320, 1280]  # MobileNetV2's last stage widths
    assert model.cost()["adapter_params"] == sum(2 * c * (c // 4) + c // 4 + c for c in widths)
    x = torch.rand(4, 1, 28, 28)
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}  # BN running stats included
    before = _train_steps(model, x)
    assert all(torch.equal(frozen[k], v) for k, v in model.backbone.state_dict().items())
    after = model.trainable_state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in after)
    torch.manual_seed(5)
    fresh = build_prompted_model(arch, cnn, 2).eval()
    fresh.load_trainable_state_dict(after)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), fresh(x))
    # with pixel prompts too, and on a timm EfficientNet (blocks[i]) and a ResNet (layer1..4)
    both = build_prompted_model(Architecture(module="pixel", frame_width=2, adapter="conv"), cnn, 2)
    assert both.cost()["prompt_params"] == both.cost()["prompt_pixels"] * 3 + both.cost()["adapter_params"]
    for name, paths in (("tf_efficientnet_lite0", [f"blocks.{i}" for i in range(7)]),
                        ("resnet18", ["layer1", "layer2", "layer3", "layer4"])):
        m = build_prompted_model(Architecture(module="none", adapter="conv"), build_backbone(BackboneSpec(name, image_size=32)), 2)
        assert m.inserts["adapter"].paths == paths
        assert m(torch.rand(2, 3, 32, 32)).shape == (2, 2)


def test_incompatible_inserts_are_rejected_clearly(vit, cnn):
    for arch, backbone, match in [
        (Architecture(module="none", adapter="conv"), vit, "conv adapters go after CNN stages"),
        (Architecture(module="none", adapter="bottleneck"), cnn, "bottleneck needs a timm VisionTransformer"),
        (Architecture(module="pixel", lora_rank=4), cnn, "LoRA needs a timm VisionTransformer"),
        (Architecture(module="none", lora_rank=4, lora_blocks="last_13"), vit, "needs 13 blocks"),
        (Architecture(module="none", adapter="conv", adapter_blocks="first_20"), cnn, "needs 20 blocks or stages"),
    ]:
        with pytest.raises(IncompatibleCandidate, match=match):
            build_prompted_model(arch, backbone, 2)


def test_peft_trials_run_through_run_trial(breast, mobilenet_weights, tmp_path):
    space = load_space("peft")
    budget = Budget(epochs=1, max_train_samples=64, max_eval_samples=64, threads=1, latency_repeats=1)
    token_lora = space.candidate(space.encode({"module": "token", "tokens": 5, "depth": "shallow", "lora_rank": 4,
                                               "lora_targets": "q+v", "lora_blocks": "last_4", "init": "xavier",
                                               "lr": 0.01}))
    r = run_trial(token_lora, breast, VIT, budget, seed=0, weights_out=tmp_path / "a.safetensors")
    assert r.status == "completed", r.reason
    assert r.metrics["lora_params"] == 4 * 2 * (4 * D + D * 4)
    assert r.metrics["prompt_params"] == 5 * D + r.metrics["lora_params"]
    saved = load_file(str(tmp_path / "a.safetensors"))
    assert sum(v.numel() for v in saved.values()) == r.metrics["trainable_params"]
    conv = space.candidate(space.encode({"module": "none", "adapter": "conv", "adapter_reduction": 8,
                                         "adapter_blocks": "last_4", "lora_rank": 0, "init": "xavier", "lr": 0.003}))
    spec = BackboneSpec("torchvision:mobilenet_v2", image_size=32, weights=str(mobilenet_weights))
    r = run_trial(conv, breast, spec, budget, seed=0, weights_out=tmp_path / "b.safetensors")
    assert r.status == "completed", r.reason
    assert r.metrics["adapter_params"] == sum(2 * c * (c // 8) + c // 8 + c for c in (160, 160, 320, 1280))
    assert 0 <= r.metrics["auc"] <= 1 and "prompt_pixels" not in r.metrics
    saved = load_file(str(tmp_path / "b.safetensors"))
    assert sum(v.numel() for v in saved.values()) == r.metrics["trainable_params"]
    # the wrong backbone for a candidate is a failed trial with the reason
    r = run_trial(token_lora, breast, spec, budget)
    assert r.status == "failed" and "token prompts need a timm VisionTransformer" in r.reason


def test_adapters_and_prompts_import_one_way():
    """prompts -> adapters -> prompt_parts: adapters imports nothing of prompts (no import cycle), and
    the shared pieces are the same objects wherever they are imported from."""
    import ast

    import promptsearch.adapters as adapters
    import promptsearch.prompt_parts as parts
    import promptsearch.prompts as prompts

    def imported(mod):
        tree = ast.parse(open(mod.__file__).read())
        return {("." * n.level) + (n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
            {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}

    assert ".prompts" not in imported(adapters) and "promptsearch.prompts" not in imported(adapters)
    assert not {".prompts", ".adapters"} & imported(parts)
    assert prompts.INSERTS is parts.INSERTS is adapters.INSERTS and prompts.INITS is parts.INITS
    assert prompts.IncompatibleCandidate is parts.IncompatibleCandidate is adapters.IncompatibleCandidate
    assert set(prompts.INSERTS) == {"adapter", "lora"}
