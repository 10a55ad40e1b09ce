"""Two-phase methods: phase 1 corrects labels or selects samples, phase 2 trains on the result.

Phase 1 (the pretrain stage of a two-phase group; `build_pretrain(cfg, ...)`):
- joint (Tanaka et al. 2018; also phase 1 of seed 002's improved framework): minimise
  KL(s_i || p_i) + alpha Lp + beta Le, where s_i is sample i's current label (one-hot of
  its noisy label at first), Lp = KL(uniform prior || batch mean of p) keeps the network from
  putting every sample in one class and Le = -sum_k p_k log p_k (mean over the batch) makes
  predictions confident. From `start_epoch`, after every epoch each label becomes the mean
  of the sample's training-pass predictions over the last `window` epochs (`labels: soft`),
  or its argmax (`hard`). Constant learning rate.
- pencil (Yi and Wu 2019): epochs 1..stage1_epochs train with CE (backbone learning); then
  each sample has free label logits y~ (initialised to init_scale * onehot(noisy label)),
  y^d = softmax(y~), loss = KL(p || y^d) + alpha CE(noisy one-hot, y^d) + beta Le, and
  after each backward pass y~ <- y~ - label_lr * dL/dy~ (L the batch mean, as in the
  paper). Paper values alpha 0.1, beta 0.4; its public code swaps them (0.4 / 0.1) and
  applies softmax twice in the compatibility term, which is not done here.
- o2u (O2U-Net, Huang et al. 2019): `epochs` of CE at a constant lr, then `cyclic_epochs` at
  the batch size `cyclic_batch_size` with the cyclical learning rate
  s(t) = (1 + ((t - 1) mod c)) / c, r(t) = (1 - s(t)) r1 + s(t) r2 (t counted from 1 within
  the cyclical phase); each cyclical epoch the per-sample training-pass losses are centred
  (minus their mean) and accumulated; the samples with the largest mean centred loss, a
  `forget_rate` fraction, are removed. forget_rate: a number in [0, 1), `realized_noise_rate`
  (the run's share of wrong labels: the known-rate assumption of O2U-Net and seed 004; under
  asymmetric noise about half the nominal rate on digits and CIFAR-10, since only the
  mapped classes flip, and r (C-1)/C under symmetric-all) or `gmm` (no
  known rate: a two-component Gaussian mixture on the scores; the samples more likely in
  the high-loss component are removed, as DivideMix separates clean and noisy samples).

Phase 2 (the finetune stage; `Finetune`): a new network (`init: scratch`) or phase 1's
(`init: phase1`: PENCIL's stage 3, and O2U-Net's public code) trained with a step schedule on
phase 1's corrected labels with `kl` (KL(s || p): Tanaka, seed 002) or `reverse_kl`
(KL(p || s): PENCIL), or on the kept samples with any loss of losses.py (O2U: ce; O2U+APL:
nce_rce). With mixup a > 0 (seed 002's improved framework), each batch also pays
-sum_k [lam t_i + (1 - lam) t_j]_k log p_k(lam x_i + (1 - lam) x_j), lam ~ Beta(a, a) and j
a random permutation of the batch (Zhang et al. 2018), so L = L_c + L_mix.

The true labels are given to phase 1 for its per-epoch metrics only (label-correction
accuracy, detection AUROC and precision); nothing is trained on them.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from noisylabels.engine import losses, methods, metrics
from noisylabels.engine.methods import Standard
from noisylabels.engine.optim import Schedule
from noisylabels.spec.methods import SOFT_LOSSES


def cyclical_lr(t: int, cycle: int, r1: float, r2: float) -> float:
    """O2U-Net's learning rate at epoch t (from 1) of the cyclical phase: r1 down to r2 per cycle."""
    s = (1 + ((t - 1) % cycle)) / cycle
    return (1 - s) * r1 + s * r2


def gmm_high_component(score: np.ndarray, iters: int = 200) -> np.ndarray:
    """A two-component 1-D Gaussian mixture fitted by EM; True where the component with the
    larger mean is the more likely one (the samples to remove without a known noise rate)."""
    x = np.asarray(score, dtype=np.float64)
    mu = np.percentile(x, [25, 75])
    var = np.full(2, x.var() / 4 + 1e-12)
    weight = np.array([0.5, 0.5])
    for _ in range(iters):
        log_pdf = -0.5 * ((x[:, None] - mu) ** 2 / var + np.log(2 * np.pi * var)) + np.log(weight)
        resp = np.exp(log_pdf - log_pdf.max(axis=1, keepdims=True))
        resp /= resp.sum(axis=1, keepdims=True)
        total = resp.sum(axis=0) + 1e-12
        weight, mu = total / len(x), (resp * x[:, None]).sum(axis=0) / total
        var = (resp * (x[:, None] - mu) ** 2).sum(axis=0) / total + 1e-12
    high = int(np.argmax(mu))
    return resp[:, high] > 0.5


