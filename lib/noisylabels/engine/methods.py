"""How one run turns its loss into training: the per-batch loss and the per-epoch hooks.

`build(method, train, ...)` returns, for a spec.methods.SinglePhase, one of:
- Standard: minimise the loss (every loss of losses.py).
- TruncatedLq: the GCE paper's truncated Lq by alternating convex search: per-sample
  weights w_i = 1[p_{y_i}(x_i) > k] are recomputed at `start_epoch` and every `interval`
  epochs after it. They are computed with the checkpoint that had the best accuracy on the
  held-out *noisy* split so far; the public port loads its best-*test*-accuracy checkpoint
  there, which leaks the test set.
- D2L (Ma et al. 2018): each epoch, the LID of the penultimate features of a random subset;
  the first epoch (after init_epoch + window) whose LID exceeds the mean of the previous
  `window` epochs by 2 standard deviations is past the turning point: the weights roll back
  to the epoch before, and from then on the loss is hard bootstrapping towards the model's
  prediction with alpha = exp(-(epoch / epochs) * LID / min LID). Before the turning point it
  uses the method's `loss`: CE in the paper's baseline (its public code uses SCE there).
The loop (loop._fit) asks the method for each epoch's lr(epoch) and batch_size(epoch),
calls batch_loss(model, x, targets, idx) -> (per-sample losses, logits) per batch (idx:
positions in the fitted set), after_backward(idx) between backward and the optimizer step,
and end_epoch(...) once per epoch; end_epoch returns the method's per-epoch metrics (named
in `history_keys`), which go to the run's history and MLflow. two_phase.py's methods follow
the same protocol.

`transition_matrix(...)` resolves a Forward/Backward loss's `matrix` option;
`logits` / `probabilities` evaluate a model in chunks; `from_host` brings a step's small
host values (mixup draws, per-run numbers) to the device without a host sync.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from noisylabels.engine import losses
from noisylabels.errors import ConfigError
from noisylabels.engine.optim import Schedule


class Standard(Schedule):
    history_keys: tuple[str, ...] = ()
    STATE: tuple[str, ...] = ()  # the attributes that change while training (a checkpoint keeps them)

    def state(self) -> dict:
        """The method's own training state, as tensors and plain values (checkpoint.py)."""
        out = {}
        for key in self.STATE:
            value = getattr(self, key)
            if isinstance(value, torch.Generator):
                value = value.get_state()
            elif isinstance(value, np.random.Generator):
                value = value.bit_generator.state
            out[key] = value
        return out

    def restore(self, state: dict) -> None:
        for key, value in state.items():
            current = getattr(self, key)
            if isinstance(current, torch.Generator):
                current.set_state(value)
            elif isinstance(current, np.random.Generator):
                current.bit_generator.state = value
            else:
                setattr(self, key, value)

    def __init__(self, loss, train, matrix=None):
        super().__init__(train)
        self.loss_fn = losses.make_loss(loss, matrix)

    def batch_loss(self, model, x, labels, idx):
        logits = model(x)
        return self.loss_fn(logits, labels), logits

    def after_backward(self, idx) -> None:
        pass

    def end_epoch(self, epoch: int, model, x, y, val_acc: float) -> dict[str, float]:
        return {}

    def final_metrics(self) -> dict[str, float]:
        return {}

    def artefacts(self) -> dict[str, np.ndarray]:
        return {}


