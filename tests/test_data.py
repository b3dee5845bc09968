"""Datasets and metrics: MedMNIST from a local root, image folders (both layouts, near-duplicate
groups, the pixel cache), clear errors, MedMNIST's AUC.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -m pytest tests/test_data.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from promptsearch.data import DataError, load_dataset, load_folder, read_groups
from promptsearch.metrics import classification_metrics


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Decoded folders cache in a temporary directory, not the user's ~/.cache."""
    monkeypatch.setenv("PROMPTSEARCH_CACHE", str(tmp_path_factory.getbasetemp() / "image-cache"))


def test_medmnist_official_splits(breast, data_root):
    assert (len(breast.train), len(breast.val), len(breast.test)) == (546, 78, 156)
    assert breast.task == "binary-class" and breast.num_outputs == 2
    assert breast.train.images.dtype == torch.uint8 and breast.train.images.shape[1:] == (1, 28, 28)
    pneu = load_dataset("pneumoniamnist", root=data_root)
    assert (len(pneu.train), len(pneu.val), len(pneu.test)) == (4708, 524, 624)


def test_missing_data_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("PROMPTSEARCH_DATA_ROOT", raising=False)
    with pytest.raises(DataError, match=f"{tmp_path}/breastmnist.npz not found.*--data-root"):
        load_dataset("breastmnist", root=tmp_path)
    with pytest.raises(DataError, match="no data root.*PROMPTSEARCH_DATA_ROOT"):
        load_dataset("breastmnist")
    with pytest.raises(DataError, match="unknown MedMNIST dataset 'kneemnist'"):
        load_dataset("kneemnist", root=tmp_path)


def _write_folder(root, breast, per_class=20):
    for label, name in enumerate(["malignant", "benign"]):
        d = root / name
        d.mkdir(parents=True)
        idx = (breast.train.labels == label).nonzero().flatten()[:per_class]
        for i in idx.tolist():
            Image.fromarray(breast.train.images[i, 0].numpy()).save(d / f"{i}.png")


def test_image_folder_dataset_split_by_seed(tmp_path, breast):
    _write_folder(tmp_path / "us", breast)
    a = load_dataset(f"folder:{tmp_path / 'us'}", size=32, split_seed=1)
    b = load_dataset(str(tmp_path / "us"), size=32, split_seed=1)
    c = load_dataset(str(tmp_path / "us"), size=32, split_seed=2)
    assert a.classes == ["benign", "malignant"] and a.task == "binary-class"
    assert len(a.train) + len(a.val) + len(a.test) == 40
    assert (len(a.val), len(a.test)) == (4, 8)  # stratified: 2 + 4 of each class
    assert a.train.images.shape[1:] == (1, 32, 32)
    assert torch.equal(a.train.images, b.train.images)
    assert not torch.equal(a.train.images, c.train.images)


def test_image_folder_errors(tmp_path, breast):
    with pytest.raises(DataError, match="not found"):
        load_dataset(f"folder:{tmp_path / 'none'}")
    (tmp_path / "one" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="at least two class sub-folders"):
        load_dataset(f"folder:{tmp_path / 'one'}")
    _write_folder(tmp_path / "bad", breast, per_class=3)
    (tmp_path / "bad" / "benign" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="unreadable image .*broken.png"):
        load_dataset(f"folder:{tmp_path / 'bad'}")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        load_dataset(f"folder:{tmp_path / 'empty'}")


def _write_split_folder(root, breast, train=12, test=4):
    """train/<class>/ and test/<class>/ of real BreastMNIST images."""
    for label, name in enumerate(["malignant", "benign"]):
        idx = (breast.train.labels == label).nonzero().flatten()[:train + test].tolist()
        for split, part in (("train", idx[:train]), ("test", idx[train:])):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in part:
                Image.fromarray(breast.train.images[i, 0].numpy()).save(d / f"{i}.png")


def test_train_test_folders_keep_their_test_split(tmp_path, breast):
    _write_split_folder(tmp_path / "tt", breast)
    d = load_dataset(f"folder:{tmp_path / 'tt'}", size=32, val_fraction=0.25)
    assert d.classes == ["benign", "malignant"] and d.extra["split"] == "folders"
    assert (len(d.train), len(d.val), len(d.test)) == (18, 6, 8)  # val: 3 of each class's 12 train images
    assert d.test.labels.tolist() == [0] * 4 + [1] * 4
    with pytest.raises(DataError, match="split 'stratified' needs class sub-folders only"):
        load_folder(tmp_path / "tt", split="stratified")


