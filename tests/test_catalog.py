"""The dataset catalogue: shipped entries load the real folders and MedMNIST files, bad entries
fail with file:line: field, splits keep near-duplicate groups together, the leak guard, the CLI.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -m pytest tests/test_catalog.py -q
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from promptsearch.catalog import (CatalogError, LeakError, catalog, check_no_leak, class_counts, get_entry,
                                  parse_catalog, plan_entry, same_source)
from promptsearch.data import DataError, load_dataset, load_medmnist, read_groups

REPO = Path(__file__).resolve().parent.parent
FOLDERS = Path(os.environ.get("PROMPTSEARCH_FOLDERS_ROOT", REPO.parent / "shared" / "data" / "folders")).resolve()
FOLDER_SETS = ["brain_tumor_mri", "kidney_ct", "busi_breast_us", "chest_xray_pneumonia", "eye_fundus", "skin_isic"]
# README counts (../shared/data/folders/README.md): train+test for the split layouts
COUNTS = {
    "brain_tumor_mri": {"glioma": 620, "meningioma": 619, "notumor": 578, "pituitary": 620},
    "kidney_ct": {"Cyst": 420, "Normal": 500, "Stone": 494, "Tumor": 500},
    "busi_breast_us": {"benign": 435, "malignant": 208, "normal": 133},
    "chest_xray_pneumonia": {"NORMAL": 600, "PNEUMONIA": 600},
    "eye_fundus": {"cataract": 300, "diabetic_retinopathy": 300, "glaucoma": 300, "normal": 300},
}


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    """A fresh image cache and no catalogue or folders root from the caller's environment."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PROMPTSEARCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.delenv("PROMPTSEARCH_CATALOG", raising=False)
    mp.delenv("PROMPTSEARCH_FOLDERS_ROOT", raising=False)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def folders() -> Path:
    if not (FOLDERS / "kidney_ct").is_dir():
        pytest.fail(f"real image folders not found at {FOLDERS}: set PROMPTSEARCH_FOLDERS_ROOT")
    return FOLDERS


@pytest.fixture(scope="module")
def loaded(folders) -> dict:
    return {name: load_dataset(name, root=folders) for name in FOLDER_SETS}


# --- the shipped entries ----------------------------------------------------------------------------
def test_shipped_entries_load_every_folder_set_with_readme_counts(loaded):
    for name, d in loaded.items():
        e = get_entry(name)
        assert d.name == name and d.classes == sorted(e.classes) and d.train.images.shape[2:] == (64, 64)
        assert d.channels == e.channels and d.extra["anatomy"] == e.anatomy and d.extra["source"] == e.source
        counts = {c: sum(int((s.labels == i).sum()) for s in (d.train, d.val, d.test)) for i, c in enumerate(d.classes)}
        if name in COUNTS:
            assert counts == COUNTS[name]
    skin = loaded["skin_isic"]
    assert len(skin.classes) == 8 and len(skin.test) == 100  # the official test split, kept as is
    assert [int((skin.test.labels == i).sum()) for i in (0, 7)] == [1, 3]  # actinic keratosis 1, vascular 3


def test_layouts_and_splits(loaded):
    brain = loaded["brain_tumor_mri"]  # train/<class>, test/<class>: test kept, val out of train
    assert [int((brain.test.labels == i).sum()) for i in range(4)] == [120, 119, 78, 120]
    assert (len(brain.train), len(brain.val)) == (1800, 200) and brain.extra["split"] == "folders"
    kidney = loaded["kidney_ct"]  # <class>: stratified, 10% val and 20% test of each class
    assert kidney.extra["split"] == "stratified" and len(kidney.test) == 388 and len(kidney.val) == 192
    assert all(0 < int((s.labels == i).sum()) for s in (kidney.train, kidney.val, kidney.test) for i in range(4))


def test_grayscale_and_rgb(loaded):
    assert {n: d.channels for n, d in loaded.items()} == {"brain_tumor_mri": 1, "kidney_ct": 1, "busi_breast_us": 1,
                                                         "chest_xray_pneumonia": 1, "eye_fundus": 3, "skin_isic": 3}
    eye = loaded["eye_fundus"].train.images.float()
    assert (eye[:, 0] - eye[:, 1]).abs().mean() > 5  # real colour, not grey copied three times


def test_breastmnist_entry_is_the_medmnist_dataset(data_root):
    a = load_dataset("breastmnist", root=data_root)
    b = load_medmnist("breastmnist", root=data_root)
    c = load_dataset("catalog:breastmnist", root=data_root)
    for s in ("train", "val", "test"):
        assert torch.equal(getattr(a, s).images, getattr(b, s).images)
        assert torch.equal(getattr(c, s).labels, getattr(b, s).labels)
    assert class_counts("breastmnist", data_root)["train"] == {"malignant": 147, "normal, benign": 399}
    assert get_entry("retinamnist").channels == 3 and len(class_counts("retinamnist", data_root)["test"]) == 5
    with pytest.raises(CatalogError, match="datasets.breastmnist.medmnist: a MedMNIST entry keeps its official splits"):
        load_dataset("breastmnist", root=data_root, split_seed=1)