def from_host(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor made within a step, on `device`: to a GPU from pinned memory
    without waiting, as a copy from pageable memory waits until the GPU has run everything
    queued before it (a host sync every step); on the CPU, t itself."""
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t


@torch.no_grad()
def logits(model, x, chunk: int = 4096) -> torch.Tensor:
    """The model's outputs in evaluation mode, `chunk` samples at a time."""
    model.eval()
    return torch.cat([model(x[i : i + chunk]) for i in range(0, len(x), chunk)])


def probabilities(model, x) -> torch.Tensor:
    return F.softmax(logits(model, x).float(), 1)


class TruncatedLq(Standard):
    history_keys = ("truncated_fraction",)
    STATE = ("weight", "best_acc", "best_state")

    def __init__(self, loss, train, n_fit: int, device):
        super().__init__(loss, train)
        self.k, self.start, self.interval = loss.k, loss.start_epoch, loss.interval
        self.weight = torch.ones(n_fit, device=device)  # w = 1: plain Lq until the first update
        self.best_acc, self.best_state = -1.0, None

    def batch_loss(self, model, x, labels, idx):
        logits = model(x)
        return self.loss_fn(logits, labels, weight=self.weight[idx]), logits

    def end_epoch(self, epoch, model, x, y, val_acc):
        if val_acc > self.best_acc:
            self.best_acc, self.best_state = val_acc, copy.deepcopy(model.state_dict())
        if epoch >= self.start and (epoch - self.start) % self.interval == 0:
            best = copy.deepcopy(model)
            best.load_state_dict(self.best_state)
            p_y = probabilities(best, x).gather(1, y[:, None]).squeeze(1)
            self.weight = (p_y > self.k).float()
        return {"truncated_fraction": float(1 - self.weight.mean())}


def lid_mle(features: torch.Tensor, k: int) -> torch.Tensor:
    """Per-sample LID by maximum likelihood (Amsaleg et al.), neighbours within `features`.

    LID(x) = -k / sum_{i<=k} log(d_i / d_k), d_i the distance to the i-th nearest neighbour.
    features: B x width, or N x B x width (a stack's N runs, each its own neighbours).
    """
    k = min(k, features.shape[-2] - 1)
    d = torch.cdist(features.double(), features.double())
    d = d.sort(dim=-1).values[..., 1 : k + 1].clamp_min(1e-12)  # column 0 is the sample itself
    return -k / torch.log(d / d[..., -1:]).sum(dim=-1)


class D2L(Standard):
    history_keys = ("lid", "d2l_alpha")
    STATE = ("rng", "lids", "alpha", "turning_epoch", "previous_state")

    def __init__(self, loss, procedure, train, seed: int):
        super().__init__(loss, train)
        self.t = procedure  # spec.methods.D2L
        # own stream for the LID subsets, so batch order stays paired with the other methods
        self.rng = torch.Generator().manual_seed(seed + 1_000_003)
        self.lids: list[float] = []
        self.alpha, self.turning_epoch, self.previous_state = 1.0, None, None

    def batch_loss(self, model, x, labels, idx):
        logits = model(x)
        if self.turning_epoch is None:
            return self.loss_fn(logits, labels), logits
        return losses.bootstrap(logits, labels, self.alpha, "hard"), logits

    @torch.no_grad()
    def _lid(self, model, x) -> float:
        head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        captured = []
        hook = head.register_forward_hook(lambda mod, inputs, out: captured.append(inputs[0].flatten(1)))
        subset = torch.randperm(len(x), generator=self.rng)[: self.t.lid_samples].to(x.device)
        model.eval()
        bs = self.t.lid_batch
        for s in range(0, len(subset), bs):
            if len(subset) - s > 1:
                model(x[subset[s : s + bs]])
        hook.remove()
        return float(torch.stack([lid_mle(f, self.t.lid_k).mean() for f in captured]).mean())

    def end_epoch(self, epoch, model, x, y, val_acc):
        lid = self._lid(model, x)
        # a degenerate estimate (all neighbours at one distance) repeats the last one, as in D2L's code
        self.lids.append(lid if math.isfinite(lid) and lid > 0 else (self.lids[-1] if self.lids else 0.0))
        w = self.t.window
        if self.turning_epoch is None and len(self.lids) > self.t.init_epoch + w:
            window = np.array(self.lids[-w - 1 : -1])
            if self.lids[-1] - window.mean() > 2 * window.std():
                self.turning_epoch = epoch - 1
                model.load_state_dict(self.previous_state)  # roll back to the turning point
        if self.turning_epoch is None:
            self.previous_state = copy.deepcopy(model.state_dict())
        else:
            # alpha_i = exp(-(i / T) LID_i / min_{j < i} LID_j): the previous epochs' minimum
            self.alpha = math.exp(-(epoch / self.epochs) * self.lids[-1] / min(self.lids[:-1]))
        return {"lid": self.lids[-1], "d2l_alpha": self.alpha}

    def final_metrics(self):
        return {"d2l_turning_epoch": float(self.turning_epoch or 0)}


def estimate_transition(probs: np.ndarray, percentile: float) -> np.ndarray:
    """Patrini et al.'s anchor-point estimate from a model trained on the noisy labels.

    For each class i, the anchor is the sample whose p(i | x) is at the given percentile
    over the training set (100: the maximum; their code uses 97 to skip outliers), and row
    i of T is that sample's predicted distribution.
    """
    K = probs.shape[1]
    T = np.empty((K, K))
    for i in range(K):
        column = probs[:, i]
        anchor = np.flatnonzero(column == np.percentile(column, percentile, method="higher"))[0]
        T[i] = probs[anchor]
    return T / T.sum(axis=1, keepdims=True)


def transition_matrix(loss, realized: np.ndarray | None, num_classes: int, estimate, key: str) -> np.ndarray:
    """The K x K matrix for a loss's `matrix` option; estimate() -> probabilities on the
    fitted set. Backward correction multiplies by T^-1: a (near) singular T stops here."""
    source = loss.matrix
    if source == "realized":
        matrix = np.asarray(realized, dtype=np.float64)
    elif source == "identity":
        matrix = np.eye(num_classes)
    elif source == "estimated":
        matrix = estimate_transition(estimate(), loss.anchor_percentile)
    else:
        matrix = np.asarray(source, dtype=np.float64)
    if loss.name == "backward" and np.linalg.cond(matrix) > 1e6:
        raise ConfigError(f"{key}.matrix={source!r}: backward needs an invertible transition "
                          f"matrix; this one has condition number {np.linalg.cond(matrix):.3g} "
                          "(symmetric noise at rate (K-1)/K is singular)")
    return matrix


def build(method, train, *, matrix=None, n_fit: int, seed: int, device) -> Standard:
    """The trainer of a spec.methods.SinglePhase under the `train` schedule."""
    if method.procedure.name == "d2l":
        return D2L(method.loss, method.procedure, train, seed)
    if method.loss.name == "truncated_lq":
        return TruncatedLq(method.loss, train, n_fit, device)
    # the matrix on the device once, not copied there every step
    return Standard(method.loss, train, None if matrix is None else matrix.to(device))
