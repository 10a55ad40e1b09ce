"""Training methods: LID, D2L's turning point, truncated-Lq weights, the anchor-point estimate."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from noisylabels.engine import methods
from noisylabels.errors import ConfigError

from conftest import typed

D2L_CFG = {"name": "d2l", "lid_k": 20, "lid_samples": 1280, "lid_batch": 128, "window": 3, "init_epoch": 2}
TRAIN_10 = {"epochs": 10, "batch_size": 4, "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "milestones": [], "gamma": 0.1}


@pytest.mark.parametrize("dim", [2, 5])
def test_lid_estimates_the_intrinsic_dimension(dim):
    # points filling a dim-dimensional cube, embedded in 32 dimensions by a random rotation
    g = torch.Generator().manual_seed(0)
    points = torch.rand(2000, dim, generator=g) @ torch.linalg.qr(torch.randn(32, 32, generator=g))[0][:dim]
    lid = methods.lid_mle(points, k=20).mean().item()
    assert abs(lid - dim) < 0.25 * dim


def test_lid_mle_formula_on_one_point():
    # neighbours of the origin at distances 1, 2, 4 (k = 3): LID = -3 / (log 1/4 + log 2/4 + log 4/4)
    pts = torch.tensor([[0.0], [1.0], [-2.0], [4.0]])
    assert methods.lid_mle(pts, 3)[0].item() == pytest.approx(-3 / (math.log(0.25) + math.log(0.5)))


def _tiny_model(weight):
    model = nn.Sequential(nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(weight))
        model[0].bias.zero_()
    return model


def test_d2l_turning_point_rolls_back_and_bootstraps(monkeypatch):
    d2l = methods.D2L(typed({"name": "ce"}), typed(D2L_CFG), typed(TRAIN_10), seed=0)
    lids = iter([5.0, 4.0, 3.0, 3.1, 2.9, 3.0, 6.0, 2.0])
    monkeypatch.setattr(d2l, "_lid", lambda model, x: next(lids))
    model, x, y = _tiny_model([[1.0, 0.0], [0.0, 1.0]]), torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    for epoch in range(1, 7):  # LIDs 5 .. 3.0: no turn (2 sigma of the window is not exceeded)
        model[0].weight.data.fill_(epoch)
        out = d2l.end_epoch(epoch, model, x, y, 0.5)
        assert d2l.turning_epoch is None and out["d2l_alpha"] == 1.0
    model[0].weight.data.fill_(7.0)
    out = d2l.end_epoch(7, model, x, y, 0.5)  # 6.0 jumps over mean(3.1, 2.9, 3.0) + 2 sd
    assert d2l.turning_epoch == 6
    assert (model[0].weight == 6.0).all()  # rolled back to the end of epoch 6
    assert out["d2l_alpha"] == pytest.approx(math.exp(-(7 / 10) * 6.0 / 2.9))
    logits, labels = torch.tensor([[2.0, 0.0]]), torch.tensor([1])
    expected = methods.losses.bootstrap(logits, labels, d2l.alpha, "hard")
    loss, out_logits = d2l.batch_loss(lambda x: x, logits, labels, None)  # an identity "model"
    assert torch.equal(loss, expected) and torch.equal(out_logits, logits)
    # alpha_i = exp(-(i / T) LID_i / min_{j < i} LID_j): the minimum over the *previous* epochs
    # (D2L, Ma et al. 2018), so a new lowest LID gives alpha below exp(-i / T)
    out = d2l.end_epoch(8, model, x, y, 0.5)
    assert out["d2l_alpha"] == pytest.approx(math.exp(-(8 / 10) * 2.0 / 2.9))


def test_d2l_waits_for_init_epoch_plus_window(monkeypatch):
    d2l = methods.D2L(typed({"name": "ce"}), typed(D2L_CFG), typed(TRAIN_10), seed=0)
    lids = iter([1.0, 1.0, 1.0, 1.0, 50.0, 1.0])
    monkeypatch.setattr(d2l, "_lid", lambda model, x: next(lids))
    model, x, y = _tiny_model([[1.0, 0.0], [0.0, 1.0]]), torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    for epoch in range(1, 6):  # the jump at epoch 5 comes before init_epoch + window = 5 epochs have passed
        d2l.end_epoch(epoch, model, x, y, 0.5)
    assert d2l.turning_epoch is None


def test_d2l_lid_on_a_real_model_is_finite():
    d2l_cfg = typed({**D2L_CFG, "lid_samples": 300, "lid_batch": 100})
    d2l = methods.D2L(typed({"name": "ce"}), d2l_cfg, typed(TRAIN_10), seed=0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    lid = d2l._lid(model, torch.randn(500, 8))
    assert math.isfinite(lid) and 0 < lid < 16


def test_truncated_weights_use_the_best_held_out_checkpoint():
    cfg = {"name": "truncated_lq", "q": 0.7, "k": 0.5, "start_epoch": 2, "interval": 2}
    m = methods.TruncatedLq(typed(cfg), typed(TRAIN_10), n_fit=2, device="cpu")
    x, y = torch.tensor([[5.0, 0.0], [0.0, 5.0]]), torch.tensor([0, 1])
    good = _tiny_model([[1.0, 0.0], [0.0, 1.0]])  # predicts both labels confidently
    assert m.end_epoch(1, good, x, y, val_acc=0.9)["truncated_fraction"] == 0.0  # before start
    bad = _tiny_model([[0.0, 1.0], [1.0, 0.0]])  # the current model disagrees with both labels
    out = m.end_epoch(2, bad, x, y, val_acc=0.4)
    assert out["truncated_fraction"] == 0.0  # weights from the epoch-1 checkpoint (val 0.9)
    m.best_acc = 0.0  # now the bad model becomes the best one
    assert m.end_epoch(3, bad, x, y, val_acc=0.5)["truncated_fraction"] == 0.0  # not an update epoch
    assert m.end_epoch(4, bad, x, y, val_acc=0.5)["truncated_fraction"] == 1.0
    assert torch.equal(m.weight, torch.zeros(2))


def test_anchor_point_estimate_recovers_a_known_matrix():
    T = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.0, 0.3, 0.7]])
    rng = np.random.default_rng(0)
    others = 0.5 * rng.dirichlet(np.ones(3), size=200) + 0.5 / 3  # every p < 2/3: less sure than the anchors
    probs = np.vstack([others, T])
    assert np.allclose(methods.estimate_transition(probs, 100), T)
    # the percentile skips the most extreme samples: at 50 the anchor is a median sample
    median = methods.estimate_transition(probs, 50)
    assert median.shape == (3, 3) and np.allclose(median.sum(1), 1) and not np.allclose(median, T)


def test_transition_matrix_sources():
    def forward(matrix):
        return typed({"name": "forward", "matrix": matrix, "anchor_percentile": 100.0})

    realized = np.full((3, 3), 1 / 3)
    assert np.array_equal(methods.transition_matrix(forward("realized"), realized, 3, None, "loss"), realized)
    assert np.array_equal(methods.transition_matrix(forward("identity"), realized, 3, None, "loss"), np.eye(3))
    literal = [[0.5, 0.5], [0.0, 1.0]]
    assert np.array_equal(methods.transition_matrix(forward(literal), None, 2, None, "loss"), np.array(literal))
    probs = np.eye(3)
    assert np.array_equal(methods.transition_matrix(forward("estimated"), None, 3, lambda: probs, "loss"), np.eye(3))


def test_backward_refuses_a_singular_matrix():
    singular = np.full((10, 10), 0.1)  # symmetric noise at rate 0.9 = (K - 1) / K
    loss = {"matrix": "realized", "anchor_percentile": 97.0}
    with pytest.raises(ConfigError, match="loss.matrix='realized': backward needs an invertible"):
        methods.transition_matrix(typed({"name": "backward", **loss}), singular, 10, None, "loss")
    methods.transition_matrix(typed({"name": "forward", **loss}), singular, 10, None, "loss")  # forward is fine