# --- group-aware splits on the real near-duplicate groups -------------------------------------------
def _straddling(plan, groups_file) -> int:
    side = {i: k for k, idx in plan.parts.items() for i in idx}
    rel = {f.relative_to(plan.base).as_posix(): i for i, f in enumerate(plan.files)}
    where: dict[str, set] = {}
    for f, g in read_groups(groups_file, plan.base).items():
        if rel[f] in side:  # a train copy of a test image may have been dropped
            where.setdefault(g, set()).add(side[rel[f]])
    return sum(len(s) > 1 for s in where.values())


@pytest.mark.parametrize("name", ["kidney_ct", "eye_fundus", "brain_tumor_mri", "busi_breast_us"])
def test_groups_never_straddle_splits(folders, name):
    groups = folders / get_entry(name).groups
    plan = plan_entry(get_entry(name), folders)
    assert plan.info["groups"] > 0 and _straddling(plan, groups) == 0
    if name == "kidney_ct":  # the groups matter: a plain seeded split puts near-copies on both sides
        from promptsearch.data import plan_folder

        assert plan.info == {**plan.info, "groups": 361, "grouped_images": 1613}
        assert _straddling(plan_folder(folders / name), groups) > 100
        other = plan_entry(get_entry(name), folders, split_seed=1)
        assert other.parts != plan.parts and _straddling(other, groups) == 0


# --- catalogue errors name the file, the line and the field -----------------------------------------
GOOD = """\
version: 1
datasets:
  mine:
    folder: mine
    anatomy: breast
    modality: ultrasound
    classes:
      benign: tumor
      malignant: tumor
    source: my_lab
"""


@pytest.mark.parametrize("old,new,line,field,reason", [
    ("benign: tumor", "benign: tumour", 8, "datasets.mine.classes.benign", "unknown pathology tag 'tumour'"),
    ("anatomy: breast", "anatomy: chest", 5, "datasets.mine.anatomy", "unknown anatomy 'chest'"),
    ("modality: ultrasound", "modality: US", 6, "datasets.mine.modality", "unknown modality 'US'"),
    ("    source: my_lab", "    source: my_lab\n    colour: 1", 11, "datasets.mine.colour", "unknown key 'colour'"),
    ("    source: my_lab", "", 3, "datasets.mine.source", "required field is missing"),
    ("folder: mine", "folder: /data/mine", 4, "datasets.mine.folder", "relative to the folders root"),
    ("folder: mine", "medmnist: breastmnist", 8, "datasets.mine.classes.benign", "not a class of breastmnist"),
    ("folder: mine", "medmnist: kneemnist", 4, "datasets.mine.medmnist", "unknown MedMNIST 2D dataset"),
    ("    source: my_lab", "    source: my_lab\n    split: {kind: official}", 11, "datasets.mine.split.kind",
     "'official' is MedMNIST's"),
    ("      malignant: tumor\n", "", 7, "datasets.mine.classes", "at least two classes"),
    ("  mine:", "  Mine!:", 3, "datasets.Mine!", "a dataset name is lower-case"),
])
def test_catalogue_errors_name_file_line_field(old, new, line, field, reason):
    assert old in GOOD
    with pytest.raises(CatalogError) as e:
        parse_catalog(GOOD.replace(old, new), "my.yaml")
    assert f"my.yaml:{line}: {field}: " in str(e.value) and reason in str(e.value), str(e.value)


def _user_root(tmp_path, folders, text=GOOD, per_class=6) -> Path:
    """A folders root with catalog.yaml beside a small real folder (copied from busi_breast_us)."""
    for c in ("benign", "malignant"):
        d = tmp_path / "mine" / c
        d.mkdir(parents=True)
        for f in sorted((folders / "busi_breast_us" / c).iterdir())[:per_class]:
            shutil.copy(f, d / f.name)
    (tmp_path / "catalog.yaml").write_text(text)
    return tmp_path


def test_user_catalogue_beside_the_folders(tmp_path, folders):
    root = _user_root(tmp_path, folders, GOOD.replace("    source: my_lab", "    source: my_lab\n    channels: 3"))
    d = load_dataset("mine", root=root)
    assert d.name == "mine" and d.classes == ["benign", "malignant"] and len(d.train) + len(d.val) + len(d.test) == 12
    assert d.channels == 3  # the entry asks for RGB of grey ultrasound
    assert "mine" not in catalog() and "mine" in catalog(root)
    assert load_dataset("mine", root=root, catalog=root / "catalog.yaml").name == "mine"


