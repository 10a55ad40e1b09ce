"""Every loss of the SCE, GCE and APL papers, selected by name: `make_loss(cfg, matrix)`.

Each loss maps (logits, labels, *hyper-parameters) to per-sample losses (not averaged), so a
method can weight, select or rank samples with them. Everything is computed in float32
from log_softmax, whatever the logits' dtype, so logits of magnitude 1e4 or in bf16 give
finite values and finite gradients: powers p^q are exp(q log p), and log(1 - p_k) is a
log-sum-exp over the other classes rather than log1p(-p_k).

Each loss's name and hyper-parameters are declared once, in spec/losses.py, whose `impl`
names the function here. A few options are not part of a formula but of how the training
method feeds it (spec.losses.Loss.METHOD_OPTIONS): the truncated-Lq weight schedule and the
transition matrix with the anchor percentile of its estimate.

Formulas (p = softmax(logits), y the given label, K classes, e_y its one-hot vector):
  ce            -log p_y                                   (no 1e-7 clip, unlike the Keras code)
  scaled_ce     scale * CE                                 (SCE paper Sec. 4.3: '2CE', '5CE')
  rce           -sum_k p_k log q_k, log 0 := A             = -A (1 - p_y)      (SCE Eq. 5)
  sl            alpha CE + beta RCE                                          (SCE Eq. 7)
  lsr           CE to q = (1 - eps) e_y + eps / K          (Szegedy et al.; see lsr())
  lsr_sl        alpha CE(q_lsr, p) + beta RCE(p, q_lsr)    (SCE Table 2, 'LSR+SL')
  bootstrap     CE to beta e_y + (1 - beta) t, t = p (soft) or onehot(argmax p) (hard)
  forward       -log q_y, q = T^T p                        (Patrini et al.)
  backward      (T^-1 l)_y, l_k = -log p_k                 (Patrini et al.)
  forward_sl    forward + beta RCE(q, y) = forward - beta A (1 - q_y)  (SCE Table 2, 'Forward+SL')
  mae           ||e_y - p||_1 = 2 (1 - p_y)                (GCE paper)
  gce           (1 - p_y^q) / q                            (GCE's Lq)
  truncated_lq  w Lq(p_y) + (1 - w) Lq(k), w = 1[p_y > k]  (GCE's truncated Lq; the method
                                                            recomputes w on a schedule)
  nce           -log p_y / -sum_k log p_k                  (APL paper)
  nfl           FL_y / sum_k FL_k, FL_k = -(1 - p_k)^gamma log p_k
  ngce          (1 - p_y^q) / (K - sum_k p_k^q)
  nce_rce, nce_mae, nfl_rce, nfl_mae   alpha * active + beta * passive (APL); their MAE term
                is 1 - p_y as in the APL code (half of `mae`), with which its published
                alpha/beta were tuned.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def log_softmax(z: torch.Tensor) -> torch.Tensor:
    """log_softmax over the classes of B x K logits. On the CPU over the transposed view:
    torch's CPU kernel is slow over a short last dimension (768 x 10, a stacked digits
    step's logits: 0.11 ms forward against 0.015 ms transposed, the backward likewise), and
    the values are those of F.log_softmax(z, 1) or within one float32 rounding of them."""
    if z.device.type == "cpu":
        return F.log_softmax(z.t(), 0).t()
    return F.log_softmax(z, 1)


def _log_p(logits):
    return log_softmax(logits.float())


def _pick(values, labels):
    return values.gather(1, labels[:, None]).squeeze(1)


def _log_one_minus_p(logits):
    """log(1 - p_k) for every k, as log sum_{j != k} p_j: finite even where p_k rounds to 1."""
    z = logits.float()
    K = z.shape[1]
    others = z[:, None, :].expand(-1, K, K).masked_fill(torch.eye(K, dtype=torch.bool, device=z.device), float("-inf"))
    return torch.logsumexp(others, dim=2) - torch.logsumexp(z, dim=1, keepdim=True)


def _soft_ce(log_p, target):
    """-sum_k target_k log p_k."""
    return -(target * log_p).sum(dim=1)


def cross_entropy(logits, labels):
    return -_pick(_log_p(logits), labels)


def scaled_cross_entropy(logits, labels, scale: float):
    return scale * cross_entropy(logits, labels)


def reverse_cross_entropy(logits, labels, A: float):
    """RCE for a one-hot q: log q_y = 0, log q_k = A otherwise, so RCE = -A (1 - p_y).

    At A = -2 it is MAE = ||e_y - p||_1 (SCE paper Sec. 4.3).
    """
    p = _log_p(logits).exp()
    log_q = torch.full_like(p, A).scatter(1, labels[:, None], 0.0)
    return -(p * log_q).sum(dim=1)


def symmetric_cross_entropy(logits, labels, alpha: float, beta: float, A: float):
    return alpha * cross_entropy(logits, labels) + beta * reverse_cross_entropy(logits, labels, A)


def lsr_target(labels, num_classes: int, epsilon: float):
    """(1 - eps) e_y + eps / K. SCE's code writes y (1 - 0.11) + 0.01 for K = 10, whose
    entries sum to 0.99; we use the label-smoothing definition, which sums to 1."""
    return (1 - epsilon) * F.one_hot(labels, num_classes).float() + epsilon / num_classes


def lsr(logits, labels, epsilon: float):
    return _soft_ce(_log_p(logits), lsr_target(labels, logits.shape[1], epsilon))


def lsr_sl(logits, labels, epsilon: float, alpha: float, beta: float):
    """SL with the smoothed label: no log 0 appears, so RCE needs no A."""
    log_p = _log_p(logits)
    q = lsr_target(labels, logits.shape[1], epsilon)
    return alpha * _soft_ce(log_p, q) + beta * _soft_ce(q.log(), log_p.exp())


def bootstrap(logits, labels, beta: float, mode: str):
    """Reed et al.: soft uses the prediction p itself (gradient through it, which makes it
    minimum-entropy regularisation); hard uses its argmax."""
    log_p = _log_p(logits)
    own = log_p.exp() if mode == "soft" else F.one_hot(log_p.argmax(1), logits.shape[1]).float()
    return _soft_ce(log_p, beta * F.one_hot(labels, logits.shape[1]).float() + (1 - beta) * own)


def _per_row(matrix, logits):
    """The transition matrix of each row of logits: one K x K for every row (1 x K x K), or
    a stack's N x K x K, one per run, when the rows are N runs' batches one after the other
    (stack.py flattens N x B x K logits run by run)."""
    matrix = matrix.float().to(logits.device)
    if matrix.dim() == 2:
        return matrix[None]
    return matrix.repeat_interleave(len(logits) // len(matrix), dim=0)


def _corrected_log_q(logits, matrix):
    """log q with q = T^T p, q_j = sum_i p_i T[i, j]: the model predicts the clean class,
    T maps it to the noisy label it is compared with. log 0 = -inf drops a term. matrix:
    K x K, or N x K x K in a stack (_per_row).

    A column of T that is all zero (a label no class turns into, e.g. a class absent from a
    small sample's realized matrix) has q_j = 0. logsumexp over only -inf has a NaN gradient,
    which would reach every sample through the batch even though no label is j, so such
    columns are computed on zeros and set to -inf afterwards (no gradient)."""
    log_T = _per_row(matrix, logits).clamp_min(0).log()  # 1 or rows x K x K
    empty = torch.isneginf(log_T).all(dim=1)
    terms = (_log_p(logits)[:, :, None] + log_T).masked_fill(empty[:, None, :], 0.0)
    return torch.logsumexp(terms, dim=1).masked_fill(empty, float("-inf"))


def forward_correction(logits, labels, matrix: torch.Tensor):
    return -_pick(_corrected_log_q(logits, matrix), labels)


def backward_correction(logits, labels, matrix: torch.Tensor):
    """(T^-1 l)_y with l_k = -log p_k: unbiased for the clean loss, unbounded below."""
    # K x K, or N x K x K in a stack; inv_ex: linalg.inv waits for its error check on a GPU
    # (the matrix was checked invertible when it was resolved: methods.transition_matrix)
    inverse = torch.linalg.inv_ex(matrix.double()).inverse.float()
    rows = _per_row(inverse, logits).expand(len(logits), -1, -1)
    return (rows[torch.arange(len(labels), device=labels.device), labels] * -_log_p(logits)).sum(dim=1)


def forward_sl(logits, labels, matrix: torch.Tensor, beta: float, A: float):
    """Forward + beta RCE(q, y), RCE taken on the corrected prediction q = T^T p: the pair
    the Forward loss compares ("the RCE term added to the Forward loss", SCE Sec. 5.2).
    RCE of the clean-class prediction p instead collapsed on digits (measured: 19-75% at
    symmetric 40%, against 92-94% this way)."""
    log_q_y = _pick(_corrected_log_q(logits, matrix), labels)
    return -log_q_y - beta * A * (1 - log_q_y.exp())
def mean_absolute_error(logits, labels):
    return 2 * (1 - _pick(_log_p(logits), labels).exp())


def _lq(log_p_y, q: float):
    return (1 - torch.exp(q * log_p_y)) / q


def generalized_cross_entropy(logits, labels, q: float):
    return _lq(_pick(_log_p(logits), labels), q)


def truncated_lq(logits, labels, q: float, k: float, *, weight: torch.Tensor | None = None):
    """Lq(p_y) where w = 1, the constant Lq(k) where w = 0 (no gradient there).

    By default w = 1[p_y > k] from these logits (the GCE paper's piecewise definition); the
    training method passes the weights it last computed instead (alternating convex search).
    """
    log_p_y = _pick(_log_p(logits), labels)
    if weight is None:
        weight = (log_p_y.exp() > k).float()
    return weight * _lq(log_p_y, q) + (1 - weight) * (1 - k**q) / q


def normalized_cross_entropy(logits, labels):
    log_p = _log_p(logits)
    return _pick(log_p, labels) / log_p.sum(dim=1)


def normalized_focal_loss(logits, labels, gamma: float, gradient: str = "full"):
    """NFL = FL(p, y) / sum_k FL(p, k), FL(p, k) = -(1 - p_k)^gamma log p_k. gradient="apl":
    as APL's code, the focal factor and the normaliser do not carry gradient (spec NFL)."""
    factor = torch.exp(gamma * _log_one_minus_p(logits))
    focal = -(factor.detach() if gradient == "apl" else factor) * _log_p(logits)
    normaliser = focal.sum(dim=1)
    return _pick(focal, labels) / (normaliser.detach() if gradient == "apl" else normaliser)


def normalized_generalized_cross_entropy(logits, labels, q: float):
    log_p = _log_p(logits)
    return (1 - torch.exp(q * _pick(log_p, labels))) / (logits.shape[1] - torch.exp(q * log_p).sum(dim=1))


def _apl_mae(logits, labels):
    return mean_absolute_error(logits, labels) / 2


def nce_rce(logits, labels, alpha: float, beta: float, A: float):
    return alpha * normalized_cross_entropy(logits, labels) + beta * reverse_cross_entropy(logits, labels, A)


def nce_mae(logits, labels, alpha: float, beta: float):
    return alpha * normalized_cross_entropy(logits, labels) + beta * _apl_mae(logits, labels)


def nfl_rce(logits, labels, alpha: float, beta: float, gamma: float, A: float, gradient: str = "full"):
    return (alpha * normalized_focal_loss(logits, labels, gamma, gradient)
            + beta * reverse_cross_entropy(logits, labels, A))


def nfl_mae(logits, labels, alpha: float, beta: float, gamma: float, gradient: str = "full"):
    return alpha * normalized_focal_loss(logits, labels, gamma, gradient) + beta * _apl_mae(logits, labels)


def make_loss(spec, matrix: torch.Tensor | None = None):
    """spec: a spec.losses settings model, e.g. SL(alpha=0.1, beta=1.0, A=-4).

    matrix: the transition matrix (K x K tensor) for the losses with a `matrix` option;
    the caller resolves `realized` / `estimated` / `identity` / a literal into it.
    Returns f(logits, labels, **extra) -> per-sample losses.
    """
    fn = globals()[spec.impl]
    options = spec.formula_options()
    if hasattr(spec, "matrix"):
        if matrix is None:
            raise ValueError(f"loss {spec.name!r} needs its transition matrix")
        options["matrix"] = matrix

    def loss(logits, labels, **extra):
        return fn(logits, labels, **options, **extra)

    return loss
