"""Component libraries on real images (MobileNetV2 at 32 px, a few dozen images per source, one or
two epochs): the build and its manifest, determinism and resume after kill -9, trials that start
from exactly the stored blocks (frozen ones unchanged), export, growth, the leakage guard,
equivalent candidates, weight sharing inside a job.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -m pytest tests/test_library.py -q
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from promptsearch.backbones import BackboneSpec, build_backbone
from promptsearch.budget import Budget
from promptsearch.jobs import JobError, job_from_dict
from promptsearch.library import (BuildConfig, LibraryError, LibraryVersions, add_to_library, bind_library, library_components,
                                  build_library, open_library, read_manifest, tensor_sha256, trial_library)
from promptsearch.prompts import build_prompted_model
from promptsearch.space import SpaceError, list_spaces, load_space, parse_space
from promptsearch.strategies import make_strategy
from promptsearch.trial import evaluate, run_trial

REPO = Path(__file__).resolve().parent.parent
FOLDERS = Path(os.environ.get("PROMPTSEARCH_FOLDERS_ROOT", REPO.parent / "shared" / "data" / "folders")).resolve()
SOURCES = ("busi_breast_us", "kidney_ct")
SMALL = dict(image_size=32, epochs=1, batch_size=32, max_train_samples=64, max_eval_samples=64, seed=0)
BUDGET = Budget(epochs=1, batch_size=32, max_train_samples=64, max_eval_samples=64, latency_repeats=2, threads=1)
# a target that shares no source with the library (lung X-rays); lung and xray have no block in it
SPACE = """
name: libtest
components: {anatomical: [lung, kidney, breast], pathological: [normal, tumor], modality: [xray, ct]}
scratch: [lung, xray]
equivalence: [scratch_components]
min_components: 1
decisions:
  module: {choices: [pixel]}
  pixel_prompt: {choices: [frame, overlay]}
  frame_width: {choices: [4], when: {pixel_prompt: [frame]}}
  fusion: {choices: [concat, attention, gate]}
  source: {choices: [scratch, library]}
  tuning: {choices: [finetuned, frozen], when: {source: [library]}}
