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
from conftest import copy_old_workspace
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


# --- adapters, LoRA, compression and example maps through export -------------------------------------
@pytest.fixture
def one_thread():
    from promptsearch.threads import torch_threads

    with torch_threads(1):
        yield


VIT = BackboneSpec("vit_tiny_patch16_224", image_size=28, patch_size=4)  # random init: load_exported reseeds it
FEW = Budget(epochs=1, max_eval_samples=48)  # the splits a compressed export is evaluated on


def _peft_model(choices, backbone, seed=0):
    """A peft-space candidate's model with every trainable tensor non-zero (LoRA B and adapter up
    start at zero), its backbone built as load_exported builds it (seeded by the bundle's seed)."""
    from promptsearch.backbones import build_backbone
    from promptsearch.prompts import build_prompted_model

    space = load_space("peft")
    cand = space.candidate(space.encode(choices))
    torch.manual_seed(seed)
    model = build_prompted_model(cand.arch, build_backbone(backbone), 2).eval()
    with torch.no_grad():
        for p in model.trainable_parameters():
            if p.abs().sum() == 0:
                p.normal_(std=0.05)
    return space, cand, model


def _bundle(out, space, cand, model, backbone, seed=0, **kw):
    from promptsearch.export import write_bundle

    return write_bundle(out, space=space, genome=cand.genome, weights=model.trainable_state_dict(), backbone=backbone,
                        task="binary-class", classes=["malignant", "normal, benign"], input_channels=1, input_size=28,
                        metrics={"auc": 0.5}, budget=FEW.model_dump(), seed=seed, **kw)


TOKEN_LORA = {"module": "token", "tokens": 5, "depth": "shallow", "lora_rank": 4, "lora_targets": "q+v",
              "lora_blocks": "last_4", "init": "xavier", "lr": 0.01}
ADAPTER = {"module": "none", "adapter": "bottleneck", "adapter_reduction": 8, "adapter_blocks": "last_4",
           "lora_rank": 0, "init": "xavier", "lr": 0.003}


