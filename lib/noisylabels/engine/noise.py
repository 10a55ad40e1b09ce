"""Label-noise generators, the held-out split, and the noise stage's on-disk format.

Each noise setting has a nominal transition matrix T (T[i, j] = P(noisy j | true i)):
- symmetric:      a flipped label goes to a uniformly random *different* class (SCE, APL,
                  Co-teaching); realized noise rate = r.
- symmetric-all:  a flipped label is redrawn from *all* classes, true one included (joint
                  optimization, PENCIL, DivideMix); realized rate about r (C-1)/C.
- asymmetric:     the paper's class map (MNIST/digits 2->7, 3->8, 5<->6, 7->1; CIFAR-10
                  truck->automobile, bird->airplane, deer->horse, cat<->dog; CIFAR-100: the
                  next fine class, circularly, within the true super-class).
- pairflip:       class i -> (i + 1) mod C.
- real:           no draw: the data set's own noisy labels of the named label set (CIFAR-N's
                  human labels, Clothing1M's), the same for every seed; the realized matrix and
                  rate count only the samples whose true label is known.
Two ways to draw: "exact" flips exactly round((1 - T[c, c]) n_c) samples of every class c
(SCE's code), each to a class drawn from row c of T without its diagonal; "per-sample" draws
every label from its row of T (Co-teaching family). The samples to flip are picked from the
clean labels and written to a new array, so no label is ever flipped twice. Every output
records the realized transition matrix and noise rate.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from noisylabels.errors import DataError
from noisylabels.io import atomic_dir, read_json, read_npy, write_json

# class index -> class index; by name in the comments
_MNIST_MAP = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}
ASYMMETRIC_MAPS = {
    "digits": _MNIST_MAP,
    "mnist": _MNIST_MAP,
    # truck->automobile, bird->airplane, deer->horse, cat->dog, dog->cat
    "cifar10": {9: 1, 2: 0, 4: 7, 3: 5, 5: 3},
}
ASYMMETRIC_DATASETS = (*ASYMMETRIC_MAPS, "cifar100")  # CIFAR-100's map comes from its super-classes


def superclass_map(fine_labels: np.ndarray, coarse_labels: np.ndarray) -> dict[int, int]:
    """CIFAR-100: each fine class -> the next fine class (circularly) of its super-class.

    Built from the coarse labels the archive ships: CIFAR-100's fine labels are alphabetical,
    so the blocks of five consecutive indices that public code uses are not super-classes.
    """
    mapping = {}
    for coarse in np.unique(coarse_labels):
        fines = np.unique(fine_labels[coarse_labels == coarse])
        for i, f in enumerate(fines):
            mapping[int(f)] = int(fines[(i + 1) % len(fines)])
    return mapping


def transition_matrix(setting, num_classes: int, class_map: dict | None = None) -> np.ndarray:
    """The nominal C x C transition matrix of a noise setting (rows sum to 1)."""
    r, C = setting.rate, num_classes
    if setting.type == "symmetric":
        T = np.full((C, C), r / (C - 1))
        np.fill_diagonal(T, 1 - r)
    elif setting.type == "symmetric-all":
        T = (1 - r) * np.eye(C) + r / C
    elif setting.type == "pairflip":
        T = (1 - r) * np.eye(C)
        T[np.arange(C), (np.arange(C) + 1) % C] += r
    elif setting.type == "asymmetric":
        if not class_map:
            raise ValueError("asymmetric noise needs a class map")
        T = np.eye(C)
        for src, dst in class_map.items():
            T[src, src], T[src, dst] = 1 - r, r
    else:
        raise ValueError(f"unknown noise type {setting.type!r}")
    return T


def inject(labels: np.ndarray, T: np.ndarray, draw: str, rng: np.random.Generator) -> np.ndarray:
    """Noisy copy of `labels` drawn from transition matrix T ("exact" or "per-sample")."""
    C = T.shape[0]
    noisy = labels.copy()
    if draw == "per-sample":
        cdf = np.cumsum(T, axis=1)[labels]
        u = rng.random(len(labels))[:, None]
        return np.minimum((u >= cdf).sum(axis=1), C - 1).astype(labels.dtype)
    for c in range(C):
        idx = np.flatnonzero(labels == c)
        off = T[c].copy()
        off[c] = 0.0
        mass = off.sum()
        # round half up; the off-diagonal sum carries float error (1e-16) that would round
        # some classes' exact halves down (CIFAR-100 symmetric-all 0.5: 247.5 -> 247 for 4
        # classes, 248 for 96), so the product is first rounded to 9 decimals
        k = int(np.floor(round(mass * len(idx), 9) + 0.5))
        if k == 0:
            continue
        chosen = rng.choice(idx, size=k, replace=False)
        noisy[chosen] = rng.choice(C, size=k, p=off / mass)
    return noisy


def realized_matrix(true: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
    """R[i, j] = share of the samples of true class i that carry label j (true label known)."""
    counts = np.zeros((num_classes, num_classes))
    known = true >= 0
    np.add.at(counts, (true[known], noisy[known]), 1)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def val_mask(n: int, fraction: float, seed: int) -> np.ndarray:
    """The held-out part of the noisy training set for a seed (same for every setting)."""
    rng = np.random.default_rng([seed, 0x401D])
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[: int(round(fraction * n))]] = True
    return mask


def setting_rng(setting, seed: int) -> np.random.Generator:
    """Labels depend only on (setting, seed): every method of every table sees the same ones."""
    return np.random.default_rng([seed, zlib.crc32(setting.name.encode())])


def class_map_for(dataset) -> dict | None:
    """dataset: a data.store.Dataset (the arrays)."""
    if dataset.name == "cifar100":
        return superclass_map(dataset.train_labels, dataset.train_coarse_labels)
    return ASYMMETRIC_MAPS.get(dataset.name)


def real_labels(dataset, label_set: str) -> np.ndarray:
    if not dataset.real_labels or label_set not in dataset.real_labels:
        raise DataError(f"data set {dataset.name!r} has no real noisy labels {label_set!r}; rerun its download stage")
    return dataset.real_labels[label_set]


def generate(dataset, settings, seeds, draw: str, val_fraction: float):
    """Noisy labels for every (setting, seed) -> (noisy settings x seeds x N, val seeds x N, records)."""
    y, C = dataset.train_labels, dataset.num_classes
    class_map = class_map_for(dataset)
    noisy = np.empty((len(settings), len(seeds), len(y)), dtype=np.int64)
    val = np.stack([val_mask(len(y), val_fraction, seed) for seed in seeds])
    if not val.any(axis=1).all():
        raise DataError(f"val_fraction={val_fraction}: holds out no sample of {dataset.name}'s {len(y)} training "
                        f"images; expected a fraction of at least {1 / len(y):.2g}")
    records = []
    known = y >= 0
    for i, setting in enumerate(settings):
        if setting.type != "real":
            T = transition_matrix(setting, C, class_map)
        for j, seed in enumerate(seeds):
            if setting.type == "real":
                noisy[i, j] = real_labels(dataset, setting.rate)
            else:
                noisy[i, j] = inject(y, T, draw, setting_rng(setting, seed))
            records.append({
                "setting": setting.name, "type": setting.type, "rate": setting.rate, "seed": seed,
                "realized_noise_rate": float(np.mean(noisy[i, j][known] != y[known])) if known.any() else float("nan"),
                "realized_matrix": realized_matrix(y, noisy[i, j], C).round(6).tolist(),
            })
    return noisy, val, records


@dataclass(frozen=True)
class Recipe:
    """All that a group's labels are drawn from, besides its data set's files: everything the
    noise stage reads of params.yaml. The validate stage writes every group's recipe to
    data/noise_recipes.json, and the noise stage depends on that file instead of params.yaml,
    so a change that no label reads (`dvc exp run -S loss.alpha=0.1`) does not rerun it."""

    group: str
    dataset: str
    settings: tuple  # spec.noise.NoiseSetting (type and rate), in the group's order
    seeds: tuple[int, ...]
    draw: str
    val_fraction: float

    @classmethod
    def of(cls, group) -> Recipe:
        """group: a resolved run group (resolve.Group)."""
        return cls(group.name, group.dataset.name, group.settings, group.seeds, group.draw, group.val_fraction)


def save(out_dir, recipe: Recipe, noisy, val, records) -> None:
    """noisy.npy, val.npy and noise.json into out_dir. Plain .npy (not .npz, whose zip
    headers carry the write time): the same labels give the same bytes, so when the noise
    stage reruns for a change elsewhere DVC sees this group's labels unchanged."""
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / "noisy.npy", noisy)
        np.save(tmp / "val.npy", val)
        write_json(tmp / "noise.json", {
            "group": recipe.group, "dataset": recipe.dataset, "draw": recipe.draw,
            "val_fraction": recipe.val_fraction,
            "settings": [s.name for s in recipe.settings], "seeds": list(recipe.seeds),
            "runs": records,
        })


