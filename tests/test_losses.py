"""Every loss against its closed form or a hand computation (SCE Eqs. 5-11, GCE, APL)."""
import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from noisylabels.engine import losses
from noisylabels.spec.losses import LOSSES

from conftest import typed

K = 10
MATRIX = torch.full((K, K), 0.4 / (K - 1)).fill_diagonal_(0.6)  # symmetric 40%
# every loss with hyper-parameters as in params.yaml
CONFIGS = {
    "ce": {}, "scaled_ce": {"scale": 5.0}, "rce": {"A": -4.0}, "sl": {"alpha": 0.1, "beta": 1.0, "A": -4.0},
    "lsr": {"epsilon": 0.1}, "lsr_sl": {"epsilon": 0.1, "alpha": 0.1, "beta": 1.0},
    "bootstrap": {"beta": 0.8, "mode": "hard"},
    "forward": {"matrix": "realized", "anchor_percentile": 97.0},
    "backward": {"matrix": "realized", "anchor_percentile": 97.0},
    "forward_sl": {"matrix": "realized", "anchor_percentile": 97.0, "beta": 1.0, "A": -4.0},
    "mae": {}, "gce": {"q": 0.7}, "truncated_lq": {"q": 0.7, "k": 0.5, "start_epoch": 1, "interval": 1},
    "nce": {}, "nfl": {"gamma": 0.5}, "ngce": {"q": 0.7},
    "nce_rce": {"alpha": 1.0, "beta": 1.0, "A": -4.0}, "nce_mae": {"alpha": 1.0, "beta": 1.0},
    "nfl_rce": {"alpha": 1.0, "beta": 1.0, "gamma": 0.5, "A": -4.0},
    "nfl_mae": {"alpha": 1.0, "beta": 1.0, "gamma": 0.5},
}


def loss(name, logits, labels, **extra):
    return losses.make_loss(typed({"name": name, **CONFIGS[name]}), MATRIX)(logits, labels, **extra)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(32, K, generator=g) * 3, torch.randint(0, K, (32,), generator=g)


def _p(logits):
    return F.softmax(logits.double(), 1).float()


def _p_y(logits, y):
    return _p(logits).gather(1, y[:, None]).squeeze(1)


def test_every_registered_loss_has_its_formula_with_its_hyper_parameters():
    assert set(LOSSES) == set(CONFIGS)
    for name, spec in LOSSES.items():
        fn = getattr(losses, spec.impl)
        formula = [p.name for p in inspect.signature(fn).parameters.values()
                   if p.kind == p.POSITIONAL_OR_KEYWORD][2:]
        takes = list(typed({"name": name, **CONFIGS[name]}).formula_options())
        assert sorted(formula) == sorted(takes + (["matrix"] if "matrix" in spec.model_fields else [])), name


def test_ce_and_scaled_ce(batch):
    logits, y = batch
    ce = F.cross_entropy(logits, y, reduction="none")
    assert torch.allclose(losses.cross_entropy(logits, y), ce, atol=1e-6)
    assert torch.allclose(loss("scaled_ce", logits, y), 5 * ce, atol=1e-5)


@pytest.mark.parametrize("A", [-2.0, -4.0, -6.0])
def test_rce_is_minus_A_times_one_minus_p_y(batch, A):
    logits, y = batch
    assert torch.allclose(losses.reverse_cross_entropy(logits, y, A), -A * (1 - _p_y(logits, y)), atol=1e-6)


def test_rce_at_minus_two_is_mae_the_l1_distance(batch):
    logits, y = batch
    l1 = (F.one_hot(y, K).float() - _p(logits)).abs().sum(1)
    assert torch.allclose(losses.reverse_cross_entropy(logits, y, -2.0), l1, atol=1e-6)
    assert torch.allclose(loss("mae", logits, y), l1, atol=1e-6)
    assert torch.allclose(loss("mae", logits, y), 2 * (1 - _p_y(logits, y)), atol=1e-6)


@pytest.mark.parametrize("name,constant", [
    ("rce", 4.0 * (K - 1)),  # -A (K - 1)
    ("mae", 2.0 * (K - 1)),
    ("nce", 1.0), ("nfl", 1.0), ("ngce", 1.0),  # normalised losses sum to 1
])
def test_symmetric_losses_sum_to_a_constant_over_all_labels(batch, name, constant):
    logits, _ = batch
    total = sum(loss(name, logits, torch.full((32,), k)) for k in range(K))
    assert torch.allclose(total, torch.full((32,), constant), atol=1e-4)