@pytest.mark.parametrize("choices", [TOKEN_LORA, ADAPTER], ids=["token+lora", "adapter"])
@pytest.mark.usefixtures("one_thread")
def test_adapter_and_lora_bundles_round_trip(tmp_path, breast, choices):
    space, cand, model = _peft_model(choices, VIT)
    folder = _bundle(tmp_path / "b", space, cand, model, VIT, zip_path=tmp_path / "b.zip")
    x = breast.val.images[:6].float() / 255.0
    with torch.no_grad():
        ref = model(x)
        loaded = promptsearch.load_exported(folder if choices is ADAPTER else tmp_path / "b.zip")
        assert torch.equal(loaded(x), ref)
    cost = loaded.cost()
    assert set(k for k in cost if k in ("adapter_params", "lora_params")) == \
        set(k for k in ("adapter_params", "lora_params") if k in model.cost())
    assert load_config(folder).compression is None and load_config(folder).prompts["file_bytes"] == \
        (folder / "prompts.safetensors").stat().st_size


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_compressed_export_reproduces_or_stays_within_tolerance(tmp_path, breast):
    """svd at full rank: predictions of the loaded bundle within 1e-5 of the uncompressed model; int8:
    class probabilities within 0.01 (the tolerance tests/test_compress.py states), fewer bytes, and
    the metrics after compression recorded next to the uncompressed ones (svd:4+int8 and a zip:
    test_export_cli_compress_and_examples)."""
    from promptsearch.compress import matrix_view

    space, cand, model = _peft_model(TOKEN_LORA, VIT)
    state = model.trainable_state_dict()
    full = max(min(matrix_view(tuple(v.shape))) for v in state.values() if v.ndim > 1)
    x = breast.val.images[:16].float() / 255.0
    with torch.no_grad():
        ref = torch.softmax(model(x), -1)
    plain = _bundle(tmp_path / "plain", space, cand, model, VIT)
    plain_bytes = (plain / "prompts.safetensors").stat().st_size
    for spec, tol, evaluated in ((f"svd:{full}", 1e-5, False), ("int8", 0.01, True)):
        folder = _bundle(tmp_path / spec.replace(":", "_"), space, cand, model, VIT, compress=spec,
                         data=breast if evaluated else None)
        loaded = promptsearch.load_exported(folder)
        with torch.no_grad():
            out = torch.softmax(loaded(x), -1)
        assert (out - ref).abs().max() <= tol, spec
        cfg = load_config(folder)
        c = cfg.compression
        assert c["spec"] == spec and c["file_bytes"] == (folder / "prompts.safetensors").stat().st_size
        assert c["uncompressed_file_bytes"] == pytest.approx(plain_bytes, abs=64)  # same tensors, own metadata
        if spec != f"svd:{full}":
            assert c["payload_bytes"] < 0.3 * c["uncompressed_payload_bytes"], spec  # ~1/4 + scales and zero points
            assert c["file_bytes"] < 0.5 * c["uncompressed_file_bytes"], spec  # the header (names, manifest) adds ~15 KB
        card = (folder / "MODEL_CARD.md").read_text()
        assert f"`{spec}`" in card and f"{c['file_bytes']:,} bytes" in card
        if not evaluated:
            assert "metrics" not in c and "not evaluated at export" in card
            continue
        assert "validation, compressed" in card
        for split in ("validation", "test"):
            assert set(c["metrics"][split]) >= {"auc", "accuracy", "worst_class_recall"}
            # the reference is the uncompressed model on the same splits (a trial's subsets)
            ev = evaluate(model, (breast.val if split == "validation" else breast.test).subset(48, 0), breast.task)
            assert c["reference"][split]["auc"] == pytest.approx(ev["auc"], abs=1e-6)
            assert c["metrics"][split]["auc"] == pytest.approx(ev["auc"], abs=0.05)  # probabilities within 0.01
    with pytest.raises(Exception, match="rank >= 1"):
        _bundle(tmp_path / "bad", space, cand, model, VIT, compress="svd:0")
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_bundle_carries_example_maps(trained, breast, tmp_path):
    tmp, cand, result, folder = trained
    from promptsearch.export import write_trial_bundle

    spec = BackboneSpec("torchvision:mobilenet_v2", image_size=32, weights=load_config(folder).backbone.weights)
    out = write_trial_bundle(tmp_path / "ex", candidate=cand, result=result, data=breast, backbone=spec,
                             weights=tmp / "trial.safetensors", budget=BUDGET, examples=3, zip_path=tmp_path / "ex.zip")
    cfg = load_config(out)
    assert len(cfg.examples) == 3
    assert {e["true_label"] for e in cfg.examples} == set(breast.classes)  # classes taken in turn
    for e in cfg.examples:
        assert e["split"] == "val" and e["maps"] and set(e["maps"]) == {"gradcam"}
        for rel in [e["input"], *e["maps"].values(), e["pixel_prompt"]]:
            with Image.open(out / rel) as im:
                assert im.mode == "RGB" or im.mode == "L"
                assert (out / rel).stat().st_size < 40_000  # small PNGs
        assert e["label"] == breast.classes[e["prediction"]]
    with zipfile.ZipFile(tmp_path / "ex.zip") as z:
        names = set(z.namelist())
    assert {e["maps"]["gradcam"] for e in cfg.examples} <= names and "config.json" in names
    model = promptsearch.load_exported(tmp_path / "ex.zip")  # a bundle with examples still loads
    assert model.bundle.examples == cfg.examples
    assert "## Example explanations" in (out / "MODEL_CARD.md").read_text()


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_export_cli_compress_and_examples(tmp_path, data_root, mobilenet_weights):
    ws, job_id = copy_old_workspace(tmp_path, data_root, mobilenet_weights)
    out = tmp_path / "bundle"
    res = CliRunner().invoke(app, ["export", job_id, "--pick", "trial=t0001", "--out", str(out), "--compress",
                                   "svd:4+int8", "--examples", "2", "--zip", "--workspace", str(ws)])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout[res.stdout.index("{"):])
    cfg = load_config(out)
    assert info["compression"] == cfg.compression and info["examples"] == 2 and len(cfg.examples) == 2
    c = cfg.compression
    # the reference evaluation at export reproduces what the trial recorded (same splits, CPU)
    for split, recorded in (("validation", cfg.metrics["validation"]), ("test", cfg.metrics["test"])):
        assert c["reference"][split]["auc"] == pytest.approx(recorded["auc"], abs=1e-6)
        assert 0 <= c["metrics"][split]["auc"] <= 1
    assert c["file_bytes"] < c["uncompressed_file_bytes"]
    model = promptsearch.load_exported(tmp_path / "bundle.zip")
    assert model.bundle.compression["spec"] == "svd:4+int8"
    res = CliRunner().invoke(app, ["export", job_id, "--pick", "trial=t0001", "--out", str(tmp_path / "x"),
                                   "--compress", "zip", "--workspace", str(ws)])
    assert res.exit_code == 2 and "unknown compression step" in res.output
    # the job's data is not on this machine: the bundle is written without examples; --compress refuses
    gone, job2 = copy_old_workspace(tmp_path / "elsewhere", tmp_path / "no-data", mobilenet_weights)
    res = CliRunner().invoke(app, ["export", job2, "--pick", "trial=t0001", "--out", str(tmp_path / "y"),
                                   "--workspace", str(gone)])
    assert res.exit_code == 0, res.output
    assert "no example maps" in res.output and load_config(tmp_path / "y").examples == []
    res = CliRunner().invoke(app, ["export", job2, "--pick", "trial=t0001", "--out", str(tmp_path / "z"),
                                   "--compress", "int8", "--workspace", str(gone)])
    assert res.exit_code == 2 and "needs the job's dataset" in res.output and not (tmp_path / "z").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.long
