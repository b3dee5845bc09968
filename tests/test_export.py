"""Export bundles: a real short trial (MobileNetV2 + pixel prompt on BreastMNIST) bundled, loaded back,
and checked to reproduce its recorded metrics; ``promptsearch predict`` on PNGs made from MedMNIST arrays.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -m pytest tests/test_export.py -q
"""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import promptsearch
from promptsearch.cli import app
from promptsearch.export import ExportError, load_config, write_trial_bundle
from promptsearch.backbones import BackboneSpec
from promptsearch.space import load_space
from promptsearch.trial import Budget, evaluate, run_trial

BUDGET = Budget(epochs=1, batch_size=32, max_train_samples=96, latency_repeats=2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, breast, mobilenet_weights):
    """One real trial with its prompt+head weights saved, then bundled (folder and zip)."""
    tmp = tmp_path_factory.mktemp("export")
    space = load_space("pixel")
    cand = space.sample(3)
    spec = BackboneSpec("torchvision:mobilenet_v2", image_size=32, weights=str(mobilenet_weights))
    result = run_trial(cand, breast, spec, BUDGET, seed=1, weights_out=tmp / "trial.safetensors")
    assert result.status == "completed", result.reason
    folder = write_trial_bundle(tmp / "bundle", candidate=cand, result=result, data=breast, backbone=spec,
                                weights=tmp / "trial.safetensors", budget=BUDGET,
                                objectives=["auc", "prompt_params"], origin={"job_id": "j1", "trial_id": "t0"},
                                zip_path=tmp / "bundle.zip")
    return tmp, cand, result, folder


@pytest.mark.slow
@pytest.mark.parametrize("form", ["folder", "zip"])
def test_round_trip_reproduces_recorded_metrics(trained, breast, form):
    tmp, cand, result, folder = trained
    model = promptsearch.load_exported(folder if form == "folder" else tmp / "bundle.zip")
    val = evaluate(model, breast.val.subset(BUDGET.max_eval_samples, 0), breast.task, BUDGET.eval_batch_size)
    test = evaluate(model, breast.test.subset(BUDGET.max_eval_samples, 0), breast.task, BUDGET.eval_batch_size)
    for k in ("auc", "accuracy", "balanced_accuracy", "worst_class_recall"):
        assert val[k] == pytest.approx(result.metrics[k], abs=1e-6), k
        assert test[k] == pytest.approx(result.test_metrics[k], abs=1e-6), k
    assert model.cost()["prompt_params"] == result.metrics["prompt_params"]
    assert model.arch == cand.arch and not model.training