def test_ce_is_not_symmetric(batch):
    logits, _ = batch
    total = sum(losses.cross_entropy(logits, torch.full((32,), k)) for k in range(K))
    assert total.std() > 1.0


def test_lq_tends_to_ce_and_is_one_minus_p_at_q_one(batch):
    logits, y = batch
    ce = losses.cross_entropy(logits, y)
    assert torch.allclose(losses.generalized_cross_entropy(logits, y, 1e-4), ce, rtol=2e-3, atol=1e-3)
    gaps = [(losses.generalized_cross_entropy(logits, y, q) - ce).abs().max() for q in (0.5, 0.1, 0.01)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert torch.allclose(losses.generalized_cross_entropy(logits, y, 1.0), 1 - _p_y(logits, y), atol=1e-6)
    q = 0.7
    assert torch.allclose(loss("gce", logits, y), (1 - _p_y(logits, y) ** q) / q, atol=1e-6)


def test_truncated_lq_is_the_piecewise_definition(batch):
    logits, y = batch
    y = torch.cat([logits[:16].argmax(1), y[16:]])  # some confident samples
    q, k = 0.7, 0.5
    p_y = _p_y(logits, y)
    expected = torch.where(p_y > k, (1 - p_y**q) / q, torch.full_like(p_y, (1 - k**q) / q))
    assert 0 < (p_y > k).sum() < 32
    assert torch.allclose(loss("truncated_lq", logits, y), expected, atol=1e-6)
    # with the method's weights: w = 1 keeps Lq, w = 0 is the constant, with no gradient
    w = torch.zeros(32)
    w[:5] = 1
    z = logits.clone().requires_grad_(True)
    out = loss("truncated_lq", z, y, weight=w)
    assert torch.allclose(out[:5], ((1 - p_y**q) / q)[:5], atol=1e-6)
    assert torch.allclose(out[5:], torch.full((27,), (1 - k**q) / q))
    out.sum().backward()
    assert (z.grad[5:] == 0).all() and (z.grad[:5] != 0).any()


def test_sl_with_beta_zero_is_ce_and_combines_linearly(batch):
    logits, y = batch
    assert torch.allclose(losses.symmetric_cross_entropy(logits, y, 1.0, 0.0, -4.0), losses.cross_entropy(logits, y))
    expected = 0.1 * losses.cross_entropy(logits, y) + losses.reverse_cross_entropy(logits, y, -4.0)
    assert torch.allclose(loss("sl", logits, y), expected)


def test_sl_gradient_matches_eq_10(batch):
    logits, y = batch
    logits = logits.clone().requires_grad_(True)
    alpha, beta, A = 0.1, 1.0, -4.0
    losses.symmetric_cross_entropy(logits, y, alpha, beta, A).sum().backward()
    p = F.softmax(logits.detach(), 1)
    onehot = F.one_hot(y, K).bool()
    p_y = p.gather(1, y[:, None])
    grad_ce = p - onehot.float()  # Eq. 11
    # Eq. 10: the RCE part is -(A p_j^2 - A p_j) for j = y and -A p_j p_y for j != y
    grad_rce = torch.where(onehot, -(A * p**2 - A * p), -A * p * p_y)
    assert torch.allclose(logits.grad, alpha * grad_ce + beta * grad_rce, atol=1e-6)


# A 3-class example worked by hand: p = softmax(log [0.5, 0.3, 0.2]) = [0.5, 0.3, 0.2], y = 1.
P3 = torch.tensor([[0.5, 0.3, 0.2]])
Z3, Y3 = P3.log(), torch.tensor([1])


def test_lsr_target_and_loss_by_hand():
    # eps = 0.3, K = 3: target [0.1, 0.8, 0.1]
    expected = -(0.1 * math.log(0.5) + 0.8 * math.log(0.3) + 0.1 * math.log(0.2))
    assert torch.allclose(losses.lsr(Z3, Y3, 0.3), torch.tensor([expected]))
    assert torch.allclose(losses.lsr_target(Y3, 3, 0.3), torch.tensor([[0.1, 0.8, 0.1]]))


def test_lsr_sl_by_hand(batch):
    q = [0.1, 0.8, 0.1]
    ce = -(0.1 * math.log(0.5) + 0.8 * math.log(0.3) + 0.1 * math.log(0.2))
    rce = -(0.5 * math.log(q[0]) + 0.3 * math.log(q[1]) + 0.2 * math.log(q[2]))
    assert torch.allclose(losses.lsr_sl(Z3, Y3, 0.3, 0.1, 2.0), torch.tensor([0.1 * ce + 2.0 * rce]))
    logits, y = batch
    assert torch.allclose(losses.lsr_sl(logits, y, 0.1, 1.0, 0.0), losses.lsr(logits, y, 0.1))


def test_bootstrap_by_hand():
    # soft, beta 0.95: target 0.95 e_y + 0.05 p = [0.025, 0.965, 0.01]
    soft = -(0.025 * math.log(0.5) + 0.965 * math.log(0.3) + 0.01 * math.log(0.2))
    assert torch.allclose(losses.bootstrap(Z3, Y3, 0.95, "soft"), torch.tensor([soft]))
    # hard, beta 0.8: argmax p = 0, target [0.2, 0.8, 0]
    hard = -(0.2 * math.log(0.5) + 0.8 * math.log(0.3))
    assert torch.allclose(losses.bootstrap(Z3, Y3, 0.8, "hard"), torch.tensor([hard]))


def test_bootstrap_at_beta_one_is_ce(batch):
    logits, y = batch
    for mode in ("soft", "hard"):
        assert torch.allclose(losses.bootstrap(logits, y, 1.0, mode), losses.cross_entropy(logits, y), atol=1e-6)


T3 = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.0, 0.7]])


