"""The optimizer and the learning-rate schedule of the `train` section (spec/train.py).

SGD is torch.optim.SGD's update (gradient-norm clipping, L2 weight decay added to the
gradient, momentum, optionally Nesterov's) through torch's fused SGD kernel. torch.optim's
first step imports torch._dynamo, 1.3 s in every worker process of every stage; this is the
same arithmetic without it (tests compare it with torch.optim.SGD and clip_grad_norm_, the
cosine schedule with torch's CosineAnnealingLR).
"""
from __future__ import annotations

import math

import torch

from noisylabels.errors import ConfigError


class Schedule:
    """A schedule's epochs, learning rate and batch size (spec.train.Schedule / Train)."""

    def __init__(self, train):
        self.train, self.epochs = train, train.epochs

    def lr(self, epoch: int) -> float:
        """Epochs count from 1. step: lr times gamma for every milestone already passed ([] =
        constant); cosine: lr_min + (lr - lr_min)(1 + cos(pi (epoch - 1) / epochs)) / 2, what
        CosineAnnealingLR(T_max=epochs, eta_min=lr_min) gives when stepped once per epoch."""
        t = self.train
        if t.schedule == "cosine":
            return t.lr_min + (t.lr - t.lr_min) * (1 + math.cos(math.pi * (epoch - 1) / t.epochs)) / 2
        return t.lr * t.gamma ** sum(epoch > m for m in t.milestones)

    def batch_size(self, epoch: int) -> int:
        return self.train.batch_size


class SGD:
    """SGD with momentum and weight decay, plus Keras' per-layer kernel L2.

    l2: {parameter-name prefix or `all`: c}: Keras' kernel_regularizer l2(c) on those layers'
    kernels (weights of dimension > 1, not biases or batch norm), which adds c * sum(w^2) to
    the loss, so 2 c w to the gradient. SCE: 0.01 on the first dense layer of its CIFAR-10
    CNN, on every kernel of its ResNet-44.

    stacked: every parameter holds N runs' (stack.py: a leading run dimension), so gradients
    are clipped per run, each run's norm over its own slices, as clip_grad_norm_ clips it
    alone, and a kernel has one dimension more.
    """

    def __init__(self, named_params, momentum: float, weight_decay: float, l2: dict | None = None,
                 nesterov: bool = False, grad_clip: float | None = None, stacked: bool = False):
        named = [(n, p) for n, p in named_params if p.requires_grad]
        self.params = [p for _, p in named]
        self.momentum, self.weight_decay, self.nesterov, self.grad_clip = momentum, weight_decay, nesterov, grad_clip
        self.stacked = stacked
        self.buffers = [torch.zeros_like(p) for p in self.params]
        self.l2_index, self.l2_coef = [], []
        for prefix, c in (l2 or {}).items():
            kernel = 2 if stacked else 1  # a kernel's dimensions exceed this (a stack adds one)
            hits = [i for i, (n, p) in enumerate(named)
                    if p.dim() > kernel and (prefix == "all" or n.startswith(f"{prefix}."))]
            if not hits:
                kernels = sorted({n.rsplit(".", 1)[0] for n, p in named if p.dim() > kernel})
                raise ConfigError(f"train.l2.{prefix}={c!r}: no layer of the model has that name; "
                                  f"expected all or one of {', '.join(kernels)}")
            for i in hits:
                if c and i not in self.l2_index:
                    self.l2_index.append(i)
                    self.l2_coef.append(2.0 * c)

    @classmethod
    def for_train(cls, model, train) -> "SGD":
        """The optimizer a `train` section asks for."""
        return cls(model.named_parameters(), train.momentum, train.weight_decay, train.l2, train.nesterov,
                   train.grad_clip)

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: float, skip: list[int] | None = None):
        """skip (stacked only): runs that take no step (stack.py: their epoch is over while
        others' goes on); neither weight decay nor momentum moves their parameters or buffers."""
        kept = [t[skip] for t in (*self.params, *self.buffers)] if skip else []
        self._update(lr)
        for t, value in zip((*self.params, *self.buffers), kept):
            t[skip] = value

    def _update(self, lr: float):
        if self.grad_clip is not None and self.stacked:
            self._clip_per_run()
        elif self.grad_clip is not None:  # scales the gradients in place, without a host sync
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
        grads = [p.grad for p in self.params]
        if self.l2_index:  # in place: zero_grad drops the gradients before the next backward
            decay = torch._foreach_mul([self.params[i] for i in self.l2_index], self.l2_coef)
            torch._foreach_add_([grads[i] for i in self.l2_index], decay)
        # torch.optim.SGD(fused=True)'s kernel, without importing torch.optim: weight decay,
        # momentum (Nesterov's too) and the step in one pass over each tensor; a stacked digits
        # step's update took 0.13 ms against 0.29 ms as four foreach ops on this CPU. The
        # arithmetic is the same; a vectorised kernel's tail may round the last bit otherwise.
        torch._fused_sgd_(self.params, grads, self.buffers if self.momentum else [], weight_decay=self.weight_decay,
                          momentum=self.momentum, lr=lr, dampening=0.0, nesterov=self.nesterov, maximize=False,
                          is_first_step=False)

    def _clip_per_run(self):
        """clip_grad_norm_'s arithmetic with a norm per run: each run's gradients times
        min(1, grad_clip / (its norm + 1e-6)), without a host sync."""
        grads = [p.grad for p in self.params]
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)  # N
        coef = (self.grad_clip / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *[1] * (g.dim() - 1)))
