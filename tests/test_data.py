"""Loaders on tiny fixture files written here in the real formats, and the on-disk store."""
import pickle
import struct
import urllib.error
from pathlib import Path

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


@pytest.fixture
def offline(monkeypatch):
    """Every download fails as it does without network (torchvision's message, several lines)."""
    from torchvision.datasets import utils

    def unreachable(url, root, filename=None, md5=None):
        raise urllib.error.URLError(f"Error downloading {filename}:\nTried {url}, got:\nnetwork unreachable")

    monkeypatch.setattr(utils, "download_url", unreachable)


def test_download_failure_says_where_to_put_the_archives(tmp_path, offline):
    with pytest.raises(DataError) as e:
        sources.fetch("mnist", {}, tmp_path)
    assert str(e.value) == (
        f"dataset 'mnist': download failed (<urlopen error Error downloading train-images-idx3-ubyte.gz: Tried "
        f"http://yann.lecun.com/exdb/mnist/train-images-idx3-ubyte.gz, got: network unreachable>); without network, "
        f"put the published archives train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        f"t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, or the same files uncompressed "
        f"(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte) into "
        f"{tmp_path / 'MNIST' / 'raw'}/ and rerun")
    with pytest.raises(DataError) as e:
        sources.fetch("cifar10", {}, tmp_path)
    assert "put the published archive cifar-10-python.tar.gz, or the folder cifar-10-batches-py/" in str(e.value)
    assert "\n" not in str(e.value)


def _gzip_mnist_fixture(root, monkeypatch):
    """The uncompressed fixture gzipped into the published archive names, with MNIST's
    published md5s replaced by theirs (what torchvision pins for the real archives)."""
    import gzip
    import hashlib

    from torchvision import datasets

    write_mnist_fixture(root, "MNIST")
    raw, resources = root / "MNIST" / "raw", []
    for archive, _ in datasets.MNIST.resources:
        idx = raw / archive.removesuffix(".gz")
        (raw / archive).write_bytes(gzip.compress(idx.read_bytes(), mtime=0))
        idx.unlink()
        resources.append((archive, hashlib.md5((raw / archive).read_bytes()).hexdigest()))
    monkeypatch.setattr(datasets.MNIST, "resources", resources)
    return raw, dict(resources)


def test_mnist_archive_with_its_published_md5_is_read_and_recorded(tmp_path, monkeypatch, offline):
    raw, md5 = _gzip_mnist_fixture(tmp_path, monkeypatch)
    a = sources.fetch("mnist", {}, tmp_path)
    assert a.train_images.shape == (12, 28, 28, 1) and a.test_labels.tolist() == [0, 1, 2, 3, 4]
    assert a.files[0] == {"path": str(raw / "train-images-idx3-ubyte.gz"),
                          "md5": md5["train-images-idx3-ubyte.gz"], "published": True}
    assert a.source == f"MNIST from the files in {raw}/"


def test_mnist_archive_with_another_md5_is_refused_saying_why(tmp_path, monkeypatch, offline):
    raw, md5 = _gzip_mnist_fixture(tmp_path, monkeypatch)
    archive = raw / "t10k-labels-idx1-ubyte.gz"
    archive.write_bytes(archive.read_bytes() + b"\0")
    import hashlib

    found = hashlib.md5(archive.read_bytes()).hexdigest()
    with pytest.raises(DataError) as e:
        sources.fetch("mnist", {}, tmp_path)
    assert str(e.value).startswith(
        f"{archive}: checksum mismatch (md5 expected {md5[archive.name]}, found {found}); accepted in {raw}/: the "
        f"published archives train-images-idx3-ubyte.gz, ")


def test_uncompressed_mnist_of_another_size_is_accepted_and_reported(tmp_path, offline):
    write_mnist_fixture(tmp_path, "MNIST")
    a = sources.fetch("mnist", {}, tmp_path)
    assert a.notes == ["mnist: the local files hold 12 training and 5 test images; the published data set has "
                       "60000 and 10000"]
    assert [Path(f["path"]).name for f in a.files] == ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    assert all("published" not in f and len(f["md5"]) == 32 for f in a.files)  # IDX files have no published md5
    store.save(tmp_path / "raw", "mnist", a)
    meta = store.load(tmp_path / "raw").meta
    assert meta["notes"] == a.notes and meta["files"] == a.files