def test_forward_by_hand_and_identity_is_ce(batch):
    # P(noisy = 1) = 0.5 * 0.2 + 0.3 * 0.8 + 0.2 * 0.0 = 0.34
    assert torch.allclose(losses.forward_correction(Z3, Y3, T3), torch.tensor([-math.log(0.34)]))
    logits, y = batch
    assert torch.allclose(losses.forward_correction(logits, y, torch.eye(K)), losses.cross_entropy(logits, y), atol=1e-5)


def test_backward_by_hand_identity_is_ce_and_it_is_unbiased(batch):
    inv = torch.linalg.inv(T3.double())
    ell = -P3.double().log()[0]
    assert torch.allclose(losses.backward_correction(Z3, Y3, T3).double(), (inv[1] * ell).sum()[None], atol=1e-5)
    logits, y = batch
    assert torch.allclose(losses.backward_correction(logits, y, torch.eye(K)), losses.cross_entropy(logits, y), atol=1e-5)
    # E over the noisy label j ~ T[y, :] of the backward loss is the clean CE (Patrini et al. Thm 1)
    expected = sum(MATRIX[y, j] * loss("backward", logits, torch.full((32,), j)) for j in range(K))
    assert torch.allclose(expected, losses.cross_entropy(logits, y), atol=1e-3)


def test_forward_sl_adds_rce_of_the_corrected_prediction(batch):
    # q = T^T p = [0.38, 0.34, 0.28] for the hand example; RCE(q, y=1) = -A (1 - 0.34)
    expected = -math.log(0.34) + 2.0 * 4.0 * (1 - 0.34)
    assert torch.allclose(losses.forward_sl(Z3, Y3, T3, 2.0, -4.0), torch.tensor([expected]))
    logits, y = batch
    q_y = (F.softmax(logits.double(), 1) @ MATRIX.double()).gather(1, y[:, None]).squeeze(1)
    expected = losses.forward_correction(logits, y, MATRIX) + 4.0 * (1 - q_y).float()
    assert torch.allclose(loss("forward_sl", logits, y), expected, atol=1e-5)


def test_normalized_losses_by_formula(batch):
    logits, y = batch
    log_p = F.log_softmax(logits.double(), 1)
    p = log_p.exp()
    nce = log_p.gather(1, y[:, None]).squeeze(1) / log_p.sum(1)
    assert torch.allclose(loss("nce", logits, y).double(), nce, atol=1e-5)
    fl = -(1 - p) ** 0.5 * log_p
    assert torch.allclose(loss("nfl", logits, y).double(), fl.gather(1, y[:, None]).squeeze(1) / fl.sum(1), atol=1e-5)
    assert torch.allclose(losses.normalized_focal_loss(logits, y, 0.0), loss("nce", logits, y), atol=1e-6)
    ngce = (1 - p.gather(1, y[:, None]).squeeze(1) ** 0.7) / (K - (p**0.7).sum(1))
    assert torch.allclose(loss("ngce", logits, y).double(), ngce, atol=1e-5)


