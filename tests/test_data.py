"""Loaders on tiny fixture files written here in the real formats, and the on-disk store."""
import pickle
import struct
import urllib.error

import numpy as np
import pytest

from noisylabels.data import sources, store
from noisylabels.data.sources import CIFAR10_CLASSES, DataError


def write_idx(path, array):
    """IDX (MNIST) format: magic 0x0000 08 <ndim>, big-endian int32 dims, then uint8 data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def write_mnist_fixture(root, folder, n_train=12, n_test=5):
    rng = np.random.default_rng(0)
    raw = root / folder / "raw"
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def write_cifar_fixture(root, hundred=False, n=6):
    """The python pickle batches: dicts with 'data' (N x 3072 uint8, CHW rows) and labels."""
    rng = np.random.default_rng(1)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    files = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(files):
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "batch_label": name}
        if hundred:
            batch["fine_labels"] = [(k * n + i) % 100 for i in range(n)]
            batch["coarse_labels"] = [f % 20 for f in batch["fine_labels"]]
        else:
            batch["labels"] = [(k + i) % 10 for i in range(n)]
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    meta = ({"fine_label_names": [f"fine{i}" for i in range(100)],
             "coarse_label_names": [f"coarse{i}" for i in range(20)]} if hundred
            else {"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": n})
    with open(folder / ("meta" if hundred else "batches.meta"), "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return folder


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_style_from_idx_files(tmp_path, name, folder):
    write_mnist_fixture(tmp_path, folder)
    a = sources.fetch(name, {}, tmp_path)
    assert a.train_images.shape == (12, 28, 28, 1) and a.train_images.dtype == np.uint8
    assert a.test_labels.tolist() == [0, 1, 2, 3, 4] and a.train_labels.dtype == np.int64
    assert len(a.classes) == 10


def test_cifar10_from_pickle_batches(tmp_path):
    folder = write_cifar_fixture(tmp_path)
    a = sources.fetch("cifar10", {}, tmp_path)
    assert a.train_images.shape == (30, 32, 32, 3) and a.test_images.shape == (6, 32, 32, 3)
    # rows are stored channel-first: pixel (0, 0) of channel 1 is element 1024 of the row
    with open(folder / "data_batch_1", "rb") as f:
        row = pickle.load(f)["data"][0]
    assert a.train_images[0, 0, 0, 1] == row[1024]
    assert a.classes == list(CIFAR10_CLASSES)


def test_cifar4_keeps_listed_classes_relabelled_in_order(tmp_path):
    write_cifar_fixture(tmp_path)
    full = sources.fetch("cifar10", {}, tmp_path)
    a = sources.fetch("cifar4", {"classes": ["cat", "deer", "dog", "horse"]}, tmp_path)
    keep = np.isin(full.train_labels, [3, 4, 5, 7])
    assert len(a.train_labels) == keep.sum()
    assert (a.train_labels == np.searchsorted([3, 4, 5, 7], full.train_labels[keep])).all()
    assert a.classes == ["cat", "deer", "dog", "horse"]


def test_cifar100_keeps_coarse_labels(tmp_path):
    write_cifar_fixture(tmp_path, hundred=True)
    a = sources.fetch("cifar100", {}, tmp_path)
    assert (a.extra["train_coarse_labels"] == a.train_labels % 20).all()
    assert len(a.extra_meta["coarse_classes"]) == 20 and len(a.classes) == 100


def test_corrupt_cifar_batch_is_named(tmp_path):
    folder = write_cifar_fixture(tmp_path)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        sources.fetch("cifar10", {}, tmp_path)


def test_download_failure_says_where_to_put_the_archives(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.mnist as tv_mnist

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(DataError) as e:
        sources.fetch("mnist", {}, tmp_path)
    assert "train-images-idx3-ubyte.gz" in str(e.value) and str(tmp_path / "MNIST" / "raw") in str(e.value)
    with pytest.raises(DataError) as e:
        sources.fetch("cifar10", {}, tmp_path)
    assert "cifar-10-python.tar.gz" in str(e.value) and "\n" not in str(e.value)


def test_digits_stratified_split():
    a = sources.fetch("digits", {"test_fraction": 0.3, "split_seed": 0}, "unused")
    assert len(a.train_labels) + len(a.test_labels) == 1797
    assert a.train_images.shape[1:] == (8, 8, 1) and a.train_images.max() == 255
    per_class = np.bincount(a.test_labels) / (np.bincount(a.test_labels) + np.bincount(a.train_labels))
    assert np.allclose(per_class, 0.3, atol=0.01)


def test_store_roundtrip_and_corruption(tmp_path):
    a = sources.fetch("digits", {"test_fraction": 0.3, "split_seed": 0}, "unused")
    store.save(tmp_path / "digits", "digits", a)
    ds = store.load(tmp_path / "digits")
    assert (ds.train_labels == a.train_labels).all() and ds.num_classes == 10
    assert ds.meta["n_train"] == len(a.train_labels)
    f = tmp_path / "digits" / "train_labels.npy"
    f.write_bytes(f.read_bytes()[:-8] + bytes(8))
    with pytest.raises(DataError, match="checksum"):
        store.load(tmp_path / "digits")
    f.unlink()
    with pytest.raises(DataError, match="train_labels.npy: missing"):
        store.load(tmp_path / "digits")
