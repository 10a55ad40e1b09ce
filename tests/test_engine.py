"""The training loop on a tiny data set: shapes, determinism, pairing across methods."""
import numpy as np
import torch

from noisylabels import engine

from conftest import TINY_PARAMS, TinyDataset

TRAIN = TINY_PARAMS["train"]
MODEL = TINY_PARAMS["model"]


def _run(loss, seed=0):
    ds = TinyDataset(n_per_class=20)
    data = engine.to_tensors(ds, torch.device("cpu"))
    holdout = np.zeros(len(ds.train_labels), dtype=bool)
    holdout[::10] = True
    return engine.train_run(data, ds.train_labels, holdout, seed, MODEL, loss, TRAIN, 10)


def test_history_and_prediction_shapes():
    r = _run({"name": "ce"})
    assert set(r.history) == set(engine.HISTORY_KEYS)
    assert all(len(v) == TRAIN["epochs"] for v in r.history.values())
    assert r.history["lr"] == [0.1, 0.1 * TRAIN["gamma"]]
    assert r.test_pred.shape == (TRAIN["epochs"], 100) and r.val_pred.shape == (TRAIN["epochs"], 20)
    assert r.train_pred.shape == (180,)


def test_same_seed_is_reproducible_and_seeds_differ():
    a, b, c = _run({"name": "ce"}, 0), _run({"name": "ce"}, 0), _run({"name": "ce"}, 1)
    assert a.history == b.history
    assert a.history["train_loss"] != c.history["train_loss"]
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k])


def test_cnn_with_batch_norm_trains_at_mnist_shape():
    ds = TinyDataset(n_per_class=6, shape=(28, 28, 1))
    data = engine.to_tensors(ds, torch.device("cpu"))
    holdout = np.zeros(len(ds.train_labels), dtype=bool)
    holdout[:4] = True
    train = {**TRAIN, "epochs": 1, "milestones": [], "batch_size": 16}
    r = engine.train_run(data, ds.train_labels, holdout, 0, {"name": "sce_mnist_cnn"}, {"name": "ce"}, train, 10)
    assert r.test_pred.shape == (1, 100) and np.isfinite(r.history["train_loss"]).all()
