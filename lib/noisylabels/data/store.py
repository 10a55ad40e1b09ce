"""The one on-disk format every data set is stored in (the download stage's output).

data/raw/<name>/
  train_images.npy  uint8, N x H x W x C      test_images.npy  uint8
  train_labels.npy  int64, N                  test_labels.npy  int64
  [train_coarse_labels.npy, test_coarse_labels.npy]   CIFAR-100 super-class labels
  [train_real_<label set>.npy]   real noisy labels (CIFAR-N, Clothing1M); train_labels are
                                 then the true labels, -1 where unknown
  meta.json         name, classes, source, the files read (path, md5, URL if downloaded,
                    whether the md5 is the published one), notes on what differs from the
                    published data set, image shape, sizes, sha256 of every array file

`load` checks meta.json and the checksums, so a missing, truncated or edited file stops with
one clear line that names the command regenerating it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from noisylabels.data.sources import Arrays
from noisylabels.errors import DataError
from noisylabels.io import atomic_dir, read_json, read_npy, sha256, write_json


@dataclass
class Dataset:
    name: str
    classes: list[str]
    meta: dict
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    train_coarse_labels: np.ndarray | None = None
    real_labels: dict[str, np.ndarray] | None = None  # label set -> real noisy training labels

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def digest(self) -> str:
        """A short digest of the array files' checksums (meta.json): the same data, the same digest."""
        return hashlib.sha256(json.dumps(self.meta["sha256"], sort_keys=True).encode()).hexdigest()[:16]


def save(out_dir: str | Path, name: str, arrays: Arrays) -> None:
    files = {
        "train_images": arrays.train_images, "train_labels": arrays.train_labels,
        "test_images": arrays.test_images, "test_labels": arrays.test_labels, **arrays.extra,
    }
    with atomic_dir(out_dir) as tmp:
        checksums = {}
        for key, value in files.items():
            np.save(tmp / f"{key}.npy", value)
            checksums[f"{key}.npy"] = sha256(tmp / f"{key}.npy")
        write_json(tmp / "meta.json", {
            "name": name,
            "classes": arrays.classes,
            "source": arrays.source,
            "files": arrays.files,
            "notes": arrays.notes,
            "image_shape": list(arrays.train_images.shape[1:]),
            "n_train": int(len(arrays.train_labels)),
            "n_test": int(len(arrays.test_labels)),
            **arrays.extra_meta,
            "sha256": checksums,
        })


def load(path: str | Path) -> Dataset:
    path = Path(path)
    regenerate = f"dvc repro -f download@{path.name}"
    meta = read_json(path / "meta.json", regenerate, keys=("name", "classes", "sha256"))
    for needed in ("train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy"):
        if needed not in meta["sha256"]:
            raise DataError(f"{path / 'meta.json'}: lists no {needed}; regenerate it with `{regenerate}`")
    arrays = {}
    for file, digest in meta["sha256"].items():
        f = path / file
        if f.is_file() and sha256(f) != digest:
            raise DataError(f"{f}: checksum does not match meta.json (corrupt or edited); "
                            f"regenerate it with `{regenerate}`")
        arrays[file.removesuffix(".npy")] = read_npy(f, regenerate)
    return Dataset(
        name=meta["name"], classes=meta["classes"], meta=meta,
        train_images=arrays["train_images"], train_labels=arrays["train_labels"],
        test_images=arrays["test_images"], test_labels=arrays["test_labels"],
        train_coarse_labels=arrays.get("train_coarse_labels"),
        real_labels={k.removeprefix("train_real_"): v for k, v in arrays.items() if k.startswith("train_real_")},
    )