"""


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def weights(mobilenet_weights) -> str:
    if not (FOLDERS / "kidney_ct").is_dir():
        pytest.fail(f"real image folders not found at {FOLDERS}: set PROMPTSEARCH_FOLDERS_ROOT")
    return str(mobilenet_weights)


@pytest.fixture(scope="module")
def config(weights) -> BuildConfig:
    return BuildConfig.make(datasets=SOURCES, backbone="torchvision:mobilenet_v2", backbone_weights=weights, **SMALL)


@pytest.fixture(scope="module")
def lib(tmp_path_factory, config, data_root):
    out = tmp_path_factory.mktemp("lib") / "v1"
    r = build_library(config, out, data_root=data_root, folders_root=FOLDERS, threads=1)
    assert r.status == "completed"
    return open_library(out)


@pytest.fixture(scope="module")
def pneumonia(data_root):
    from promptsearch.data import load_dataset

    return load_dataset("pneumoniamnist", root=data_root)


@pytest.fixture(scope="module")
def space(lib):
    return bind_library(parse_space(SPACE, "libtest.yaml"), lib.path)


def spec(weights) -> BackboneSpec:
    return BackboneSpec("torchvision:mobilenet_v2", image_size=32, weights=weights)


# --- the build --------------------------------------------------------------------------------------
def test_manifest_lists_each_components_sources_and_the_backbone(lib, weights):
    m = lib.manifest
    assert m.components["tumor"].datasets == list(SOURCES) and m.components["normal"].datasets == list(SOURCES)
    assert m.components["breast"].datasets == ["busi_breast_us"] and m.components["ct"].datasets == ["kidney_ct"]
    assert m.components["medical"].kind == "generic" and m.components["kidney"].kind == "anatomy"
    assert {c for c, r in m.components.items() if r.kind == "pathology"} == {"tumor", "normal", "cyst", "calculus"}
    for name, rec in m.components.items():
        assert set(rec.images) == set(rec.datasets) and rec.train_images == 64 * len(rec.datasets)
        assert all(rec.images[d] == m.datasets[d].images["sha256"] for d in rec.datasets)
        assert rec.metrics["steps"] > 0 and 0 <= rec.metrics["val_auc_mean"] <= 1 and rec.sha256 == tensor_sha256(lib.blocks[name])
    assert m.datasets["busi_breast_us"].source == "busi" and m.datasets["kidney_ct"].components[:2] == ["kidney", "ct"]
    assert m.backbone.name == "torchvision:mobilenet_v2" and m.backbone.weights_sha256.startswith("b03531047ffa")
    assert m.geometry.module == "pixel" and tuple(m.geometry.shape) == (3, 32, 32)
    assert m.version == m.sha256[:16] and m.parent is None and m.generation == 0
    assert m.cost["wall_time_s"] > 0 and m.cost["peak_rss_mb"] > 0
    state = load_file(str(lib.path / "library.safetensors"))
    assert set(state) == set(m.components)  # one block per component, no heads
    assert (lib.path / "tasks.safetensors").is_file() and any(k.startswith("kidney_ct/head.") for k in
                                                              load_file(str(lib.path / "tasks.safetensors")))


def test_a_changed_library_file_or_bad_manifest_is_named(lib, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(lib.path, bad)
    doc = json.loads((bad / "library.json").read_text())
    doc["components"]["tumor"]["kind"] = "organ"
    (bad / "library.json").write_text(json.dumps(doc))
    with pytest.raises(LibraryError, match=r"library.json: components.tumor.kind"):
        read_manifest(bad)
    shutil.copy2(lib.path / "library.json", bad / "library.json")
    state = load_file(str(bad / "library.safetensors"))
    state["tumor"] = state["tumor"] + 1
    from safetensors.torch import save_file

    save_file(state, str(bad / "library.safetensors"))
    with pytest.raises(LibraryError, match=r"library.safetensors: sha256 .* differs"):
        open_library(bad)
    with pytest.raises(LibraryError, match="no library here"):
        open_library(tmp_path / "nowhere")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "promptsearch.cli", "library", *args]


def test_build_is_deterministic_and_resumes_after_kill_9(tmp_path, config, data_root, weights):
    two = config.model_copy(update={"epochs": 2, "max_train_samples": 96})
    ref = build_library(two, tmp_path / "ref", data_root=data_root, folders_root=FOLDERS, threads=1)
    again = build_library(two, tmp_path / "again", data_root=data_root, folders_root=FOLDERS, threads=1)
    assert ref.version == again.version  # deterministic for a seed
    out = tmp_path / "killed"
    args = _cli("build", "--datasets", *SOURCES, "--folders-root", str(FOLDERS), "--data-root", str(data_root),
                "--backbone", "torchvision:mobilenet_v2", "--backbone-weights", weights, "--image-size", "32",
                "--epochs", "2", "--max-train-samples", "96", "--max-eval-samples", "64", "--threads", "1",
                "--out", str(out), "--json")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # in epoch 2, after epoch 1's checkpoint
    proc.wait()
    assert not (out / "library.json").exists(), "the build finished before it could be killed"
    done = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["start_epoch"] == 2 and result["version"] == ref.version
    assert (out / "library.safetensors").read_bytes() == (tmp_path / "ref" / "library.safetensors").read_bytes()
    other = subprocess.run([*args[:-3], "--epochs", "3", "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert other.returncode == 2 and "different config" in other.stderr and "epochs: 2 there, 3 asked" in other.stderr


# --- trials start from exactly the stored blocks ------------------------------------------------------
def test_trial_starts_from_the_stored_tensors(space, lib, weights):
    backbone = build_backbone(spec(weights))
    for arch in ({"pixel_prompt": "frame", "frame_width": 4, "fusion": "concat"},
                 {"pixel_prompt": "overlay", "fusion": "gate"}, {"pixel_prompt": "frame", "frame_width": 4, "fusion": "attention"}):
        cand = space.candidate(space.encode({"module": "pixel", **arch, "source": "library", "tuning": "finetuned",
                                             "components": {"anatomical": ["lung", "kidney"], "pathological": ["tumor"]}}))
        tl = trial_library(cand, spec(weights), 32)
        assert sorted(tl.blocks) == ["kidney", "tumor"] and tl.library.version == lib.version
        model = build_prompted_model(cand.arch, backbone, 2, library=tl.blocks)
        prompt = model.prompt
        assert prompt.components == ["kidney", "tumor", "lung"]  # library blocks first, then scratch
        for i, name in enumerate(["kidney", "tumor"]):
            stored = lib.blocks[name].reshape(3, -1)[:, prompt.positions(i)]
            assert torch.equal(prompt.patterns[i].detach(), stored), (arch, name)
        assert not torch.equal(prompt.patterns[2].detach(), torch.zeros_like(prompt.patterns[2]))


def test_frozen_library_blocks_are_unchanged_after_training_and_export_reproduces(space, lib, weights, pneumonia,
                                                                                  tmp_path):
    import promptsearch
    from promptsearch.export import load_config, predict_files, write_trial_bundle

    comps = {"anatomical": ["lung", "kidney"], "pathological": ["normal"], "modality": ["ct"]}
    frozen = space.candidate(space.encode({"module": "pixel", "pixel_prompt": "frame", "frame_width": 4,
                                           "fusion": "gate", "source": "library", "tuning": "frozen", "components": comps}))
    r = run_trial(frozen, pneumonia, spec(weights), BUDGET, seed=1, weights_out=tmp_path / "w.safetensors")
    assert r.status == "completed", r.reason
    saved = load_file(str(tmp_path / "w.safetensors"))
    for i, name in enumerate(["kidney", "normal", "ct"]):  # library order: kidney, normal, ct; then lung (scratch)
        assert torch.equal(saved[f"prompt.patterns.{i}"], lib.blocks[name].reshape(3, -1)[:, _frame(32, 4)]), name
    assert r.metrics["library_params"] == 3 * 3 * len(_frame(32, 4))  # frozen: counted apart
    assert r.metrics["prompt_params"] == 3 * len(_frame(32, 4)) + 4  # the scratch block and 4 gates
    with safe_open(str(tmp_path / "w.safetensors"), "pt") as f:
        rec = json.loads(f.metadata()["library"])
    assert rec["version"] == lib.version and rec["components"] == ["kidney", "normal", "ct"] and rec["tuning"] == "frozen"
    # the same components finetuned: they move
    tuned = space.candidate(space.encode({**frozen.architecture, "tuning": "finetuned"}))
    r2 = run_trial(tuned, pneumonia, spec(weights), BUDGET, seed=1, weights_out=tmp_path / "w2.safetensors")
    assert not torch.equal(load_file(str(tmp_path / "w2.safetensors"))["prompt.patterns.0"], saved["prompt.patterns.0"])
    assert r2.metrics["prompt_params"] > r.metrics["prompt_params"]
    # export: the bundle records the library; load_exported and predict reproduce the metrics
    folder = write_trial_bundle(tmp_path / "bundle", candidate=frozen, result=r, data=pneumonia, backbone=spec(weights),
                                weights=tmp_path / "w.safetensors", budget=BUDGET)
    cfg = load_config(folder)
    assert cfg.library["version"] == lib.version and cfg.library["sha256"] == lib.sha256
    assert cfg.library["path"] == str(lib.path) and cfg.library["components"] == ["kidney", "normal", "ct"]
    assert "Component library" in (folder / "MODEL_CARD.md").read_text()
    model = promptsearch.load_exported(folder)
    val = evaluate(model, pneumonia.val.subset(BUDGET.max_eval_samples, 0), pneumonia.task)
    test = evaluate(model, pneumonia.test.subset(BUDGET.max_eval_samples, 0), pneumonia.task)
    assert val["auc"] == pytest.approx(r.metrics["auc"], abs=1e-6) and test["auc"] == pytest.approx(r.test_metrics["auc"], abs=1e-6)
    from PIL import Image

    paths = []
    for i in range(3):
        p = tmp_path / f"x{i}.png"
        Image.fromarray(pneumonia.test.images[i, 0].numpy()).save(p)
        paths.append(p)
    probs = predict_files(model, paths)
    with torch.no_grad():
        direct = torch.softmax(model(pneumonia.test.images[:3].float() / 255), -1)
    assert np.allclose([[p[c] for c in cfg.classes] for p in probs], direct.numpy(), atol=1e-6)


def _frame(size: int, w: int) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.bool)
    m[:w], m[-w:], m[:, :w], m[:, -w:] = True, True, True, True
    return m.flatten().nonzero().squeeze(1)


# --- growth ---------------------------------------------------------------------------------------------
def test_add_leaves_old_blocks_bit_identical(lib, data_root, tmp_path):
    r = add_to_library(lib.path, ["retinamnist"], tmp_path / "v2", data_root=data_root, folders_root=FOLDERS,
                       threads=1, max_train_samples=64)
    grown = open_library(tmp_path / "v2")
    m = grown.manifest
    assert r.status == "completed" and m.parent == lib.version and m.generation == 1
    for name, block in lib.blocks.items():
        assert torch.equal(grown.blocks[name], block) and m.components[name].sha256 == lib.manifest.components[name].sha256
        assert m.components[name].added_in == 0
    assert {"eye", "fundus", "vascular"} <= set(m.components) - set(lib.blocks)
    assert m.components["eye"].added_in == 1 and m.components["eye"].datasets == ["retinamnist"]
    assert set(m.datasets) == {*SOURCES, "retinamnist"}
    for name in SOURCES:
        before, after = m.old_tasks[name]["before"], m.old_tasks[name]["after"]
        assert before == after and before["auc"] == pytest.approx(lib.manifest.datasets[name].metrics["auc"], abs=1e-9)
    with pytest.raises(LibraryError, match="already learned from"):
        add_to_library(lib.path, ["kidney_ct"], tmp_path / "v3", data_root=data_root, folders_root=FOLDERS)


# --- jobs: binding and the leakage guard ----------------------------------------------------------------
def test_leakage_guard_refuses_breastmnist_with_a_busi_library(lib, tmp_path, data_root):
    (tmp_path / "space.yaml").write_text(SPACE)
    job = {"space": str(tmp_path / "space.yaml"), "dataset": "breastmnist", "data_root": str(data_root),
           "library": str(lib.path), "strategy": "random", "trials": 2}
    with pytest.raises(JobError) as e:
        job_from_dict(job, "job.yaml")
    msg = str(e.value)
    assert "busi_breast_us" in msg and "breastmnist" in msg and "source busi" in msg and "dataset" in msg, msg
    ok = job_from_dict({**job, "dataset": "pneumoniamnist"}, "job.yaml")
    from promptsearch.jobs import job_space

    bound = job_space(ok)
    assert bound.spec.library.version == lib.version and bound.spec.library.sha256 == lib.sha256
    assert bound.to_dict()["library"]["path"] == str(lib.path)  # the stored job's space names the exact file
    # a component with no trained block and not marked scratch is an error that names it
    (tmp_path / "strict.yaml").write_text(SPACE.replace("scratch: [lung, xray]", "scratch: [lung]"))
    with pytest.raises(JobError, match=r"no trained block for component\(s\) xray.*scratch"):
        job_from_dict({**job, "dataset": "pneumoniamnist", "space": str(tmp_path / "strict.yaml")}, "job.yaml")


# --- equivalent candidates: one identity -----------------------------------------------------------------
def test_equivalent_candidates_share_one_key_and_build_the_same_model(space, weights):
    a = space.candidate(space.encode({"module": "pixel", "pixel_prompt": "overlay", "fusion": "gate", "source": "scratch",
                                      "components": {"anatomical": ["kidney"], "modality": ["ct"]}}))
    b = space.candidate(space.encode({"module": "pixel", "pixel_prompt": "overlay", "fusion": "gate", "source": "scratch",
                                      "components": {"pathological": ["tumor"], "anatomical": ["breast"]}}))
    assert a.key == b.key and a.genome == b.genome and "tuning" not in a.architecture
    lib1 = space.candidate(space.encode({"module": "pixel", "pixel_prompt": "overlay", "fusion": "gate", "source": "library",
                                         "tuning": "frozen", "components": {"anatomical": ["lung", "kidney"]}}))
    lib2 = space.candidate(space.encode({"module": "pixel", "pixel_prompt": "overlay", "fusion": "gate", "source": "library",
                                         "tuning": "frozen", "components": {"anatomical": ["kidney"], "modality": ["xray"]}}))
    assert lib1.key == lib2.key  # one scratch block + the kidney block, whichever scratch name
    lib3 = space.candidate(space.encode({**lib1.architecture, "components": {"anatomical": ["lung", "breast"]}}))
    assert lib3.key != lib1.key  # another library block is another model
    backbone = build_backbone(spec(weights))
    states = []
    for c in (lib1, lib2):
        tl = trial_library(space.candidate(c.genome), spec(weights), 32)
        torch.manual_seed(0)
        states.append(build_prompted_model(c.arch, backbone, 2, library=tl.blocks).trainable_state_dict())
    assert states[0].keys() == states[1].keys() and all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    # size() counts canonical candidates; a strategy exhausts them without an equivalent twice
    assert space.size() == len(list(space.enumerate()))
    s = make_strategy("random", space, seed=0)
    keys = [s.ask().key for _ in range(space.size())]
    assert len(set(keys)) == len(keys) == space.size()


def test_shipped_spaces_keep_hashes_and_medical_is_library_backed():
    for name, h in {"pixel": "56af391d73e0a495", "vpt": "3b3f25a17930a237"}.items():
        s = load_space(name)
        assert s.hash == h and not {"library", "scratch", "equivalence"} & set(s.to_dict())
        assert all(not {"source", "tuning"} & set(s.sample(i).architecture) for i in range(20))
    med = load_space("medical")
    comps = med.spec.components
    assert {"brain", "lung", "kidney", "breast", "eye", "skin"} <= set(comps["anatomical"])
    assert {"ct", "mri", "xray", "ultrasound", "fundus", "dermoscopy"} <= set(comps["modality"])
    assert {"tumor", "inflammation", "normal"} <= set(comps["pathological"]) and med.spec.scratch == ("heart", "liver", "atrophy")
    assert med.spec.decisions["source"].choices == ("scratch", "library") and "scratch_components" in med.spec.equivalence
    assert "medical" in list_spaces()
    with pytest.raises(SpaceError, match=r"scratch.0: 'spleen' is not a component"):
        parse_space(SPACE.replace("scratch: [lung, xray]", "scratch: [spleen]"), "s.yaml")


# --- weight sharing inside a job ---------------------------------------------------------------------------
def test_weight_sharing_writes_versions_later_trials_start_from(space, lib, weights, pneumonia, tmp_path):
    versions = LibraryVersions.create(tmp_path / "joblib", lib.path)
    v0 = versions.head()
    assert v0 == lib.version
    cand = space.candidate(space.encode({"module": "pixel", "pixel_prompt": "frame", "frame_width": 4, "fusion": "gate",
                                         "source": "library", "tuning": "finetuned",
                                         "components": {"anatomical": ["kidney"], "pathological": ["tumor"]}}))
    r = run_trial(cand, pneumonia, spec(weights), BUDGET, seed=0, weights_out=tmp_path / "t1.safetensors",
                  library_versions=versions.root, library_version=v0)
    assert r.status == "completed", r.reason
    v1 = versions.head()
    child = versions.open(v1)
    assert v1 != v0 and child.manifest.parent == v0 and child.manifest.origin["candidate"] == cand.key
    frame = _frame(32, 4)
    saved = load_file(str(tmp_path / "t1.safetensors"))
    assert torch.equal(child.blocks["kidney"].reshape(3, -1)[:, frame], saved["prompt.patterns.0"])  # the trained frame
    inner = torch.ones(32 * 32, dtype=torch.bool)
    inner[frame] = False
    assert torch.equal(child.blocks["kidney"].reshape(3, -1)[:, inner], lib.blocks["kidney"].reshape(3, -1)[:, inner])
    assert all(torch.equal(child.blocks[n], lib.blocks[n]) for n in lib.blocks if n not in ("kidney", "tumor"))
    with safe_open(str(tmp_path / "t1.safetensors"), "pt") as f:
        rec = json.loads(f.metadata()["library"])
    assert rec["started_from"] == v0 and rec["wrote"] == v1
    # a later trial starts from v1's blocks; a replay of the first trial writes v1 again
    tl = trial_library(cand, spec(weights), 32, versions, v1)
    assert torch.equal(tl.blocks["kidney"], child.blocks["kidney"])
    again = run_trial(cand, pneumonia, spec(weights), BUDGET, seed=0, library_versions=versions.root, library_version=v0)
    assert again.metrics["auc"] == r.metrics["auc"] and [e["version"] for e in versions.log()] == [v1, v1]


# --- token blocks (timm ViT) ------------------------------------------------------------------------------
def test_token_library_blocks_fill_a_candidates_first_layers_and_tokens(tmp_path, data_root):
    cfg = BuildConfig.make(datasets=("retinamnist", "pneumoniamnist"), module="token", backbone="vit_tiny_patch16_224",
                           image_size=28, patch_size=4, tokens=4, depth="first_2", epochs=1, batch_size=32,
                           max_train_samples=32, max_eval_samples=32)
    r = build_library(cfg, tmp_path / "tok", data_root=data_root, threads=1)
    lib = open_library(tmp_path / "tok")
    assert r.status == "completed" and lib.manifest.geometry.module == "token"
    assert tuple(lib.manifest.geometry.shape) == (2, 4, 192) and lib.manifest.components["eye"].datasets == ["retinamnist"]
    text = (SPACE.replace("{choices: [pixel]}", "{choices: [token]}")
            .replace("  pixel_prompt: {choices: [frame, overlay]}\n  frame_width: {choices: [4], when: {pixel_prompt: [frame]}}\n",
                     "  tokens: {choices: [2, 8]}\n  depth: {choices: [shallow, deep]}\n")
            .replace("[lung, kidney, breast]", "[lung, eye]").replace("[xray, ct]", "[xray, fundus]")
            .replace("[normal, tumor]", "[normal, vascular]"))
    space = bind_library(parse_space(text, "tok.yaml"), lib.path)
    vit = build_backbone(BackboneSpec("vit_tiny_patch16_224", image_size=28, patch_size=4))
    for tokens, depth, tuning in ((2, "shallow", "frozen"), (8, "deep", "finetuned")):
        cand = space.candidate(space.encode({"module": "token", "tokens": tokens, "depth": depth, "fusion": "concat",
                                             "source": "library", "tuning": tuning,
                                             "components": {"anatomical": ["eye", "lung"], "pathological": ["normal"]}}))
        tl = trial_library(cand, None, 28)
        model = build_prompted_model(cand.arch, vit, 2, library=tl.blocks)
        stacked = model.prompt.stacked().detach()  # (L, n, T, D): eye, normal (library), lung (scratch)
        assert model.prompt.components == ["eye", "normal", "lung"]
        L, T = min(2, stacked.shape[0]), min(4, tokens)
        for i, name in enumerate(["eye", "normal"]):
            assert torch.equal(stacked[:L, i, :T], lib.blocks[name][:L, :T])
        if tuning == "frozen":
            assert not model.prompt.library_blocks.requires_grad and model.cost()["library_params"] == 2 * 2 * 192
        else:
            assert not torch.equal(stacked[2:, 0], torch.zeros_like(stacked[2:, 0]))  # layers past the library's: fresh
            assert all(p.requires_grad for p in model.prompt.parameters())


def test_a_spaces_own_library_key_is_found_beside_the_space_file(lib, tmp_path):
    import shutil

    shutil.copytree(lib.path, tmp_path / "libs" / "v1")
    (tmp_path / "space.yaml").write_text(SPACE + "library: libs/v1\n")
    space = bind_library(load_space(tmp_path / "space.yaml"))
    assert space.spec.library.path == str((tmp_path / "libs" / "v1").resolve())
    assert space.spec.library.sha256 == lib.sha256 and space.hash != load_space(tmp_path / "space.yaml").hash


def test_a_space_without_components_takes_the_librarys(lib):
    text = (f"name: bare\nlibrary: {lib.path}\nmin_components: 1\n"
            "decisions:\n  module: {choices: [pixel]}\n  source: {choices: [library]}\n")
    with pytest.raises(SpaceError, match="takes its components from its library: bind it first"):
        parse_space(text, "bare.yaml").sample(0)
    space = bind_library(parse_space(text, "bare.yaml"))
    assert space.spec.components == {"anatomical": ("breast", "kidney"), "pathological": ("calculus", "cyst", "normal", "tumor"),
                                     "modality": ("ct", "ultrasound"), "generic": ("medical",)}
    assert all(sorted(library_components(space, space.sample(i).arch)) ==
               sorted(space.sample(i).arch.component_names) for i in range(5))