def _tar_cifar_fixture(root, monkeypatch, member=None):
    """The CIFAR-10 fixture folder packed as the published archive, its md5 pinned in place of
    the real one; `member` adds one more (name, bytes) entry."""
    import hashlib
    import io
    import shutil
    import tarfile

    from torchvision import datasets

    folder = write_cifar_fixture(root)
    archive = root / datasets.CIFAR10.filename
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
        if member:
            info = tarfile.TarInfo(member[0])
            info.size = len(member[1])
            tar.addfile(info, io.BytesIO(member[1]))
    shutil.rmtree(folder)
    monkeypatch.setattr(datasets.CIFAR10, "tgz_md5", hashlib.md5(archive.read_bytes()).hexdigest())
    return archive, folder


def test_cifar_archive_is_extracted_and_its_files_recorded(tmp_path, monkeypatch, offline):
    archive, folder = _tar_cifar_fixture(tmp_path, monkeypatch)
    a = sources.fetch("cifar10", {}, tmp_path)
    assert a.train_images.shape == (30, 32, 32, 3) and folder.is_dir()
    assert a.files[0]["path"] == str(archive) and a.files[0]["published"] is True
    # the fixture's batches are not the published ones: recorded, and the size reported
    assert [f["published"] for f in a.files[1:]] == [False] * 7
    assert a.notes == ["cifar10: the local files hold 30 training and 6 test images; the published data set has "
                       "50000 and 10000"]


def test_cifar_archive_with_a_path_out_of_the_folder_is_not_extracted(tmp_path, monkeypatch, offline):
    archive, folder = _tar_cifar_fixture(tmp_path, monkeypatch, member=("../escaped.txt", b"outside"))
    with pytest.raises(DataError, match=rf"^{archive}: cannot be extracted \(OutsideDestinationError"):
        sources.fetch("cifar10", {}, tmp_path)
    assert not (tmp_path.parent / "escaped.txt").exists() and not folder.exists()
    assert [p.name for p in tmp_path.iterdir()] == [archive.name]  # no temporary folder left


class _RunsCode:
    """What a replaced pickle could hold: unpickling it calls a function of the attacker's choice
    (here open(marker, "w"), which creates the marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path):
    folder = write_cifar_fixture(tmp_path)
    marker = tmp_path / "code-ran"
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({"data": _RunsCode(marker), "labels": []}, f, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_2 \(UnpicklingError: refused to load io.open\)$"):
        sources.fetch("cifar10", {}, tmp_path)
    assert not marker.exists()


def test_a_cifar_n_file_that_would_run_code_is_refused(tmp_path):
    import torch

    write_cifar_fixture(tmp_path)
    marker = tmp_path / "code-ran"
    torch.save({"clean_label": _RunsCode(marker)}, tmp_path / "CIFAR-10_human.pt")
    with pytest.raises(DataError, match=r"CIFAR-10_human.pt \(UnpicklingError: Weights only load failed"):
        sources.fetch("cifar10n", {}, tmp_path)
    assert not marker.exists()


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


def write_cifar_n_fixture(root, hundred=False, n=None, clean=None):
    """CIFAR-N's label file: torch.save of a dict of numpy label arrays, one per training image."""
    import torch

    labels = sources.fetch("cifar100" if hundred else "cifar10", {}, root).train_labels if clean is None else clean
    n = len(labels) if n is None else n
    rng = np.random.default_rng(2)
    keys = ["noisy_label"] if hundred else ["aggre_label", "random_label1", "random_label2", "random_label3",
                                            "worse_label"]
    content = {"clean_label": labels[:n], **{k: rng.integers(0, 100 if hundred else 10, n) for k in keys}}
    torch.save(content, root / sources.CIFAR_N_FILES["cifar100n" if hundred else "cifar10n"])
    return content


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_n_human_labels_joined_by_index(tmp_path, hundred):
    write_cifar_fixture(tmp_path, hundred=hundred)
    content = write_cifar_n_fixture(tmp_path, hundred=hundred)
    a = sources.fetch("cifar100n" if hundred else "cifar10n", {}, tmp_path)
    sets = sources.REAL_LABEL_SETS["cifar100n" if hundred else "cifar10n"]
    for label_set, key in sets.items():
        assert (a.extra[f"train_real_{label_set}"] == content[key]).all()
    assert (a.train_labels == content["clean_label"]).all()


