"""The optimizer and the step schedule of the `train` section (spec/train.py).

SGD is torch.optim.SGD's update (L2 weight decay added to the gradient, then momentum) as
four foreach ops. torch.optim's first step imports torch._dynamo, 1.3 s in every worker
process of every stage; this is the same arithmetic without it (a test compares them).
"""
from __future__ import annotations

import torch

from noisylabels.errors import ConfigError


class Schedule:
    """A schedule's epochs, step learning rate and batch size (spec.train.Schedule / Train)."""

    def __init__(self, train):
        self.train, self.epochs = train, train.epochs

    def lr(self, epoch: int) -> float:
        """lr times gamma for every milestone already passed (epochs from 1; [] = constant)."""
        t = self.train
        return t.lr * t.gamma ** sum(epoch > m for m in t.milestones)

    def batch_size(self, epoch: int) -> int:
        return self.train.batch_size


class SGD:
    """SGD with momentum and weight decay, plus Keras' per-layer kernel L2.

    l2: {parameter-name prefix or `all`: c}: Keras' kernel_regularizer l2(c) on those layers'
    kernels (weights of dimension > 1, not biases or batch norm), which adds c * sum(w^2) to
    the loss, so 2 c w to the gradient. SCE: 0.01 on the first dense layer of its CIFAR-10
    CNN, on every kernel of its ResNet-44.
    """

    def __init__(self, named_params, momentum: float, weight_decay: float, l2: dict | None = None):
        named = [(n, p) for n, p in named_params if p.requires_grad]
        self.params = [p for _, p in named]
        self.momentum, self.weight_decay = momentum, weight_decay
        self.buffers = [torch.zeros_like(p) for p in self.params]
        self.l2_index, self.l2_coef = [], []
        for prefix, c in (l2 or {}).items():
            hits = [i for i, (n, p) in enumerate(named) if p.dim() > 1 and (prefix == "all" or n.startswith(f"{prefix}."))]
            if not hits:
                kernels = sorted({n.rsplit(".", 1)[0] for n, p in named if p.dim() > 1})
                raise ConfigError(f"train.l2.{prefix}={c!r}: no layer of the model has that name; "
                                  f"expected all or one of {', '.join(kernels)}")
            for i in hits:
                if c and i not in self.l2_index:
                    self.l2_index.append(i)
                    self.l2_coef.append(2.0 * c)

    @classmethod
    def for_train(cls, model, train) -> "SGD":
        """The optimizer a `train` section asks for."""
        return cls(model.named_parameters(), train.momentum, train.weight_decay, train.l2)

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: float):
        grads = [p.grad for p in self.params]
        if self.weight_decay:
            grads = torch._foreach_add(grads, self.params, alpha=self.weight_decay)
        if self.l2_index:
            grads = list(grads)
            decay = torch._foreach_mul([self.params[i] for i in self.l2_index], self.l2_coef)
            for i, d in zip(self.l2_index, decay):
                grads[i] = grads[i] + d
        torch._foreach_mul_(self.buffers, self.momentum)
        torch._foreach_add_(self.buffers, grads)
        torch._foreach_add_(self.params, self.buffers, alpha=-lr)
