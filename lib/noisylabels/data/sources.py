"""Where each data set comes from: `fetch(name, options, downloads)` returns its arrays.

- digits: scikit-learn's handwritten digits (shipped with the package, no network), split
  into train and test by a stratified, seeded split.
- mnist, fashion-mnist: torchvision's dataset classes download the IDX archives (or find
  them already in `downloads`) and parse them.
- cifar10, cifar100, cifar4: torchvision's classes download, verify and extract the python
  archives; the pickled batches are then read here, so that CIFAR-100's coarse
  (super-class) labels are kept and CIFAR-4 (seed 004) can be cut out of CIFAR-10.

Images come back as uint8 N x H x W x C, labels as int64. torchvision and scikit-learn are
imported inside the functions: the light stages import this module for its constants.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "cifar4")
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


class DataError(RuntimeError):
    """A data set that cannot be had or read; str(error) is the one line shown to the user."""


@dataclass
class Arrays:
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]
    source: str
    # optional extra label arrays (CIFAR-100: train_coarse_labels, test_coarse_labels)
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    extra_meta: dict = field(default_factory=dict)


def _digits(options: dict) -> Arrays:
    from sklearn.datasets import load_digits

    d = load_digits()
    # 8x8 images with 17 grey levels (0..16), stretched to the uint8 range of the other sets
    images = np.rint(d.images * (255 / 16)).astype(np.uint8)[..., None]
    labels = d.target.astype(np.int64)
    rng = np.random.default_rng(options["split_seed"])
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):  # stratified: the same test fraction of every class
        idx = rng.permutation(np.flatnonzero(labels == c))
        test[idx[: round(options["test_fraction"] * len(idx))]] = True
    return Arrays(
        images[~test], labels[~test], images[test], labels[test],
        classes=[str(c) for c in range(10)],
        source=(f"sklearn.datasets.load_digits, stratified split test_fraction="
                f"{options['test_fraction']} split_seed={options['split_seed']}"),
    )


def _download_failed(name, error, where, files) -> DataError:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return DataError(
        f"dataset {name!r}: download failed ({reason}); without network, put "
        f"{', '.join(files)} into {where}/ and rerun"
    )


def _mnist_style(name: str, downloads: Path) -> Arrays:
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}[name]
    raw = downloads / cls.__name__ / "raw"
    try:
        train = cls(str(downloads), train=True, download=True)
        test = cls(str(downloads), train=False, download=True)
    except (RuntimeError, OSError) as e:
        raise _download_failed(name, e, raw, [f for f, _ in cls.resources]) from e
    except (ValueError, AssertionError, IndexError) as e:
        raise DataError(f"dataset {name!r}: corrupt IDX file in {raw}/ ({e})") from e
    return Arrays(
        train.data.numpy()[..., None], train.targets.numpy().astype(np.int64),
        test.data.numpy()[..., None], test.targets.numpy().astype(np.int64),
        classes=list(cls.classes), source=f"torchvision.datasets.{cls.__name__} ({cls.mirrors[0]})",
    )


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"missing file {path}")
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except Exception as e:  # truncated or not a pickle: report the file, not a traceback
        raise DataError(f"corrupt file {path} ({type(e).__name__}: {e})") from e


def read_cifar_batches(folder: Path, files: list[str], label_keys: list[str]):
    """Read CIFAR python batches -> (images N x 32 x 32 x 3 uint8, {label_key: int64 array})."""
    images, labels = [], {k: [] for k in label_keys}
    for name in files:
        batch = _unpickle(folder / name)
        missing = [k for k in ["data", *label_keys] if k not in batch]
        if missing:
            raise DataError(f"corrupt file {folder / name} (no {missing[0]!r} entry)")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"corrupt file {folder / name} (data has shape {data.shape}, expected N x 3072)")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # rows are CHW
        for k in label_keys:
            labels[k].append(np.asarray(batch[k], dtype=np.int64))
    return np.concatenate(images), {k: np.concatenate(v) for k, v in labels.items()}


def _cifar(name: str, downloads: Path, options: dict) -> Arrays:
    from torchvision import datasets

    cls = datasets.CIFAR100 if name == "cifar100" else datasets.CIFAR10
    folder = downloads / cls.base_folder
    if not folder.is_dir():
        try:  # torchvision downloads (or finds) the archive, checks its md5 and extracts it
            cls(str(downloads), train=True, download=True)
        except (RuntimeError, OSError) as e:
            raise _download_failed(name, e, downloads, [cls.filename]) from e
    keys = ["fine_labels", "coarse_labels"] if name == "cifar100" else ["labels"]
    train_x, train_y = read_cifar_batches(folder, [f for f, _ in cls.train_list], keys)
    test_x, test_y = read_cifar_batches(folder, [f for f, _ in cls.test_list], keys)
    meta = _unpickle(folder / cls.meta["filename"])
    source = f"torchvision.datasets.{cls.__name__} ({cls.url})"
    if name == "cifar100":
        return Arrays(
            train_x, train_y["fine_labels"], test_x, test_y["fine_labels"],
            classes=list(meta["fine_label_names"]), source=source,
            extra={"train_coarse_labels": train_y["coarse_labels"],
                   "test_coarse_labels": test_y["coarse_labels"]},
            extra_meta={"coarse_classes": list(meta["coarse_label_names"])},
        )
    classes = list(meta["label_names"])
    if name == "cifar10":
        return Arrays(train_x, train_y["labels"], test_x, test_y["labels"], classes, source)
    # cifar4: keep the listed classes, relabelled 0..K-1 in the order listed
    keep = [classes.index(c) for c in options["classes"]]
    relabel = np.full(len(classes), -1, dtype=np.int64)
    relabel[keep] = np.arange(len(keep))
    tr, te = relabel[train_y["labels"]] >= 0, relabel[test_y["labels"]] >= 0
    return Arrays(
        train_x[tr], relabel[train_y["labels"][tr]], test_x[te], relabel[test_y["labels"][te]],
        classes=list(options["classes"]), source=f"{source}, classes {', '.join(options['classes'])}",
    )


def fetch(name: str, options: dict, downloads: str | Path) -> Arrays:
    """The arrays of data set `name` (options: its params.yaml `datasets.<name>` entry)."""
    downloads = Path(downloads)
    if name == "digits":
        return _digits(options)
    if name in ("mnist", "fashion-mnist"):
        return _mnist_style(name, downloads)
    if name in ("cifar10", "cifar100", "cifar4"):
        return _cifar(name, downloads, options)
    raise DataError(f"dataset={name!r}: expected one of {', '.join(DATASETS)}")