def test_groups_stay_on_one_side(tmp_path, breast):
    _write_folder(tmp_path / "us", breast)
    files = sorted(f.relative_to(tmp_path / "us").as_posix() for f in (tmp_path / "us").rglob("*.png"))
    groups = tmp_path / "groups.tsv"  # two big groups of near-copies, one of them across both classes
    groups.write_text("cluster_id\tfile\n" + "".join(f"{i % 2}\t{f}\n" for i, f in enumerate(files[:24])))
    for seed in range(5):
        d = load_folder(tmp_path / "us", size=16, split_seed=seed, groups=groups)
        assert d.extra["groups"] == 2 and len(d.train) + len(d.val) + len(d.test) == 40
        ids = {s: {tuple(x.flatten().tolist()) for x in getattr(d, s).images} for s in ("train", "val", "test")}
        for g in (0, 1):
            member = {tuple(np.asarray(Image.open(tmp_path / "us" / f).resize((16, 16), Image.BILINEAR)).flatten().tolist())
                      for f in files[g:24:2]}
            assert sum(bool(member & v) for v in ids.values()) == 1, (seed, g)  # one split holds the whole group
    _write_split_folder(tmp_path / "tt", breast)
    tt = sorted(f.relative_to(tmp_path / "tt").as_posix() for f in (tmp_path / "tt").rglob("*.png"))
    (tmp_path / "tt.tsv").write_text(f"cluster_id\tfile\n7\t{tt[0]}\n7\t{tt[-1]}\n")  # a test image's train copy
    assert tt[0].startswith("test/") and tt[-1].startswith("train/")
    d = load_folder(tmp_path / "tt", size=16, groups=tmp_path / "tt.tsv", val_fraction=0.25)
    assert d.extra["dropped_near_copies"] == 1 and len(d.test) == 8 and len(d.train) + len(d.val) == 23


def test_groups_file_errors_name_the_line(tmp_path, breast):
    _write_folder(tmp_path / "us", breast, per_class=3)
    bad = tmp_path / "g.tsv"
    bad.write_text("cluster_id\tfile\n0\tbenign/gone.png\n")
    with pytest.raises(DataError, match=r"g.tsv:2: 'benign/gone.png' is not a file in .*us \(a stale groups file\?\)"):
        read_groups(bad, tmp_path / "us")
    bad.write_text("a\tb\n")
    with pytest.raises(DataError, match=r"g.tsv:1: header 'a\\tb' needs a file"):
        load_folder(tmp_path / "us", groups=bad)


def test_pixel_cache_keyed_by_content(tmp_path, breast, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("PROMPTSEARCH_CACHE", str(cache))
    _write_folder(tmp_path / "us", breast, per_class=10)
    a = load_dataset(f"folder:{tmp_path / 'us'}", size=24)
    assert len(list((cache / "images").glob("*.npy"))) == 1
    b = load_dataset(f"folder:{tmp_path / 'us'}", size=24)  # from the cache
    assert torch.equal(a.train.images, b.train.images) and len(list((cache / "images").glob("*.npy"))) == 1
    first = sorted((tmp_path / "us" / "benign").iterdir())[0]
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(first)  # same name, new pixels: a new key
    c = load_dataset(f"folder:{tmp_path / 'us'}", size=24)
    assert len(list((cache / "images").glob("*.npy"))) == 2 and not torch.equal(
        torch.cat([a.train.images, a.val.images, a.test.images]), torch.cat([c.train.images, c.val.images, c.test.images]))
    monkeypatch.setenv("PROMPTSEARCH_CACHE", "off")
    load_dataset(f"folder:{tmp_path / 'us'}", size=20)
    assert len(list((cache / "images").glob("*.npy"))) == 2


def test_metrics_binary_multiclass_multilabel():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([[.9, .1], [.8, .2], [.3, .7], [.4, .6], [.6, .4]])
    m = classification_metrics("binary-class", y, s)
    assert m["auc"] == pytest.approx(roc_auc_score(y, s[:, 1]))
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["worst_class_recall"] == pytest.approx(1 / 2)  # class 1: one of two found
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    y3 = np.array([0, 1, 2, 2])
    s3 = np.array([[.8, .1, .1], [.1, .8, .1], [.1, .1, .8], [.6, .3, .1]])
    m3 = classification_metrics("multi-class", y3, s3)
    assert m3["worst_class_recall"] == pytest.approx(0.5)
    assert m3["auc"] == pytest.approx(np.mean([roc_auc_score(y3 == k, s3[:, k]) for k in range(3)]))
    yl = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    sl = np.array([[.9, .2], [.2, .4], [.7, .8], [.1, .1]])
    ml = classification_metrics("multi-label", yl, sl)
    assert ml["worst_class_recall"] == pytest.approx(0.5)  # label 1: one of two above .5
    assert ml["auc"] == pytest.approx(1.0)
