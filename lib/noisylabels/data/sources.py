"""Where each data set comes from: `fetch(name, options, downloads)` returns its arrays.

- digits: scikit-learn's handwritten digits (shipped with the package, no network), split
  into train and test by a stratified, seeded split.
- mnist, fashion-mnist: torchvision's dataset classes download the IDX archives (or find
  them already in `downloads`) and parse them.
- cifar10, cifar100, cifar4: torchvision's classes download, verify and extract the python
  archives; the pickled batches are then read here, so that CIFAR-100's coarse
  (super-class) labels are kept and CIFAR-4 (seed 004) can be cut out of CIFAR-10.
- cifar10n, cifar100n: CIFAR-10/100 with the human labels of CIFAR-N (Wei et al. 2022),
  read from the published label file (CIFAR-10_human.pt, CIFAR-100_human.pt, downloaded
  from the CIFAR-N repository or put into `downloads`) and joined to CIFAR by index: the
  file's i-th label is the i-th training image's. Its clean labels must equal CIFAR's.
- clothing1m: Clothing1M (Xiao et al. 2015) from a local folder in its published layout
  (`downloads`/clothing1m/: the annotation files, at the top or in annotations/, and the
  images they name): training on the noisy_train_key_list with its noisy labels, testing
  on the clean_test_key_list with the clean labels; images resized to image_size.
Real noisy labels are kept as extra arrays `train_real_<label set>` (REAL_LABEL_SETS); the
`train_labels` are the true labels, -1 where unknown (most of Clothing1M's training set).
`max_train` / `max_test` keep a seeded random subset (in the original order): a full-scale
configuration can be smoke-tested on CPU.

Images come back as uint8 N x H x W x C, labels as int64. torchvision, scikit-learn and PIL
are imported inside the functions: the light stages import this module for its constants.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from noisylabels.errors import DataError

# Data sets with real noisy labels: label set name -> its key in the published file.
REAL_LABEL_SETS = {
    "cifar10n": {"aggregate": "aggre_label", "random1": "random_label1", "random2": "random_label2",
                 "random3": "random_label3", "worst": "worse_label"},
    "cifar100n": {"noisy": "noisy_label"},
    "clothing1m": {"noisy": "noisy_label_kv.txt"},
}
CIFAR_N_FILES = {"cifar10n": "CIFAR-10_human.pt", "cifar100n": "CIFAR-100_human.pt"}
CIFAR_N_URL = "https://github.com/UCSC-REAL/cifar-10-100n/raw/main/data/"
CLOTHING1M_CLASSES = ("T-shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker", "Jacket",
                      "Down Coat", "Suit", "Shawl", "Dress", "Vest", "Underwear")
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


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


def _cifar_n(name: str, downloads: Path) -> Arrays:
    import torch

    base = _cifar(name.removesuffix("n"), downloads, {})
    file = downloads / CIFAR_N_FILES[name]
    if not file.is_file():
        import urllib.request

        try:
            urllib.request.urlretrieve(CIFAR_N_URL + file.name, file.with_suffix(".part"))
        except OSError as e:
            raise _download_failed(name, e, downloads, [file.name]) from e
        file.with_suffix(".part").rename(file)
    try:
        # a pickle of numpy arrays, trusted as the CIFAR batches are (torch.load's weights_only
        # refuses numpy arrays)
        labels = torch.load(file, weights_only=False)
    except Exception as e:
        raise DataError(f"corrupt file {file} ({type(e).__name__}: {e})") from e
    n = len(base.train_labels)
    for key in ["clean_label", *REAL_LABEL_SETS[name].values()]:
        if not isinstance(labels, dict) or key not in labels:
            raise DataError(f"{file}: no {key!r} entry; expected CIFAR-N's published label file")
        if len(labels[key]) != n:
            raise DataError(f"{file}: {key} has {len(labels[key])} labels, the CIFAR training set has {n}; "
                            f"expected the label file of this CIFAR version")
    if not np.array_equal(np.asarray(labels["clean_label"]), base.train_labels):
        raise DataError(f"{file}: clean_label differs from the CIFAR training labels; the file and the archive "
                        f"are not in the same order")
    for label_set, key in REAL_LABEL_SETS[name].items():
        base.extra[f"train_real_{label_set}"] = np.asarray(labels[key], dtype=np.int64)
    base.source += f" + CIFAR-N human labels ({CIFAR_N_URL}{file.name})"
    return base


def _subset(n: int, max_n: int | None) -> np.ndarray:
    """Indices of a seeded random subset of max_n of n samples, in their original order."""
    if max_n is None or max_n >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).permutation(n)[:max_n])


def _clothing1m(folder: Path, options: dict) -> Arrays:
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    notes = folder / "annotations" if (folder / "annotations").is_dir() else folder

    def lines(file):
        path = notes / file
        if not path.is_file():
            raise DataError(f"dataset 'clothing1m': missing {path}; expected Clothing1M's published layout in "
                            f"{folder}/ (noisy_label_kv.txt, clean_label_kv.txt, noisy_train_key_list.txt, "
                            f"clean_test_key_list.txt, at the top or in annotations/, and images/)")
        return [line.split() for line in path.read_text().splitlines() if line.strip()]

    def kv(file):
        try:
            return {key: int(label) for key, label in lines(file)}
        except ValueError as e:
            raise DataError(f"corrupt file {notes / file} (expected lines '<image path> <label>': {e})") from e

    noisy, clean = kv("noisy_label_kv.txt"), kv("clean_label_kv.txt")
    train_keys = [k[0] for k in lines("noisy_train_key_list.txt")]
    test_keys = [k[0] for k in lines("clean_test_key_list.txt")]
    train_keys = [train_keys[i] for i in _subset(len(train_keys), options["max_train"])]
    test_keys = [test_keys[i] for i in _subset(len(test_keys), options["max_test"])]
    for keys, labels, file in ((train_keys, noisy, "noisy_label_kv.txt"), (test_keys, clean, "clean_label_kv.txt")):
        missing = next((k for k in keys if k not in labels), None)
        if missing:
            raise DataError(f"{notes / file}: no label for {missing}")
    size = options["image_size"]

    def read(key):
        try:
            with Image.open(folder / key) as img:
                return np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR))
        except (OSError, ValueError) as e:
            raise DataError(f"dataset 'clothing1m': cannot read image {folder / key} ({e})") from e

    def images(keys):
        out = np.empty((len(keys), size, size, 3), dtype=np.uint8)
        with ThreadPoolExecutor() as pool:  # PIL decodes and resizes without the GIL
            for i, a in enumerate(pool.map(read, keys)):
                out[i] = a
        return out

    return Arrays(
        images(train_keys), np.array([clean.get(k, -1) for k in train_keys], dtype=np.int64),
        images(test_keys), np.array([clean[k] for k in test_keys], dtype=np.int64),
        classes=list(CLOTHING1M_CLASSES),
        source=f"Clothing1M (Xiao et al. 2015) from {folder}, resized to {size}x{size}",
        extra={"train_real_noisy": np.array([noisy[k] for k in train_keys], dtype=np.int64)},
    )


def _keep(arrays: Arrays, options: dict) -> Arrays:
    """The max_train / max_test subset of every train_* / test_* array."""
    tr = _subset(len(arrays.train_labels), options.get("max_train"))
    te = _subset(len(arrays.test_labels), options.get("max_test"))
    extra = {k: v[tr] if k.startswith("train_") else v[te] for k, v in arrays.extra.items()}
    return Arrays(arrays.train_images[tr], arrays.train_labels[tr], arrays.test_images[te], arrays.test_labels[te],
                  arrays.classes, arrays.source, extra, arrays.extra_meta)


def fetch(name: str, options: dict, downloads: str | Path) -> Arrays:
    """The arrays of data set `name` (options: its spec.datasets settings, as a dict)."""
    downloads = Path(downloads)
    if name == "digits":
        arrays = _digits(options)
    elif name in ("mnist", "fashion-mnist"):
        arrays = _mnist_style(name, downloads)
    elif name in ("cifar10", "cifar100", "cifar4"):
        arrays = _cifar(name, downloads, options)
    elif name in CIFAR_N_FILES:
        arrays = _cifar_n(name, downloads)
    elif name == "clothing1m":
        return _clothing1m(downloads / "clothing1m", options)  # subsets before reading images
    else:
        raise DataError(f"dataset={name!r}: no loader (spec/datasets.py lists the data sets)")
    return _keep(arrays, options)
