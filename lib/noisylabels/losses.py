"""Every loss, selected by name: `make_loss(cfg)` -> f(logits, labels) -> per-sample losses.

Losses are returned per sample (not averaged) so that a method can weight, select or rank
samples with them. They are computed in float32 through log_softmax / softmax whatever the
logits' dtype, so logits of large magnitude or in bf16 stay finite.
The names and hyper-parameters are the ones `config.LOSSES` validates.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE = -log p_y."""
    return -F.log_softmax(logits.float(), dim=1).gather(1, labels[:, None]).squeeze(1)


def reverse_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, A: float) -> torch.Tensor:
    """RCE = -sum_k p_k log q_k for one-hot q, with log 0 := A (SCE paper Eq. 5).

    log q_y = log 1 = 0 and log q_k = A for k != y, so RCE = -A (1 - p_y); at A = -2 it is
    MAE = ||e_y - p||_1 = 2 (1 - p_y).
    """
    p = F.softmax(logits.float(), dim=1)
    log_q = torch.full_like(p, A).scatter(1, labels[:, None], 0.0)
    return -(p * log_q).sum(dim=1)


def symmetric_cross_entropy(logits, labels, alpha: float, beta: float, A: float):
    """SL = alpha * CE + beta * RCE (SCE paper Eq. 7)."""
    return alpha * cross_entropy(logits, labels) + beta * reverse_cross_entropy(logits, labels, A)


LOSSES = {
    "ce": cross_entropy,
    "sl": symmetric_cross_entropy,
}


def make_loss(cfg: dict):
    """cfg: a validated loss section, e.g. {"name": "sl", "alpha": 0.1, "beta": 1.0, "A": -4}."""
    options = {k: v for k, v in cfg.items() if k != "name"}
    return partial(LOSSES[cfg["name"]], **options)
