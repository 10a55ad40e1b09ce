"""Where each data set comes from: `fetch(name, options, downloads)` returns its arrays.

- digits: scikit-learn's handwritten digits (shipped with the package, no network), split
  into train and test by a stratified, seeded split.
- mnist, fashion-mnist: the published IDX archives (URLs and md5s from torchvision's dataset
  classes), downloaded or put into `downloads` by hand, or the same files uncompressed.
- cifar10, cifar100, cifar4: the published python archive, downloaded or put there by hand,
  md5-checked and extracted, or its extracted folder; the pickled batches are read here
  (arrays only), so that CIFAR-100's coarse (super-class) labels are kept and CIFAR-4
  (seed 004) can be cut out of CIFAR-10.
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

What is trusted: an archive is used only when its md5 is the published one (a mismatch
stops, naming both md5s and the accepted files). Files without a published checksum
(uncompressed IDX, an extracted CIFAR folder, CIFAR-N's label file, Clothing1M) are
accepted, recorded in meta.json with their md5 (`Arrays.files`), and a size other than the
published one is reported (`Arrays.notes`). Nothing is unpickled beyond numpy arrays:
CIFAR batches through `_ArraysOnly`, CIFAR-N with `torch.load(weights_only=True)`; tar
archives are extracted with the "data" filter.

Images come back as uint8 N x H x W x C, labels as int64. torchvision, scikit-learn and PIL
are imported inside the functions: the light stages import this module for its constants.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
from dataclasses import dataclass, field, replace
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
# the annotation files read (the published download also has the clean train / val key lists)
CLOTHING1M_ANNOTATIONS = ("noisy_label_kv.txt", "clean_label_kv.txt", "noisy_train_key_list.txt",
                          "clean_test_key_list.txt")
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
    # every file read: its path, md5, the URL it was downloaded from in this run, and
    # whether its md5 is the published one (where one is published)
    files: list[dict] = field(default_factory=list)
    # what differs from the published data set (local files of another size): meta.json
    # keeps them and the download stage prints them
    notes: list[str] = field(default_factory=list)


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


# Sizes (train, test) of the published data sets whose files may also be put here by hand in
# a form without a published checksum (uncompressed IDX files, an extracted CIFAR folder).
PUBLISHED_SIZES = {"mnist": (60000, 10000), "fashion-mnist": (60000, 10000), "cifar10": (50000, 10000),
                   "cifar100": (50000, 10000)}


def _md5(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def _record(path: Path, published_md5: str | None = None, url: str | None = None) -> dict:
    """meta.json's entry for one file read: where it is, where it came from, its md5, and
    whether that is the published md5 (where one is published)."""
    found = _md5(path)
    entry = {"path": str(path), "md5": found}
    if published_md5 is not None:
        entry["published"] = found == published_md5
    return {**entry, "url": url} if url else entry


def _download_failed(name: str, error: Exception, where: Path, accepted: str) -> DataError:
    reason = " ".join(str(error).split())[:300] or type(error).__name__  # one line, however many it had
    return DataError(f"dataset {name!r}: download failed ({reason}); without network, put {accepted} into {where}/ "
                     f"and rerun")


def _archive(name: str, path: Path, md5: str, urls: list[str], accepted: str) -> dict:
    """The archive at `path`, put there by hand or downloaded from the first of `urls` that
    answers; either way its md5 must be the published one. Returns its meta.json entry."""
    from torchvision.datasets import utils

    url = None
    if not path.is_file():
        for url in urls:
            try:
                utils.download_url(url, str(path.parent), path.name, md5)
                break
            except (RuntimeError, OSError) as e:  # unreachable, or what arrived is not the archive
                error = e
        else:
            raise _download_failed(name, error, path.parent, accepted)
    entry = _record(path, md5, url)
    if not entry["published"]:
        raise DataError(f"{path}: checksum mismatch (md5 expected {md5}, found {entry['md5']}); accepted in "
                        f"{path.parent}/: {accepted}")
    return entry


def _size_note(name: str, n_train: int, n_test: int) -> list[str]:
    """A note for meta.json (and the stage's output) when local files hold another number of
    images than the published data set."""
    published = PUBLISHED_SIZES[name]
    if (n_train, n_test) == published:
        return []
    return [f"{name}: the local files hold {n_train} training and {n_test} test images; the published data set "
            f"has {published[0]} and {published[1]}"]


def _read_idx(data: bytes) -> np.ndarray:
    """IDX (MNIST's format): two zero bytes, 0x08 (unsigned bytes), the number of dimensions,
    one big-endian uint32 size per dimension, then the data."""
    if len(data) < 4 or data[:3] != b"\0\0\x08":
        raise ValueError("not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4: 4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != np.prod(shape):
        raise ValueError(f"{body.size} data bytes for shape {shape}")
    return body.reshape(shape)


def _mnist_style(name: str, downloads: Path) -> Arrays:
    """MNIST or Fashion-MNIST from the published .gz archives (put by hand or downloaded, md5
    checked), or from the same files uncompressed (no published checksum: recorded and their
    size reported)."""
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}[name]
    raw = downloads / cls.__name__ / "raw"
    archives = [file for file, _ in cls.resources]
    accepted = (f"the published archives {', '.join(archives)}, or the same files uncompressed "
                f"({', '.join(a.removesuffix('.gz') for a in archives)})")
    files, arrays = [], {}
    for archive, md5 in cls.resources:
        idx = raw / archive.removesuffix(".gz")
        if idx.is_file() and not (raw / archive).is_file():
            files.append(_record(idx))
            data = idx.read_bytes()
        else:
            files.append(_archive(name, raw / archive, md5, [m + archive for m in cls.mirrors], accepted))
            data = gzip.decompress((raw / archive).read_bytes())
        try:
            arrays[archive.split("-")[0] + ("_images" if "images" in archive else "_labels")] = _read_idx(data)
        except ValueError as e:
            raise DataError(f"dataset {name!r}: corrupt IDX file {files[-1]['path']} ({e})") from e
    for split in ("train", "t10k"):
        if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]):
            raise DataError(f"dataset {name!r}: {len(arrays[f'{split}_images'])} {split} images but "
                            f"{len(arrays[f'{split}_labels'])} labels in {raw}/")
    downloaded = [f["url"] for f in files if "url" in f]
    return Arrays(
        arrays["train_images"][..., None], arrays["train_labels"].astype(np.int64),
        arrays["t10k_images"][..., None], arrays["t10k_labels"].astype(np.int64),
        classes=list(cls.classes),
        source=f"{cls.__name__} " + (f"downloaded from {downloaded[0].rsplit('/', 1)[0]}/" if downloaded
                                     else f"from the files in {raw}/"),
        files=files, notes=_size_note(name, len(arrays["train_labels"]), len(arrays["t10k_labels"])),
    )


class _ArraysOnly(pickle.Unpickler):
    """Unpickles only what CIFAR batches hold (dicts, lists, strings, numbers, numpy arrays):
    any other global, which is how a crafted pickle would run code, is refused."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")
        return super().find_class(module.replace("numpy.core", "numpy._core"), name)


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"missing file {path}")
    try:
        with open(path, "rb") as f:
            return _ArraysOnly(f, encoding="latin1").load()
    except Exception as e:  # truncated, not a pickle, or not arrays only: report the file, not a traceback
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


