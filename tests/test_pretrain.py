"""promptsearch pretrain: real (tiny) pretraining runs on real MedMNIST images, resume, sidecar, errors.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -m pytest tests/test_pretrain.py -q
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from promptsearch.cli import app
from promptsearch.data import DataError, load_dataset
from promptsearch.pretrain import PRETRAIN_MODES, PretrainConfig, PretrainError, pretrain, read_sidecar
from promptsearch.backbones import BackboneSpec, build_backbone

TINY = dict(datasets=("pneumoniamnist",), max_train_samples=32, max_eval_samples=16, batch_size=16, epochs=1)
THREADS = 1  # on a shared, busy CPU one thread beats two (no OpenMP barrier stalls)


def tiny(mode: str, mobilenet_weights=None, **kw) -> PretrainConfig:
    extra = {"teacher_weights": str(mobilenet_weights)} if mode == "distill" else {}
    return PretrainConfig.make(**{**TINY, "mode": mode, **extra, **kw})


@pytest.fixture(scope="module")
def probe_images(data_root) -> torch.Tensor:
    return load_dataset("breastmnist", root=data_root).val.images[:16].float() / 255  # (16, 1, 28, 28), real images


def features(spec: BackboneSpec, images: torch.Tensor) -> torch.Tensor:
    from promptsearch.pretrain import preprocess

    torch.manual_seed(0)  # the random-init reference starts where pretraining started
    b = build_backbone(spec)
    with torch.no_grad():
        return b.model.eval()(preprocess(images, b.image_size, b.mean, b.std))  # (16, 192)


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(PRETRAIN_MODES))
def test_pretrained_file_loads_as_backbone_and_changes_it(mode, tmp_path, data_root, mobilenet_weights, probe_images):
    result = pretrain(tiny(mode, mobilenet_weights), tmp_path, data_root=data_root, threads=THREADS)
    assert result.status == "completed" and result.epochs_done == 1
    assert np.isfinite(result.metrics["train_loss"]) and np.isfinite(result.metrics["val_loss"])
    doc = read_sidecar(result.weights)  # checks sha256 against the file
    assert doc["backbone"] == {**doc["backbone"], "name": "vit_tiny_patch16_224", "image_size": 28, "patch_size": 4}
    assert doc["mode"] == mode and doc["epochs"] == 1
    assert doc["data"][0]["name"] == "pneumoniamnist" and doc["data"][0]["train_images"] == 32
    assert doc["data"][0]["labeled"] is (mode == "supervised")

    exported = load_file(result.weights)
    assert not any(k.startswith(("heads.", "decoder", "proj", "head.")) for k in exported)  # student only
    spec = BackboneSpec("vit_tiny_patch16_224", image_size=28, patch_size=4, weights=result.weights)
    loaded = build_backbone(spec).model.state_dict()
    assert set(loaded) == set(exported) and all(torch.equal(loaded[k], exported[k]) for k in exported)
    random = features(BackboneSpec("vit_tiny_patch16_224", image_size=28, patch_size=4), probe_images)
    trained = features(spec, probe_images)
    assert (trained - random).abs().mean() > 1e-3 * random.abs().mean()


@pytest.mark.slow
def test_resume_continues_from_the_last_epoch_and_matches_an_uninterrupted_run(tmp_path, data_root):
    config = tiny("mae", epochs=2)  # mae + augmentation: masks, flips and shifts all drawn per epoch
    first = pretrain(config, tmp_path / "a", data_root=data_root, threads=THREADS, stop_after=1)
    assert first.status == "stopped" and first.epochs_done == 1 and first.weights is None
    assert not (tmp_path / "a" / "backbone.safetensors").exists()
    resumed = pretrain(config, tmp_path / "a", data_root=data_root, threads=THREADS)
    assert resumed.status == "completed" and resumed.start_epoch == 2 and resumed.epochs_done == 2
    assert resumed.history[0] == first.history[0]
    whole = pretrain(config, tmp_path / "b", data_root=data_root, threads=THREADS)
    assert whole.start_epoch == 1
    a, b = load_file(resumed.weights), load_file(whole.weights)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_sidecar(resumed.weights)["sha256"] == read_sidecar(whole.weights)["sha256"]
    # a finished run reruns as a no-op export; a different config in the same folder is refused
    again = pretrain(config, tmp_path / "a", data_root=data_root, threads=THREADS)
    assert again.start_epoch == 3 and again.epochs_done == 2
    with pytest.raises(PretrainError, match="different config.*mask_ratio"):
        pretrain(tiny("mae", epochs=2, mask_ratio=0.5), tmp_path / "a", data_root=data_root)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, data_root):
    return pretrain(tiny("mae", max_train_samples=16), tmp_path_factory.mktemp("small"), data_root=data_root, threads=THREADS)


def test_sidecar_matches_the_file_and_detects_a_change(small_run, tmp_path):
    import hashlib
    import shutil

    weights = tmp_path / "backbone.safetensors"
    shutil.copy(small_run.weights, weights), shutil.copy(small_run.sidecar, tmp_path / "backbone.json")
    doc = json.loads((tmp_path / "backbone.json").read_text())
    assert doc["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert doc["bytes"] == weights.stat().st_size
    assert read_sidecar(weights)["sha256"] == doc["sha256"]
    with open(weights, "ab") as f:
        f.write(b"\0")
    with pytest.raises(PretrainError, match="sha256"):
        read_sidecar(weights)


def _write_pngs(folder, images: torch.Tensor, sizes: list[int]) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for i, (img, s) in enumerate(zip(images, sizes)):
        Image.fromarray(img[0].numpy()).resize((s, s)).save(folder / f"img{i}.png")


def test_unlabeled_folder_of_mixed_sizes_via_cli(tmp_path, breast):
    """mae on a flat folder of real ultrasound PNGs of two sizes (resized to the working size)."""
    _write_pngs(tmp_path / "scans", breast.train.images[:20], [28] * 10 + [40] * 10)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["pretrain", "--mode", "mae", "--dataset", f"folder:{tmp_path / 'scans'}",
                                   "--epochs", "1", "--batch-size", "8", "--out", str(out), "--threads", str(THREADS), "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["status"] == "completed"
    doc = read_sidecar(out / "backbone.safetensors")
    assert doc["data"][0]["train_images"] + doc["data"][0]["val_images"] == 20
    assert doc["data"][0]["stored_size"] == [28, 28]


def test_bad_inputs_give_clear_errors(tmp_path, data_root, mobilenet_weights):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="no images in"):
        pretrain(tiny("mae", datasets=(f"folder:{tmp_path / 'empty'}",)), tmp_path / "o1")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "scan.png").write_text("not a png")
    with pytest.raises(DataError, match="unreadable image .*scan.png"):
        pretrain(tiny("mae", datasets=(f"folder:{tmp_path / 'broken'}",)), tmp_path / "o2")
    with pytest.raises(DataError, match="two class sub-folders"):  # supervised needs labels
        pretrain(tiny("supervised", datasets=(f"folder:{tmp_path / 'broken'}",)), tmp_path / "o3")
    with pytest.raises(PretrainError, match="mismatched sizes: image size 30 .* patch size 4"):
        tiny("mae", image_size=30)
    with pytest.raises(PretrainError, match="teacher"):
        PretrainConfig.make(mode="distill")
    with pytest.raises(PretrainError, match="unknown mode 'simclr'"):
        PretrainConfig.make(mode="simclr")
    with pytest.raises(PretrainError, match="teacher weights .* not found"):
        pretrain(tiny("distill", teacher_weights=str(tmp_path / "nope.pth")), tmp_path / "o4", data_root=data_root)
    with pytest.raises(DataError, match="unknown MedMNIST dataset"):
        pretrain(tiny("mae", datasets=("lungmnist",)), tmp_path / "o5", data_root=data_root)


def test_sidecar_geometry_is_the_default_and_another_geometry_is_refused_clearly(small_run):
    b = build_backbone(BackboneSpec("vit_tiny_patch16_224", weights=small_run.weights))  # no sizes given
    assert b.image_size == 28 and tuple(b.model.patch_embed.patch_size) == (4, 4)
    assert torch.equal(b.model.pos_embed, load_file(small_run.weights)["pos_embed"])
    with pytest.raises(ValueError, match="image/patch size"):
        build_backbone(BackboneSpec("vit_tiny_patch16_224", image_size=28, patch_size=7, weights=small_run.weights))


def test_cli_bad_input_is_one_line_not_a_traceback(tmp_path):
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(app, ["pretrain", "--mode", "mae", "--dataset", f"folder:{tmp_path / 'empty'}",
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "no images in" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["pretrain", "--mode", "distill", "--out", str(tmp_path / "o")],
                             env={"PROMPTSEARCH_TEACHER_WEIGHTS": ""})
    assert res.exit_code == 2 and "--teacher-weights" in res.output


def test_supervised_on_two_datasets_trains_one_head_each(tmp_path, data_root, breast):
    """A MedMNIST name plus a folder of class sub-folders (real ultrasound PNGs): two heads, both dropped."""
    for label, name in enumerate(breast.classes):
        _write_pngs(tmp_path / "scans" / name.split(",")[0], breast.train.images[breast.train.labels == label][:12], [28] * 12)
    config = tiny("supervised", datasets=("pneumoniamnist", f"folder:{tmp_path / 'scans'}"), max_train_samples=16)
    result = pretrain(config, tmp_path / "out", data_root=data_root, threads=THREADS)
    assert {"val_auc_0", "val_auc_1"} <= set(result.metrics)
    doc = read_sidecar(result.weights)
    assert [d["labeled"] for d in doc["data"]] == [True, True] and doc["data"][1]["name"] == "scans"
    assert not any(k.startswith("heads.") for k in load_file(result.weights))
    ckpt = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)
    assert ckpt["objective"]["heads.0.weight"].shape == (2, 192) and ckpt["objective"]["heads.1.weight"].shape == (2, 192)
