"""Datasets and metrics: MedMNIST from a local root, image folders, clear errors, MedMNIST's AUC.

    PROMPTSEARCH_DATA_ROOT=../shared/data/medmnist python -m pytest tests/test_data.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from promptsearch.data import DataError, load_dataset
from promptsearch.metrics import classification_metrics


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