def test_a_random_init_vit_job_exports_the_backbone_its_trials_trained_on(tmp_path, data_root, breast):
    """A random-init backbone is the trial seed's in the Ray trainable (which caches one per
    process) as in ``load_exported``: the exported model reproduces what the job recorded."""
    from promptsearch.export.job import export_job
    from promptsearch.jobs import job_from_dict
    from promptsearch.service.jobs import Workspace, job_trials, run_job, submit

    ws = Workspace(tmp_path / "ws")
    job_id = submit(ws, job_from_dict(dict(
        name="vit", space="pixel", dataset="breastmnist", data_root=str(data_root),
        backbone={"name": "vit_tiny_patch16_224", "image_size": 28, "patch_size": 4},
        budget={"epochs": 1, "max_train_samples": 64, "max_eval_samples": 48, "latency_repeats": 2, "threads": 1},
        strategy="random", trials=2, concurrency=1, seed=5, objectives=["auc", "prompt_params"])))
    assert run_job(ws, job_id)["status"] == "completed"
    for t in job_trials(ws, job_id):  # the second trial ran on the process's cached backbone
        folder, _ = export_job(ws, job_id, pick=f"trial={t['trial_id']}", out=tmp_path / t["trial_id"])
        model = promptsearch.load_exported(folder)
        got = evaluate(model, breast.val.subset(48, 0), breast.task)
        assert got["auc"] == pytest.approx(t["metrics"]["auc"], abs=1e-6)


TWO_BACKBONES = """\
name: two-backbones
version: 1
components: {anatomical: [breast], modality: [ultrasound]}
min_components: 1
decisions:
  module: {choices: [pixel]}
  backbone: {choices: [mnv2, effnet]}
  pixel_prompt: {choices: [overlay]}
  fusion: {choices: [gate]}
  lr: {choices: [0.01]}
"""


def _two_backbone_job(tmp_path, data_root, mobilenet_weights, **kw) -> dict:
    space = tmp_path / "two.yaml"
    space.write_text(TWO_BACKBONES)
    effnet = mobilenet_weights.parent / "tf_efficientnet_lite0_imagenet_timm.pth"
    return {**dict(name="two", space=str(space), dataset="breastmnist", data_root=str(data_root),
                backbones={"mnv2": {"name": "torchvision:mobilenet_v2", "image_size": 32, "weights": str(mobilenet_weights)},
                           "effnet": {"name": "tf_efficientnet_lite0", "image_size": 32, "weights": str(effnet)}},
                budget={"epochs": 1, "max_train_samples": 64, "max_eval_samples": 48, "latency_repeats": 2, "threads": 1},
                strategy="random", trials=4, concurrency=1, seed=0, objectives=["auc", "prompt_params"]), **kw}


def test_a_backbone_decision_needs_the_job_to_name_its_backbones(tmp_path, data_root, mobilenet_weights):
    from promptsearch.jobs import JobError, job_from_dict

    spec = _two_backbone_job(tmp_path, data_root, mobilenet_weights)
    job_from_dict(spec)  # checks pass
    del spec["backbones"]["effnet"]
    with pytest.raises(JobError, match=r"backbones: space 'two-backbones' chooses backbone\(s\) effnet, which the job"):
        job_from_dict(spec)
    assert job_from_dict({**spec, "fix": {"backbone": "mnv2"}}).backbone_for("mnv2").name == "torchvision:mobilenet_v2"
    spec["backbones"]["effnet"] = {"name": "tf_efficientnet_lite0", "weights": str(tmp_path / "missing.pth")}
    with pytest.raises(JobError, match=r"backbones.effnet.weights: file .*missing.pth' not found"):
        job_from_dict(spec)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.long
def test_a_job_searches_the_backbone_and_exports_the_one_each_trial_used(tmp_path, data_root, mobilenet_weights, breast):
    from promptsearch.export.job import export_job
    from promptsearch.jobs import job_from_dict
    from promptsearch.service.jobs import Workspace, job_trials, run_job, submit

    ws = Workspace(tmp_path / "ws")
    job_id = submit(ws, job_from_dict(_two_backbone_job(tmp_path, data_root, mobilenet_weights, trials=2)))
    assert run_job(ws, job_id)["status"] == "completed"
    trials = job_trials(ws, job_id)
    assert sorted(t["candidate"]["architecture"]["backbone"] for t in trials) == ["effnet", "mnv2"]
    names = {"mnv2": "torchvision:mobilenet_v2", "effnet": "tf_efficientnet_lite0"}
    for t in trials:
        folder, _ = export_job(ws, job_id, pick=f"trial={t['trial_id']}", out=tmp_path / t["trial_id"])
        cfg = load_config(folder)
        assert cfg.backbone.name == names[t["candidate"]["architecture"]["backbone"]]
        got = evaluate(promptsearch.load_exported(folder), breast.val.subset(48, 0), breast.task)
        assert got["auc"] == pytest.approx(t["metrics"]["auc"], abs=1e-6)  # trained on, and loads, that backbone
