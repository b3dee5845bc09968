"""One real trial: train prompts on a frozen backbone on BreastMNIST, evaluate, report objectives.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -m pytest tests/test_trial.py -q
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from promptsearch.backbones import BackboneSpec
from promptsearch.space import load_space
from promptsearch.trial import Budget, TrialResult, run_trial

PIXEL = {"module": "pixel", "pixel_prompt": "frame", "frame_width": 8, "fusion": "concat", "init": "zero",
         "lr": 0.01, "components": {"modality": ["ultrasound"]}}
VIT = BackboneSpec("vit_tiny_patch16_224", image_size=28, patch_size=4)


def _mobilenet(weights, size=64):
    return BackboneSpec("torchvision:mobilenet_v2", image_size=size, weights=str(weights))


@pytest.mark.slow
def test_real_trial_pretrained_mobilenet_beats_random_backbone_level(breast, mobilenet_weights, tmp_path):
    space = load_space("pixel")
    cand = space.candidate(space.encode(PIXEL))
    epochs = []
    r = run_trial(cand, breast, _mobilenet(mobilenet_weights), Budget(epochs=4), seed=0,
                  on_epoch=lambda e, m: epochs.append((e, m)), weights_out=tmp_path / "w.safetensors")
    assert r.status == "completed", r.reason
    assert r.metrics["auc"] >= 0.80, r.metrics  # a random frozen backbone gets ~.65
    assert set(r.metrics) >= {"auc", "accuracy", "balanced_accuracy", "worst_class_recall", "prompt_params",
                              "trainable_params", "latency_ms"}
    assert 0 <= r.metrics["worst_class_recall"] <= r.metrics["balanced_accuracy"] <= 1
    assert r.metrics["prompt_params"] == 3 * (64 * 64 - 48 * 48)
    assert r.metrics["latency_ms"] > 0
    assert set(r.test_metrics) == {"auc", "accuracy", "balanced_accuracy", "worst_class_recall"}
    assert r.test_metrics["auc"] > 0.7 and r.test_metrics != {k: r.metrics[k] for k in r.test_metrics}
    assert [e for e, _ in epochs] == [1, 2, 3, 4] and len(r.history) == 4
    assert r.steps == 4 * math.ceil(546 / 32)
    saved = load_file(str(tmp_path / "w.safetensors"))
    assert sum(v.numel() for v in saved.values()) == r.metrics["trainable_params"]
    assert TrialResult.model_validate_json(r.model_dump_json()) == r


def test_vit_token_trial_and_same_seed_same_numbers(breast):
    space = load_space("medical")
    cand = space.candidate(space.encode({"module": "token", "tokens": 4, "depth": "deep", "placement": "prepend",
                                         "fusion": "gate", "init": "xavier", "lr": 0.01,
                                         "components": {"anatomical": ["lung"], "modality": ["xray"]}}))
    budget = Budget(epochs=2, max_train_samples=96, max_eval_samples=64, threads=2)
    a = run_trial(cand, breast, VIT, budget, seed=3)
    b = run_trial(cand, breast, VIT, budget, seed=3)
    c = run_trial(cand, breast, VIT, budget, seed=4)
    assert a.status == "completed", a.reason
    assert a.metrics["prompt_tokens"] == 4 and a.metrics["prompted_layers"] == 12
    timing = {"latency_ms"}
    assert {k: v for k, v in a.metrics.items() if k not in timing} == {k: v for k, v in b.metrics.items() if k not in timing}
    assert a.history == b.history and a.test_metrics == b.test_metrics
    assert a.history != c.history


def test_incompatible_candidate_is_a_failed_trial_not_an_exception(breast, mobilenet_weights):
    space = load_space("medical")
    cand = space.candidate(space.encode({"module": "token", "components": {"modality": ["xray"]}}))
    r = run_trial(cand, breast, _mobilenet(mobilenet_weights, 32), Budget(epochs=1, max_train_samples=32))
    assert r.status == "failed" and "token prompts need a timm VisionTransformer" in r.reason
    assert not r.ok


def test_nan_training_ends_as_failed_with_the_reason(breast, mobilenet_weights, tmp_path):
    state = torch.load(mobilenet_weights, weights_only=True)
    state["features.0.0.weight"][0, 0, 0, 0] = float("nan")  # a corrupt weights file: a real NaN source
    bad = tmp_path / "nan.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(bad))
    space = load_space("pixel")
    cand = space.candidate(space.encode(PIXEL))
    r = run_trial(cand, breast, BackboneSpec("torchvision:mobilenet_v2", image_size=32, weights=str(bad)),
                  Budget(epochs=2, max_train_samples=64))
    assert r.status == "failed"
    assert "non-finite loss" in r.reason and "epoch 1, step 1" in r.reason


def test_divergence_guard(breast):
    space = load_space("vpt")
    cand = space.sample(0)
    r = run_trial(cand, breast, VIT, Budget(epochs=1, max_train_samples=32, diverge_loss=1e-6))
    assert r.status == "failed" and r.reason.startswith("TrialFailed: diverged")


def test_cli_trial_json(data_root):
    env = {**os.environ, "PROMPTSEARCH_DATA_ROOT": str(data_root)}
    cand = json.dumps({"architecture": {"module": "token", "tokens": 5, "depth": "shallow", "dropout": 0.0,
                                        "init": "xavier", "lr": 0.01}})
    out = subprocess.run([sys.executable, "-m", "promptsearch.cli", "trial", "--space", "vpt", "--dataset",
                          "breastmnist", "--backbone", "vit_tiny_patch16_224", "--image-size", "28", "--patch-size",
                          "4", "--epochs", "1", "--max-train-samples", "64", "--candidate", cand, "--json"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["status"] == "completed"
    assert res["prompt_params"] == 5 * 192 and 0 <= res["auc"] <= 1
    assert res["candidate"]["architecture"]["tokens"] == 5
    assert set(res["test"]) >= {"auc", "worst_class_recall"}


def test_cli_errors_are_clear(tmp_path, data_root):
    env = {**os.environ, "PROMPTSEARCH_DATA_ROOT": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "promptsearch.cli", "trial", "--dataset", "breastmnist"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and "breastmnist.npz not found" in out.stderr and "Traceback" not in out.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndecisions:\n  fusion:\n    choices: []\n")
    out = subprocess.run([sys.executable, "-m", "promptsearch.cli", "space", "validate", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "bad.yaml:4: decisions.fusion.choices: Tuple should have at least 1 item" in out.stderr


def test_prompt_bytes_is_the_size_an_export_writes(breast, mobilenet_weights, tmp_path):
    """``prompt_bytes`` (an objective a job may list) is the exported prompts.safetensors's size,
    for the job's ``budget.compress``; compressed prompts weigh less."""
    from promptsearch.export import write_trial_bundle
    from promptsearch.objectives import parse_objectives

    assert parse_objectives(["auc", "prompt_bytes"])[1].direction == "min"
    space = load_space("pixel")
    cand = space.candidate(space.encode({**PIXEL, "pixel_prompt": "overlay"}))
    sizes = {}
    for spec in ("none", "int8"):
        budget = Budget(epochs=1, max_train_samples=64, threads=1, latency_repeats=2, compress=spec)
        r = run_trial(cand, breast, _mobilenet(mobilenet_weights, 32), budget, seed=0,
                      weights_out=tmp_path / f"{spec}.safetensors")
        assert r.status == "completed", r.reason
        out = write_trial_bundle(tmp_path / spec, candidate=cand, result=r, data=breast,
                                 backbone=_mobilenet(mobilenet_weights, 32), weights=tmp_path / f"{spec}.safetensors",
                                 budget=budget, compress=spec)
        assert r.metrics["prompt_bytes"] == (out / "prompts.safetensors").stat().st_size
        sizes[spec] = r.metrics["prompt_bytes"]
    assert sizes["int8"] < sizes["none"]
    with pytest.raises(ValueError):
        Budget(compress="zip")