def test_cifar_n_file_that_does_not_match_cifar_stops_with_one_line(tmp_path, offline):
    write_cifar_fixture(tmp_path)
    write_cifar_n_fixture(tmp_path, n=29)
    with pytest.raises(DataError, match=r"CIFAR-10_human.pt: clean_label has 29 labels, the CIFAR training set "
                                        r"has 30; expected the label file of this CIFAR version$"):
        sources.fetch("cifar10n", {}, tmp_path)
    write_cifar_n_fixture(tmp_path, clean=np.zeros(30, dtype=np.int64))
    with pytest.raises(DataError, match="clean_label differs from the CIFAR training labels"):
        sources.fetch("cifar10n", {}, tmp_path)
    (tmp_path / "CIFAR-10_human.pt").unlink()
    with pytest.raises(DataError, match=r"download failed .*put CIFAR-10_human.pt into"):
        sources.fetch("cifar10n", {}, tmp_path)


def write_clothing1m_fixture(root, n_train=8, n_test=4, size=20):
    """Clothing1M's layout: annotations/*.txt (key-value labels, key lists) and the JPEGs they name."""
    from PIL import Image

    folder, rng = root / "clothing1m", np.random.default_rng(3)
    (folder / "annotations").mkdir(parents=True)
    train = [f"images/0/{i:02d}/{i}.jpg" for i in range(n_train)]
    test = [f"images/1/{i:02d}/{i}.jpg" for i in range(n_test)]
    noisy = {k: i % 14 for i, k in enumerate(train)}
    clean = {**{k: (i + 1) % 14 for i, k in enumerate(train[:3])}, **{k: i % 14 for i, k in enumerate(test)}}
    for key in train + test:
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)).save(folder / key)
    notes = folder / "annotations"
    (notes / "noisy_label_kv.txt").write_text("".join(f"{k} {v}\n" for k, v in noisy.items()))
    (notes / "clean_label_kv.txt").write_text("".join(f"{k} {v}\n" for k, v in clean.items()))
    (notes / "noisy_train_key_list.txt").write_text("\n".join(train) + "\n")
    (notes / "clean_test_key_list.txt").write_text("\n".join(test) + "\n")
    return folder, noisy, clean


def test_clothing1m_from_its_published_layout(tmp_path):
    folder, noisy, clean = write_clothing1m_fixture(tmp_path)
    a = sources.fetch("clothing1m", {"image_size": 16, "max_train": None, "max_test": None}, tmp_path)
    assert a.train_images.shape == (8, 16, 16, 3) and a.test_images.shape == (4, 16, 16, 3)
    assert a.extra["train_real_noisy"].tolist() == list(noisy.values())
    # true labels: the clean label where Clothing1M has one for a noisy-set image, else unknown
    assert a.train_labels.tolist() == [1, 2, 3] + [-1] * 5
    assert a.test_labels.tolist() == [0, 1, 2, 3] and len(a.classes) == 14
    sub = sources.fetch("clothing1m", {"image_size": 16, "max_train": 5, "max_test": 2}, tmp_path)
    assert len(sub.train_labels) == 5 and len(sub.test_labels) == 2
    assert set(sub.extra["train_real_noisy"].tolist()) <= set(noisy.values())


def test_clothing1m_missing_files_are_named(tmp_path):
    folder, _, _ = write_clothing1m_fixture(tmp_path)
    options = {"image_size": 16, "max_train": None, "max_test": None}
    (folder / "images/0/03/3.jpg").unlink()
    with pytest.raises(DataError, match=r"cannot read image .*images/0/03/3.jpg"):
        sources.fetch("clothing1m", options, tmp_path)
    (folder / "annotations" / "clean_label_kv.txt").unlink()
    with pytest.raises(DataError, match=r"^dataset 'clothing1m': missing .*annotations/clean_label_kv.txt; expected "
                                        r"Clothing1M's published layout"):
        sources.fetch("clothing1m", options, tmp_path)


def test_max_train_keeps_a_seeded_subset_in_order(tmp_path):
    write_cifar_fixture(tmp_path, hundred=True)
    full = sources.fetch("cifar100", {}, tmp_path)
    a = sources.fetch("cifar100", {"max_train": 4, "max_test": 3}, tmp_path)
    assert len(a.train_labels) == 4 and len(a.test_labels) == 3 and len(a.extra["test_coarse_labels"]) == 3
    idx = [np.flatnonzero((full.train_images == img).all(axis=(1, 2, 3)))[0] for img in a.train_images]
    assert idx == sorted(idx) and (full.train_labels[idx] == a.train_labels).all()
    assert (a.extra["train_coarse_labels"] == full.extra["train_coarse_labels"][idx]).all()
