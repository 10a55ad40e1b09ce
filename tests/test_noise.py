"""Noise generators: exact per-class rates, no re-flipping, the papers' maps, determinism."""
import numpy as np
import pytest

from noisylabels.engine import noise
from noisylabels.spec.noise import NoiseSetting
from noisylabels.data.sources import CIFAR10_CLASSES

from conftest import TinyDataset


def _flip(labels, ntype, rate, C=10, class_map=None, draw="exact", seed=0):
    T = noise.transition_matrix(NoiseSetting(ntype, rate), C, class_map)
    return noise.inject(labels, T, draw, noise.setting_rng(NoiseSetting(ntype, rate), seed))


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.6, 0.8])
def test_symmetric_exact_counts_to_a_different_class(rate):
    y = np.repeat(np.arange(10), 137)
    noisy = _flip(y, "symmetric", rate)
    for c in range(10):
        flipped = noisy[y == c] != c
        assert flipped.sum() == int(np.floor(rate * 137 + 0.5))  # exact count per class
    R = noise.realized_matrix(y, noisy, 10)
    assert np.allclose(R.sum(1), 1)
    # flipped samples spread over all the *other* classes
    if rate >= 0.4:
        assert (R[~np.eye(10, dtype=bool)] > 0).all()


def test_symmetric_all_keeps_some_chosen_labels():
    y = np.repeat(np.arange(10), 1000)
    noisy = _flip(y, "symmetric-all", 0.5)
    # realized rate r (C-1)/C: exactly round(0.45 * 1000) changed per class
    for c in range(10):
        assert (noisy[y == c] != c).sum() == 450


def test_exact_halves_round_up_in_every_class():
    # CIFAR-100 symmetric-all 0.5: 0.5 * 99/100 * 500 = 247.5 flips per class; summing the
    # off-diagonal row in floating point once gave 247 for 4 classes and 248 for the others
    y = np.repeat(np.arange(100), 500)
    noisy = _flip(y, "symmetric-all", 0.5, C=100)
    assert (np.bincount(y[noisy != y], minlength=100) == 248).all()


def test_asymmetric_digits_map():
    y = np.repeat(np.arange(10), 100)
    noisy = _flip(y, "asymmetric", 0.3, class_map=noise.ASYMMETRIC_MAPS["digits"])
    R = noise.realized_matrix(y, noisy, 10)
    for src, dst in {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}.items():
        assert R[src, dst] == pytest.approx(0.3) and R[src, src] == pytest.approx(0.7)
    for c in (0, 1, 4, 8, 9):
        assert R[c, c] == 1.0


def test_cifar10_map_by_name_and_no_reflipping():
    name = {n: i for i, n in enumerate(CIFAR10_CLASSES)}
    expected = {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"}
    assert noise.ASYMMETRIC_MAPS["cifar10"] == {name[a]: name[b] for a, b in expected.items()}
    y = np.repeat(np.arange(10), 500)
    noisy = _flip(y, "asymmetric", 0.4, class_map=noise.ASYMMETRIC_MAPS["cifar10"])
    R = noise.realized_matrix(y, noisy, 10)
    # cats and dogs swap both ways, yet each keeps exactly 60%: no flipped label is flipped back
    assert R[name["cat"], name["cat"]] == pytest.approx(0.6)
    assert R[name["dog"], name["dog"]] == pytest.approx(0.6)
    assert R[name["cat"], name["dog"]] == pytest.approx(0.4)


def test_cifar100_flips_within_true_superclass_circularly():
    # 6 fine classes in 2 super-classes, deliberately not in consecutive blocks
    coarse_of = np.array([0, 1, 0, 1, 0, 1])
    fine = np.repeat(np.arange(6), 50)
    mapping = noise.superclass_map(fine, coarse_of[fine])
    assert mapping == {0: 2, 2: 4, 4: 0, 1: 3, 3: 5, 5: 1}
    noisy = _flip(fine, "asymmetric", 0.4, C=6, class_map=mapping)
    assert (coarse_of[noisy] == coarse_of[fine]).all()
    assert (noisy[fine == 0] != 0).sum() == 20


def test_pairflip():
    y = np.repeat(np.arange(4), 100)
    R = noise.realized_matrix(y, _flip(y, "pairflip", 0.25, C=4), 4)
    assert np.allclose(R, 0.75 * np.eye(4) + 0.25 * np.roll(np.eye(4), 1, axis=1))


def test_per_sample_draw_matches_rate_on_average():
    y = np.repeat(np.arange(10), 2000)
    noisy = _flip(y, "symmetric", 0.4, draw="per-sample")
    assert np.mean(noisy != y) == pytest.approx(0.4, abs=0.02)
    assert (noisy[noisy != y] >= 0).all() and noisy.max() < 10


def test_same_seed_same_labels_other_seed_other_labels():
    ds = TinyDataset()
    settings = [NoiseSetting("symmetric", 0.4), NoiseSetting("asymmetric", 0.2)]
    a, ha, ra = noise.generate(ds, settings, [0, 1], "exact", 0.1)
    b, hb, _ = noise.generate(ds, settings, [0, 1], "exact", 0.1)
    assert (a == b).all() and (ha == hb).all()
    assert (a[0, 0] != a[0, 1]).any()
    # a setting's labels do not depend on which other settings are in the grid
    c, _, _ = noise.generate(ds, settings[1:], [0, 1], "exact", 0.1)
    assert (c[0] == a[1]).all()
    assert ra[0]["realized_noise_rate"] == pytest.approx(0.4)
    assert ha[0].sum() == 100  # 10% of 1000 held out


def test_real_labels_are_the_data_sets_own_for_every_seed():
    ds = TinyDataset(n_per_class=10)
    rng = np.random.default_rng(0)
    worst = np.where(rng.random(100) < 0.4, (ds.train_labels + 1) % 10, ds.train_labels)
    ds.real_labels = {"worst": worst}
    ds.train_labels = ds.train_labels.copy()
    ds.train_labels[::5] = -1  # true label unknown (Clothing1M): left out of the realized numbers
    noisy, _, records = noise.generate(ds, [NoiseSetting("real", "worst")], [0, 1], "exact", 0.1)
    assert (noisy[0, 0] == worst).all() and (noisy[0, 1] == worst).all()
    known = ds.train_labels >= 0
    assert records[0]["realized_noise_rate"] == pytest.approx(np.mean(worst[known] != ds.train_labels[known]))
    assert np.asarray(records[0]["realized_matrix"]).sum(axis=1) == pytest.approx(np.ones(10))
    assert NoiseSetting("real", "worst").name == "real-worst"