def _extract(archive: Path, folder: Path) -> None:
    """Extract the CIFAR archive's one folder into `folder`, whole or not at all; the "data"
    filter refuses absolute paths, links out of the target, and device files."""
    tmp = Path(tempfile.mkdtemp(prefix=".extract.", dir=archive.parent))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        if not (tmp / folder.name).is_dir():
            raise DataError(f"{archive}: holds no {folder.name}/ folder")
        os.replace(tmp / folder.name, folder)
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{archive}: cannot be extracted ({type(e).__name__}: {e})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cifar(name: str, downloads: Path, options: dict) -> Arrays:
    """CIFAR-10 (and CIFAR-4) or CIFAR-100 from the published archive (put by hand or
    downloaded, md5 checked, then extracted), or from its extracted folder (each file's md5
    compared with the published one and recorded; differences reported)."""
    from torchvision import datasets

    cls = datasets.CIFAR100 if name == "cifar100" else datasets.CIFAR10
    folder = downloads / cls.base_folder
    files = []
    if not folder.is_dir():
        accepted = f"the published archive {cls.filename}, or the folder {cls.base_folder}/ extracted from it"
        files.append(_archive(name, downloads / cls.filename, cls.tgz_md5, [cls.url], accepted))
        _extract(downloads / cls.filename, folder)
    published = dict([*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])])
    files += [_record(folder / f, md5) for f, md5 in published.items() if (folder / f).is_file()]
    keys = ["fine_labels", "coarse_labels"] if name == "cifar100" else ["labels"]
    train_x, train_y = read_cifar_batches(folder, [f for f, _ in cls.train_list], keys)
    test_x, test_y = read_cifar_batches(folder, [f for f, _ in cls.test_list], keys)
    meta = _unpickle(folder / cls.meta["filename"])
    base = "cifar100" if name == "cifar100" else "cifar10"
    changed = [Path(f["path"]).name for f in files if not f.get("published", True)]
    notes = _size_note(base, len(train_x), len(test_x))
    if changed and not notes:
        notes = [f"{base}: {', '.join(changed)} in {folder}/ differ from the published files"]
    source = f"{cls.__name__} " + (f"downloaded from {cls.url}" if "url" in files[0] else f"from {folder}/")
    if name == "cifar100":
        return Arrays(
            train_x, train_y["fine_labels"], test_x, test_y["fine_labels"],
            classes=list(meta["fine_label_names"]), source=source, files=files, notes=notes,
            extra={"train_coarse_labels": train_y["coarse_labels"],
                   "test_coarse_labels": test_y["coarse_labels"]},
            extra_meta={"coarse_classes": list(meta["coarse_label_names"])},
        )
    classes = list(meta["label_names"])
    if name == "cifar10":
        return Arrays(train_x, train_y["labels"], test_x, test_y["labels"], classes, source, files=files, notes=notes)
    # cifar4: keep the listed classes, relabelled 0..K-1 in the order listed
    keep = [classes.index(c) for c in options["classes"]]
    relabel = np.full(len(classes), -1, dtype=np.int64)
    relabel[keep] = np.arange(len(keep))
    tr, te = relabel[train_y["labels"]] >= 0, relabel[test_y["labels"]] >= 0
    return Arrays(
        train_x[tr], relabel[train_y["labels"][tr]], test_x[te], relabel[test_y["labels"][te]],
        classes=list(options["classes"]), source=f"{source}, classes {', '.join(options['classes'])}",
        files=files, notes=notes,
    )