@dataclass(frozen=True)
class RunLabels:
    """What the noise stage gives one run."""

    noisy: np.ndarray  # N noisy training labels
    val: np.ndarray  # N booleans: held out (the noisy validation split)
    realized_matrix: np.ndarray  # K x K, R[i, j] = share of true class i labelled j
    realized_noise_rate: float


@dataclass(frozen=True)
class NoisyLabels:
    """A group's noise stage output: noisy (settings x seeds x N), val (seeds x N), noise.json."""

    noisy: np.ndarray
    val: np.ndarray
    info: dict

    def for_run(self, run) -> RunLabels:
        i, j = run.index
        record = self.info["runs"][i * len(self.info["seeds"]) + j]  # written in settings x seeds order
        return RunLabels(self.noisy[i, j], self.val[j], np.asarray(record["realized_matrix"], dtype=np.float64),
                         record["realized_noise_rate"])


def load(path, group, n_train: int) -> NoisyLabels:
    """A group's noise stage output, checked against the group (its settings and seeds) and
    the data set's n_train training samples."""
    path, regenerate = Path(path), "dvc repro -f noise"
    settings, seeds = [s.name for s in group.settings], list(group.seeds)
    info = read_json(path / "noise.json", regenerate, keys=("settings", "seeds", "runs"))
    if info["settings"] != settings or info["seeds"] != seeds or len(info["runs"]) != len(settings) * len(seeds):
        raise DataError(f"{path / 'noise.json'}: labels for settings {info['settings']} and seeds {info['seeds']}, "
                        f"but the group has {settings} and {seeds}; regenerate it with `{regenerate}`")
    noisy = read_npy(path / "noisy.npy", regenerate, shape=(len(settings), len(seeds), n_train))
    val = read_npy(path / "val.npy", regenerate, shape=(len(seeds), n_train))
    return NoisyLabels(noisy, val, info)
