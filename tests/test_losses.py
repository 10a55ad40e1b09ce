"""Losses against their closed forms (SCE paper Eqs. 5-7, 10)."""
import inspect

import pytest
import torch
import torch.nn.functional as F

from noisylabels import config, losses


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(32, 10, generator=g) * 3, torch.randint(0, 10, (32,), generator=g)


def test_registry_matches_the_params_schema():
    assert set(losses.LOSSES) == set(config.LOSSES)
    for name, fn in losses.LOSSES.items():
        assert list(inspect.signature(fn).parameters)[2:] == list(config.LOSSES[name])


def test_ce_is_cross_entropy(batch):
    logits, y = batch
    assert torch.allclose(losses.cross_entropy(logits, y), F.cross_entropy(logits, y, reduction="none"), atol=1e-6)


@pytest.mark.parametrize("A", [-2.0, -4.0, -6.0])
def test_rce_is_minus_A_times_one_minus_p_y(batch, A):
    logits, y = batch
    p_y = F.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(losses.reverse_cross_entropy(logits, y, A), -A * (1 - p_y), atol=1e-6)


def test_rce_at_minus_two_is_mae(batch):
    logits, y = batch
    mae = (F.one_hot(y, 10).float() - F.softmax(logits, 1)).abs().sum(1)
    assert torch.allclose(losses.reverse_cross_entropy(logits, y, -2.0), mae, atol=1e-6)


def test_rce_is_symmetric(batch):
    # sum over all K labels is a constant: -A (K - 1), whatever the prediction
    logits, _ = batch
    total = sum(losses.reverse_cross_entropy(logits, torch.full((32,), k), -4.0) for k in range(10))
    assert torch.allclose(total, torch.full((32,), 36.0), atol=1e-5)


def test_sl_with_beta_zero_is_ce_and_combines_linearly(batch):
    logits, y = batch
    assert torch.allclose(losses.symmetric_cross_entropy(logits, y, 1.0, 0.0, -4.0),
                          losses.cross_entropy(logits, y))
    sl = losses.make_loss({"name": "sl", "alpha": 0.1, "beta": 1.0, "A": -4.0})(logits, y)
    expected = 0.1 * losses.cross_entropy(logits, y) + losses.reverse_cross_entropy(logits, y, -4.0)
    assert torch.allclose(sl, expected)


def test_sl_gradient_matches_eq_10(batch):
    logits, y = batch
    logits = logits.clone().requires_grad_(True)
    alpha, beta, A = 0.1, 1.0, -4.0
    losses.symmetric_cross_entropy(logits, y, alpha, beta, A).sum().backward()
    p = F.softmax(logits.detach(), 1)
    onehot = F.one_hot(y, 10).bool()
    p_y = p.gather(1, y[:, None])
    grad_ce = p - onehot.float()  # Eq. 11
    # Eq. 10: the RCE part is -(A p_j^2 - A p_j) for j = y and -A p_j p_y for j != y
    grad_rce = torch.where(onehot, -(A * p**2 - A * p), -A * p * p_y)
    assert torch.allclose(logits.grad, alpha * grad_ce + beta * grad_rce, atol=1e-6)


def test_finite_for_huge_and_bf16_logits():
    y = torch.tensor([0, 1, 2])
    huge = torch.tensor([[1e4, -1e4, 0.0], [0.0, 1e4, -1e4], [1e4, 0.0, -1e4]])
    for logits in (huge, huge.bfloat16(), torch.randn(3, 3).bfloat16()):
        for name, cfg in [("ce", {}), ("sl", {"alpha": 0.1, "beta": 1.0, "A": -4.0})]:
            out = losses.make_loss({"name": name, **cfg})(logits, y)
            assert torch.isfinite(out).all()