def _load_label_file(file: Path) -> dict:
    """CIFAR-N's label file (torch.save of a dict of numpy arrays), loaded with weights_only:
    besides tensors, only numpy arrays of integers may be built (its authors publish no checksum)."""
    import torch

    rebuild = np._core.multiarray._reconstruct
    arrays = [np.ndarray, np.dtype, rebuild, (rebuild, "numpy.core.multiarray._reconstruct"),  # numpy 2 and 1
              *(type(np.dtype(code)) for code in np.typecodes["AllInteger"])]
    try:
        with torch.serialization.safe_globals(arrays):
            return torch.load(file, weights_only=True)
    except Exception as e:
        raise DataError(f"corrupt file {file} ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from e


def _cifar_n(name: str, downloads: Path) -> Arrays:
    from torchvision.datasets import utils

    base = _cifar(name.removesuffix("n"), downloads, {})
    file = downloads / CIFAR_N_FILES[name]
    url = None
    if not file.is_file():
        url = CIFAR_N_URL + file.name
        try:
            utils.download_url(url, str(downloads), file.name + ".part")
        except (RuntimeError, OSError) as e:
            raise _download_failed(name, e, downloads, file.name) from e
        os.replace(downloads / (file.name + ".part"), file)
    labels = _load_label_file(file)
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
    base.source += " + CIFAR-N human labels " + (f"downloaded from {url}" if url else f"from {file}")
    base.files.append(_record(file, url=url))
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

    noisy, clean = kv(CLOTHING1M_ANNOTATIONS[0]), kv(CLOTHING1M_ANNOTATIONS[1])
    train_keys = [k[0] for k in lines(CLOTHING1M_ANNOTATIONS[2])]
    test_keys = [k[0] for k in lines(CLOTHING1M_ANNOTATIONS[3])]
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
        files=[_record(notes / f) for f in CLOTHING1M_ANNOTATIONS],
    )


def _keep(arrays: Arrays, options: dict) -> Arrays:
    """The max_train / max_test subset of every train_* / test_* array."""
    tr = _subset(len(arrays.train_labels), options.get("max_train"))
    te = _subset(len(arrays.test_labels), options.get("max_test"))
    extra = {k: v[tr] if k.startswith("train_") else v[te] for k, v in arrays.extra.items()}
    return replace(arrays, train_images=arrays.train_images[tr], train_labels=arrays.train_labels[tr],
                   test_images=arrays.test_images[te], test_labels=arrays.test_labels[te], extra=extra)


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