@pytest.mark.slow
def test_bundle_contents(trained, mobilenet_weights):
    tmp, cand, result, folder = trained
    assert sorted(p.name for p in folder.iterdir()) == ["MODEL_CARD.md", "config.json", "prompts.safetensors"]
    with zipfile.ZipFile(tmp / "bundle.zip") as z:
        assert sorted(z.namelist()) == ["MODEL_CARD.md", "config.json", "prompts.safetensors"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["space"]["name"] == "pixel" and cfg["space"]["hash"] == cand.space.hash
    assert cfg["genome"] == list(cand.genome) and cfg["architecture"] == json.loads(json.dumps(cand.architecture))
    assert cfg["backbone"]["weights_sha256"] == "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
    assert "mobilenet_v2-b0353104.pth" in cfg["backbone"]["obtain"]  # how to obtain: the torchvision URL
    assert cfg["input"] == {"channels": 1, "size": 28} and cfg["task"] == "binary-class"
    assert cfg["recipe"]["seed"] == 1 and cfg["recipe"]["budget"]["max_train_samples"] == 96
    assert cfg["metrics"]["validation"]["auc"] == result.metrics["auc"]
    assert cfg["metrics"]["test"]["auc"] == result.test_metrics["auc"]
    assert cfg["dataset"]["name"] == "breastmnist" and cfg["origin"]["trial_id"] == "t0"
    assert [o["name"] for o in cfg["objectives"]] == ["auc", "prompt_params"]
    # prompt, fusion and head only: no backbone tensor, and far smaller than the backbone file
    from safetensors.torch import load_file

    state = load_file(str(folder / "prompts.safetensors"))
    assert all(k.startswith(("prompt.", "head.")) for k in state), sorted(state)
    assert sum(v.numel() for v in state.values()) == result.metrics["trainable_params"]
    assert (folder / "prompts.safetensors").stat().st_size < mobilenet_weights.stat().st_size / 50
    card = (folder / "MODEL_CARD.md").read_text()
    assert "not a\n  medical device" in card or "not a medical device" in card.replace("\n  ", " ")
    assert f"{result.metrics['auc']:.4g}" in card and "breastmnist" in card


@pytest.mark.slow
def test_backbone_weights_elsewhere(trained, tmp_path, mobilenet_weights, breast):
    tmp, cand, result, folder = trained
    # the recorded backbone path is gone on "another machine": a clear error, then backbone_weights= works
    moved = tmp_path / "bundle"
    shutil.copytree(folder, moved)
    cfg = json.loads((moved / "config.json").read_text())
    cfg["backbone"]["weights"] = str(tmp_path / "nowhere" / "mobilenet_v2-b0353104.pth")
    (moved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportError, match="backbone_weights=PATH"):
        promptsearch.load_exported(moved)
    local = tmp_path / "mnv2.pth"
    shutil.copy(mobilenet_weights, local)
    model = promptsearch.load_exported(moved, backbone_weights=local)
    val = evaluate(model, breast.val, breast.task)
    assert val["auc"] == pytest.approx(result.metrics["auc"], abs=1e-6)
    # weights that are not the ones it was trained with are refused
    bad = tmp_path / "bad.pth"
    state = torch.load(local, weights_only=True)
    state["features.0.0.weight"] = state["features.0.0.weight"] * 1.01
    torch.save(state, bad)
    with pytest.raises(ExportError, match="differ"):
        promptsearch.load_exported(moved, backbone_weights=bad)


@pytest.mark.slow
def test_tampered_or_missing_bundle(trained, tmp_path):
    tmp, cand, result, folder = trained
    broken = tmp_path / "b"
    shutil.copytree(folder, broken)
    blob = bytearray((broken / "prompts.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (broken / "prompts.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ExportError, match="sha256"):
        promptsearch.load_exported(broken)
    with pytest.raises(ExportError, match="not a promptsearch bundle"):
        promptsearch.load_exported(tmp_path)
    assert load_config(folder).candidate_key == cand.key


@pytest.mark.slow
def test_predict_cli_on_pngs(trained, breast, tmp_path):
    tmp, cand, result, folder = trained
    imgs = breast.val.images[:4]  # (4, 1, 28, 28) uint8: real BreastMNIST validation images
    paths = []
    for i, im in enumerate(imgs):
        p = tmp_path / f"val{i}.png"
        Image.fromarray(im[0].numpy()).save(p)
        paths.append(p)
    jpg = tmp_path / "val0.jpg"
    Image.fromarray(imgs[0, 0].numpy()).convert("RGB").resize((112, 112)).save(jpg, quality=95)
    res = CliRunner().invoke(app, ["predict", str(folder), *map(str, paths), str(jpg), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    model = promptsearch.load_exported(folder)
    with torch.no_grad():
        expected = torch.softmax(model(imgs.float() / 255.0), -1).numpy()  # (4, 2)
    classes = model.bundle.classes
    for i, p in enumerate(paths):
        got = np.array([out[str(p)][c] for c in classes])
        np.testing.assert_allclose(got, expected[i], atol=1e-6)
    assert sum(out[str(jpg)].values()) == pytest.approx(1.0)  # a JPEG of another size and mode works too
    # the table form names the classes; a missing image is a clear error, not a stack trace
    res = CliRunner().invoke(app, ["predict", str(folder), str(paths[0])])
    assert res.exit_code == 0 and "predicted" in res.stdout
    res = CliRunner().invoke(app, ["predict", str(folder), str(tmp_path / "missing.png")])
    assert res.exit_code == 2 and "cannot read image" in res.output