LABEL_HISTORY = ("label_acc_corrected", "label_fixed", "label_broken")  # per epoch, in MLflow


def _label_metrics(labels: torch.Tensor, noisy: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    m = metrics.phase1_metrics({"labels": labels.cpu().numpy()}, noisy.numpy(), true.numpy())
    return {k: m[k] for k in LABEL_HISTORY}


class _Phase1(Standard):
    """Shared by the phase-1 methods: a constant learning rate for `epochs` epochs.

    cfg: the pretrain section (a spec.methods settings model); train: the `train` section."""

    def __init__(self, cfg, train, noisy, true, num_classes: int, device):
        Schedule.__init__(self, train.model_copy(update={"epochs": cfg.epochs, "lr": cfg.lr, "milestones": [],
                                                          "schedule": "step"}))
        self.cfg, self.noisy, self.true, self.K = cfg, noisy, true, num_classes
        self.noisy_dev = noisy.to(device)


class JointOptimization(_Phase1):
    history_keys = LABEL_HISTORY
    STATE = ("labels", "recent", "slot", "filled")

    def __init__(self, cfg, train, noisy, true, num_classes, device, realized_noise_rate):
        super().__init__(cfg, train, noisy, true, num_classes, device)
        self.labels = F.one_hot(self.noisy_dev, num_classes).float()
        # training-pass predictions of the last `window` epochs, one slot per epoch (a ring);
        # filled with the labels, so a sample skipped in an epoch (a last batch of one) keeps
        # its label there rather than a zero
        self.recent = self.labels.expand(cfg.window, -1, -1).clone()
        self.slot, self.filled = 0, 0
        self.prior = torch.full((num_classes,), 1 / num_classes, device=device)

    def batch_loss(self, model, x, targets, idx):
        logits = model(x)
        log_p = losses.log_softmax(logits.float())
        p = log_p.exp()
        lp = (self.prior * (self.prior.log() - p.mean(dim=0).log())).sum()  # one value per batch
        le = -(p * log_p).sum(dim=1)
        self.recent[self.slot, idx] = p.detach()
        # the batch terms are added to every sample, so the batch mean is the paper's objective
        return _kl(log_p, self.labels[idx]) + self.cfg.alpha * lp + self.cfg.beta * le, logits

    def end_epoch(self, epoch, model, x, y, val_acc):
        self.filled = min(self.filled + 1, self.cfg.window)
        self.slot = (self.slot + 1) % self.cfg.window
        if epoch >= self.cfg.start_epoch:
            mean = self.recent[: self.filled].mean(dim=0)
            self.labels = mean if self.cfg.labels == "soft" else F.one_hot(mean.argmax(1), self.K).float()
        return _label_metrics(self.labels, self.noisy, self.true)

    def artefacts(self):
        return {"labels": self.labels.cpu().numpy().astype(np.float32)}


class Pencil(_Phase1):
    history_keys = LABEL_HISTORY
    STATE = ("y_tilde", "epoch")

    def __init__(self, cfg, train, noisy, true, num_classes, device, realized_noise_rate):
        super().__init__(cfg, train, noisy, true, num_classes, device)
        self.y_tilde = cfg.init_scale * F.one_hot(self.noisy_dev, num_classes).float()
        self.epoch, self.batch = 1, None

    def batch_loss(self, model, x, targets, idx):
        logits = model(x)
        if self.epoch <= self.cfg.stage1_epochs:  # stage 1: backbone learning with CE
            return losses.cross_entropy(logits, targets), logits
        log_p = losses.log_softmax(logits.float())
        p = log_p.exp()
        y_tilde = self.y_tilde[idx].clone().requires_grad_()
        log_yd = losses.log_softmax(y_tilde)
        self.batch = (idx, y_tilde)
        lc = (p * (log_p - log_yd)).sum(dim=1)  # KL(p || y^d)
        lo = -log_yd.gather(1, targets[:, None]).squeeze(1)  # compatibility with the noisy label
        le = -(p * log_p).sum(dim=1)
        return lc + self.cfg.alpha * lo + self.cfg.beta * le, logits

    def after_backward(self, idx):
        if self.batch is not None:  # gradient descent on the label logits of this batch
            batch_idx, y_tilde = self.batch
            self.y_tilde[batch_idx] -= self.cfg.label_lr * y_tilde.grad
            self.batch = None

    def end_epoch(self, epoch, model, x, y, val_acc):
        self.epoch = epoch + 1
        return _label_metrics(self.y_tilde, self.noisy, self.true)

    def artefacts(self):
        return {"labels": F.softmax(self.y_tilde, dim=1).cpu().numpy().astype(np.float32)}


class O2U(_Phase1):
    history_keys = ("detect_auroc", "detect_precision")
    STATE = ("epoch_loss", "seen", "total", "epoch")

    def __init__(self, cfg, train, noisy, true, num_classes, device, realized_noise_rate: float):
        super().__init__(cfg, train, noisy, true, num_classes, device)
        self.epochs = cfg.total_epochs
        self.forget = realized_noise_rate if cfg.forget_rate == "realized_noise_rate" else cfg.forget_rate
        self.epoch_loss = torch.zeros(len(noisy), device=device)
        self.seen = torch.zeros(len(noisy), dtype=torch.bool, device=device)
        self.total = torch.zeros(len(noisy), device=device)
        self.epoch = 1

    def lr(self, epoch):
        if epoch <= self.cfg.epochs:
            return self.cfg.lr
        return cyclical_lr(epoch - self.cfg.epochs, self.cfg.cycle, self.cfg.r1, self.cfg.r2)

    def batch_size(self, epoch):
        return self.train.batch_size if epoch <= self.cfg.epochs else self.cfg.cyclic_batch_size

    def batch_loss(self, model, x, targets, idx):
        logits = model(x)
        loss = losses.cross_entropy(logits, targets)
        if self.epoch > self.cfg.epochs:
            self.epoch_loss[idx], self.seen[idx] = loss.detach(), True
        return loss, logits

    def score(self) -> np.ndarray:
        return (self.total / max(self.epoch - 1 - self.cfg.epochs, 1)).cpu().numpy()

    def removed(self, score: np.ndarray) -> np.ndarray:
        if self.forget == "gmm":
            return gmm_high_component(score)
        out = np.zeros(len(score), dtype=bool)
        out[np.argsort(-score, kind="stable")[: int(round(self.forget * len(score)))]] = True
        return out

    def end_epoch(self, epoch, model, x, y, val_acc):
        self.epoch = epoch + 1
        if epoch <= self.cfg.epochs:
            return {"detect_auroc": math.nan, "detect_precision": math.nan}
        seen = self.seen
        self.total[seen] += self.epoch_loss[seen] - self.epoch_loss[seen].mean()  # centred, accumulated
        self.seen = torch.zeros_like(seen)
        score = self.score()
        m = metrics.phase1_metrics({"score": score, "keep": ~self.removed(score)}, self.noisy.numpy(), self.true.numpy())
        return {"detect_auroc": m["detect_auroc"], "detect_precision": m["detect_precision"]}

    def artefacts(self):
        score = self.score()
        return {"score": score.astype(np.float32), "keep": ~self.removed(score)}


def build_pretrain(cfg, train, *, noisy, true, num_classes: int, realized_noise_rate: float,
                   device) -> _Phase1:
    """The phase-1 method of a `pretrain` section (its `impl` names the class here)."""
    return globals()[cfg.impl](cfg, train, noisy, true, num_classes, device, realized_noise_rate)


def _kl(log_p, target):
    """KL(target || p) per sample from log p, 0 log 0 = 0."""
    return (target * (target.clamp_min(1e-12).log() - log_p)).sum(dim=1)


def kl(logits, target):
    """KL(target || p) per sample (Tanaka; seed 002's L_c)."""
    return _kl(losses.log_softmax(logits.float()), target)


def reverse_kl(logits, target):
    """KL(p || target) per sample (PENCIL's L_c); target must be positive (PENCIL's softmax labels)."""
    log_p = losses.log_softmax(logits.float())
    return (log_p.exp() * (log_p - target.clamp_min(1e-12).log())).sum(dim=1)


class Finetune(Standard):
    """Phase 2 under the finetune section's schedule (spec.methods.Finetune) and the `train`
    section's batch size and optimizer."""

    STATE = ("rng",)

    def __init__(self, cfg, train, seed: int):
        schedule = {k: getattr(cfg, k) for k in ("epochs", "lr", "milestones", "gamma")}
        Schedule.__init__(self, train.model_copy(update={**schedule, "schedule": "step"}))
        soft = cfg.loss.name in SOFT_LOSSES  # a soft-label loss here, else a loss of losses.py
        self.loss_fn = globals()[cfg.loss.impl] if soft else losses.make_loss(cfg.loss)
        self.mixup = cfg.mixup
        # its own random stream, so the batch order stays paired with the runs without mixup
        self.rng = np.random.default_rng([seed, 0x319])

    def mix(self, batch_size: int) -> tuple[float, torch.Tensor]:
        """lam ~ Beta(a, a) and the partner permutation j of one batch."""
        return float(self.rng.beta(self.mixup, self.mixup)), torch.from_numpy(self.rng.permutation(batch_size))

    def batch_loss(self, model, x, targets, idx):
        logits = model(x)
        loss = self.loss_fn(logits, targets)
        if self.mixup > 0:
            lam, j = self.mix(len(x))
            j = methods.from_host(j, x.device)
            t = targets if targets.is_floating_point() else F.one_hot(targets, logits.shape[1]).float()
            mixed_logits = model(lam * x + (1 - lam) * x[j])
            loss = loss + losses._soft_ce(losses.log_softmax(mixed_logits.float()), lam * t + (1 - lam) * t[j])
        return loss, logits