def test_entry_against_its_folder(tmp_path, folders):
    root = _user_root(tmp_path, folders, GOOD.replace("malignant: tumor", "malignant: tumor\n      normal: normal"))
    with pytest.raises(CatalogError, match=r"catalog.yaml:10: datasets.mine.classes.normal: class 'normal' is not a folder"):
        load_dataset("mine", root=root)
    (root / "catalog.yaml").write_text(GOOD.replace("folder: mine", "folder: gone"))
    with pytest.raises(CatalogError, match=r"catalog.yaml:4: datasets.mine.folder: folder 'gone' not found"):
        load_dataset("mine", root=root)
    (root / "catalog.yaml").write_text(GOOD.replace("    source: my_lab", "    source: my_lab\n    groups: none.tsv"))
    with pytest.raises(CatalogError, match=r"catalog.yaml:11: datasets.mine.groups: groups file 'none.tsv' not found"):
        load_dataset("mine", root=root)
    (root / "catalog.yaml").write_text(GOOD.replace("  mine:", "  busi_breast_us:"))
    with pytest.raises(CatalogError, match=r"catalog.yaml:3: datasets.busi_breast_us: dataset 'busi_breast_us' is "
                                           r"already defined at .*datasets.yaml:\d+"):
        load_dataset("busi_breast_us", root=root)
    (root / "catalog.yaml").write_text(GOOD.replace("malignant: tumor", "malignant: tumor\n    split: {kind: folders}"))
    with pytest.raises(CatalogError, match=r"catalog.yaml:10: datasets.mine.split.kind: 'folders' does not fit"):
        load_dataset("mine", root=root)


def test_one_class_and_corrupt_images_name_the_file(tmp_path, folders):
    root = _user_root(tmp_path, folders)
    (root / "mine" / "malignant" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"unreadable image .*mine/malignant/broken.png"):
        load_dataset("mine", root=root)
    shutil.rmtree(root / "mine" / "malignant")
    with pytest.raises(DataError, match=r"mine needs at least two class sub-folders, found \['benign'\]"):
        load_dataset("mine", root=root)


def test_no_folders_root_says_how_to_give_one():
    with pytest.raises(CatalogError, match="datasets.yaml:\\d+: datasets.kidney_ct.folder: no folders root.*"
                                           "--folders-root.*PROMPTSEARCH_FOLDERS_ROOT"):
        load_dataset("kidney_ct")


# --- the leakage guard ------------------------------------------------------------------------------
def test_same_source_and_leak_guard(tmp_path, folders):
    assert same_source("breastmnist", "busi_breast_us") and same_source("pneumoniamnist", "chest_xray_pneumonia")
    assert not same_source("breastmnist", "kidney_ct") and not same_source("busi_breast_us", "eye_fundus", folders)
    check_no_leak(["kidney_ct", "eye_fundus"], "breastmnist")
    with pytest.raises(LeakError, match=r"'busi_breast_us' \(source busi.*\) and 'breastmnist' \(source busi"):
        check_no_leak(["kidney_ct", "busi_breast_us"], "breastmnist")
    mine = get_entry("mine", _user_root(tmp_path, folders))  # source my_lab, but its images are BUSI's files
    assert same_source(mine, "busi_breast_us", folders) and not same_source(mine, "busi_breast_us", folders, images=False)
    with pytest.raises(LeakError, match="'busi_breast_us' .* and 'mine'"):
        check_no_leak(["busi_breast_us"], "mine", folders, catalog=tmp_path / "catalog.yaml")


# --- the CLI ----------------------------------------------------------------------------------------
def test_cli_data_list_and_show(folders, data_root):
    from promptsearch.cli import app

    run = CliRunner().invoke
    r = run(app, ["data", "list", "--folders-root", str(folders), "--data-root", str(data_root), "--json"])
    assert r.exit_code == 0, r.output
    rows = {e["name"]: e for e in json.loads(r.stdout)}
    assert set(rows) >= {*FOLDER_SETS, "breastmnist", "pneumoniamnist", "retinamnist"}
    assert rows["kidney_ct"]["counts"]["test"] == {"Cyst": 84, "Normal": 102, "Stone": 101, "Tumor": 101}
    assert rows["busi_breast_us"]["classes"]["benign"] == ["tumor"] and rows["breastmnist"]["source"] == "busi"
    r = run(app, ["data", "list", "--folders-root", str(folders), "--data-root", str(data_root)])
    assert r.exit_code == 0 and "chest_xray_pneumonia" in r.stdout and "inflammation" in r.stdout
    r = run(app, ["data", "show", "busi_breast_us", "--folders-root", str(folders)])
    assert r.exit_code == 0, r.output
    assert "same data as breastmnist" in r.stdout and "benign" in r.stdout and "776" in r.stdout
    r = run(app, ["data", "show", "breastmnist", "--data-root", str(data_root), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["same_source_as"] == ["busi_breast_us"]
    r = run(app, ["data", "show", "kneemnist"])
    assert r.exit_code == 2 and "unknown dataset 'kneemnist'" in r.output


def test_cli_data_validate(tmp_path, folders, data_root):
    from promptsearch.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("benign: tumor", "benign: tumour"))
    r = CliRunner().invoke(app, ["data", "validate", str(bad)])
    assert r.exit_code == 2 and "bad.yaml:8: datasets.mine.classes.benign: unknown pathology tag 'tumour'" in r.output
    root = _user_root(tmp_path / "ok", folders)
    r = CliRunner().invoke(app, ["data", "validate", str(root / "catalog.yaml"), "--folders-root", str(root)])
    assert r.exit_code == 0 and "ok (1 entries, images: mine 12)" in r.stdout, r.output