def test_nfl_with_apl_gradient_is_a_reweighted_ce_gradient(batch):
    """APL's code: d/dz [-(1 - p_y)^g log p_y / Z] with (1 - p_y)^g and Z held constant,
    i.e. (1 - p_y)^g / Z times CE's gradient; the value is the full formula's."""
    logits, y = batch
    z = logits.double().requires_grad_()
    apl = losses.normalized_focal_loss(z, y, 0.5, gradient="apl")
    (grad,) = torch.autograd.grad(apl.sum(), z)
    log_p = F.log_softmax(logits.double(), 1)
    p = log_p.exp()
    weight = ((1 - p.gather(1, y[:, None])) ** 0.5).squeeze(1) / (-(1 - p) ** 0.5 * log_p).sum(1)
    ce_grad = p - F.one_hot(y, K).double()  # d(-log p_y)/dz
    assert torch.allclose(grad, weight[:, None] * ce_grad, atol=1e-7)
    assert torch.equal(apl, losses.normalized_focal_loss(logits.double(), y, 0.5))
    (full,) = torch.autograd.grad(losses.normalized_focal_loss(z, y, 0.5).sum(), z)
    assert not torch.allclose(full, grad, atol=1e-4)  # the paper's formula differentiates both
    rce = losses.reverse_cross_entropy(z, y, -4.0)
    (combined,) = torch.autograd.grad(losses.nfl_rce(z, y, 2.0, 3.0, 0.5, -4.0, "apl").sum(), z)
    assert torch.allclose(combined, 2 * grad + 3 * torch.autograd.grad(rce.sum(), z)[0], atol=1e-5)  # float32 inside


def test_apl_combinations(batch):
    logits, y = batch
    nce, nfl = loss("nce", logits, y), loss("nfl", logits, y)
    rce, apl_mae = losses.reverse_cross_entropy(logits, y, -4.0), 1 - _p_y(logits, y)  # APL code's MAE
    assert torch.allclose(losses.nce_rce(logits, y, 2.0, 3.0, -4.0), 2 * nce + 3 * rce, atol=1e-5)
    assert torch.allclose(losses.nce_mae(logits, y, 2.0, 3.0), 2 * nce + 3 * apl_mae, atol=1e-5)
    assert torch.allclose(losses.nfl_rce(logits, y, 2.0, 3.0, 0.5, -4.0), 2 * nfl + 3 * rce, atol=1e-5)
    assert torch.allclose(losses.nfl_mae(logits, y, 2.0, 3.0, 0.5), 2 * nfl + 3 * apl_mae, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_finite_values_and_gradients_for_huge_and_bf16_logits(name):
    y = torch.tensor([0, 1, 2, 3])
    huge = torch.zeros(4, K)
    huge[0, 0], huge[1, 5], huge[2, 2], huge[3] = 1e4, -1e4, -1e4, torch.linspace(-1e4, 1e4, K)
    g = torch.Generator().manual_seed(1)
    for logits in (huge, huge.bfloat16(), (torch.randn(4, K, generator=g) * 5).bfloat16()):
        z = logits.clone().requires_grad_(True)
        out = loss(name, z, y)
        assert out.dtype == torch.float32 and torch.isfinite(out).all(), (name, logits.dtype)
        out.sum().backward()
        assert torch.isfinite(z.grad.float()).all(), (name, logits.dtype)


def test_matrix_losses_need_their_matrix():
    with pytest.raises(ValueError, match="transition matrix"):
        losses.make_loss(typed({"name": "forward", **CONFIGS["forward"]}))


def test_forward_has_finite_gradients_when_a_column_of_the_matrix_is_zero():
    # class 0 never becomes a noisy label: q_0 = 0 for every sample, but labels 1, 2 are fine
    matrix = torch.tensor([[0.0, 0.5, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    logits = torch.randn(4, 3, requires_grad=True)
    labels = torch.tensor([1, 2, 1, 2])
    loss = losses.forward_correction(logits, labels, matrix)
    loss.mean().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logits.grad).all()
    p = F.softmax(logits.detach().double(), 1)
    q = p @ matrix.double()
    assert torch.allclose(loss.double(), -q.gather(1, labels[:, None]).squeeze(1).log(), atol=1e-6)
