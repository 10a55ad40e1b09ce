"""Stacked training: several runs of a group trained as one model (`train.stack`).

Runs that share everything but their noise setting, seed, labels and loss overrides (one
network, one method, one schedule, fitted sets of one size) train together: every weight
holds all N runs' as one tensor with a leading run dimension, and one step computes all
runs' batches, so a step of N runs costs about the kernel launches of one (the digits MLP
is launch-bound on a CPU, benchmarks/engine.py; a small CNN would be on a GPU, estimated from
its FLOPs, not measured). Each run keeps its own initial weights (built as loop.train builds
them), batch order, augmentation draws, labels, optimizer buffers and history, so a stacked
run is the run loop.train trains, up to floating-point summation order (tests/test_stack.py).
The loss is the method's per-sample loss on all runs' batches at once (or each run's own,
where overrides change its numbers); the sum over runs of each run's batch mean gives each
run exactly its own gradient, and SGD's update is elementwise.

Two stacked models: StackedMLP (batched matmuls) for the digits MLP, and StackedModel for
every other network, through torch.func (the runs' parameters and buffers stacked, one
forward pass vmapped over them: a convolution becomes a grouped one, batch norm keeps each
run's batch statistics and running averages). `train.stack: auto` stacks every network on
CUDA (issue 12's default until a GPU measurement says otherwise; none is made yet) and only
the digits MLP on the CPU, where StackedModel ran SCE's CNNs at 0.34-0.52x of the runs one
by one (benchmarks/engine.py, on two machines).

What stacks (`stackable`): every run, but a Forward / Backward run with an `estimated`
matrix (a CE fit per run comes first) and a network with dropout (vmap would draw its masks
otherwise than the run alone). Per run, a stack keeps: Keras' per-layer L2 and
gradient-norm clipping (optim.SGD's `stacked`), a Forward/Backward transition matrix
(losses.py takes the N matrices), truncated Lq's sample weights (_Truncation), D2L's LID,
turning point, roll-back and alpha (_D2L), phase 1's label state (_Phase1: each run's own
two_phase.py method object), phase 2's phase-1 labels and weights and mixup draws
(_Finetune), and O2U's kept samples: runs of different lengths take different numbers of
steps, so a step pads the shorter batches (their losses masked out) and leaves a finished
run's weights and optimizer state as they were (_batches). Padding reaches batch norm's
batch statistics, so a network with batch norm stacks only runs of one length.

A stack saves each run's checkpoint in loop.train's own format (checkpoint.py), all of one
epoch, and resumes from them as a stack, so a resumed stack equals an uninterrupted one.
Used by workers.py: `units` cuts a group's jobs into stacks, `train_units` trains one.
"""
from __future__ import annotations

import copy
import functools
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from noisylabels.engine import loop, methods, two_phase
from noisylabels.engine.losses import _soft_ce as soft_ce, bootstrap, log_softmax, make_loss
from noisylabels.engine.optim import SGD


def stackable(job: loop.Job) -> bool:
    if job.run.group.model.dropout:
        return False
    if job.kind == "finetune":
        # O2U's kept subsets differ in size, so its runs take different numbers of steps; with
        # Keras' per-step lr decay each would need its own lr (no table asks for both)
        return job.phase1.get("keep") is None or not job.run.group.train.lr_decay
    return job.kind == "pretrain" or getattr(job.run.method.loss, "matrix", None) != "estimated"


def units(jobs: list[loop.Job], workers: int, device: str) -> list[list[loop.Job]]:
    """The jobs cut into what one worker trains at a time, in job order: stacks of
    neighbouring stackable jobs with one method (up to loss overrides: _stack_key) and
    fitted-set size, of at most train.stack runs and at most a `workers`-th of the jobs (so
    every worker gets a stack), and every other job alone. device: where they train (auto:
    on the CPU only the digits MLP stacks, see the module docstring)."""
    if not jobs:
        return []
    setting = jobs[0].run.group.train.stack
    cpu_auto = setting == "auto" and torch.device(device).type == "cpu"
    off = setting == "off" or (cpu_auto and jobs[0].run.group.model.name != "digits_mlp")
    size = 1 if off else math.ceil(len(jobs) / max(1, workers))
    if isinstance(setting, int):
        size = min(size, setting)
    out: list[list[loop.Job]] = []
    for job in jobs:
        last = out[-1] if out else None
        if (last and len(last) < size and stackable(job) and stackable(last[0])
                and _stack_key(job) == _stack_key(last[0]) and _sizes(job) == _sizes(last[0])):
            last.append(job)
        else:
            out.append([job])
    return out


def _stack_key(job: loop.Job):
    """What the runs of one stack share: the method, but for a loss that its runs compute
    each with their own (_Stacked.parts): any plain loss of a standard single-phase method
    (a per-setting override, or another group of the stage: CE, GCE and SL runs in one
    stack), or the numbers of phase 2's loss (phase 1 does not train here). A loss with a
    transition matrix or a sample-weight schedule (truncated Lq) stacks only with its own."""
    m = job.run.method
    if job.kind == "finetune":
        return m.finetune.model_copy(update={"loss": m.finetune.loss.name})
    if (job.kind == "single" and m.procedure.name == "standard" and m.loss.name != "truncated_lq"
            and not hasattr(m.loss, "matrix")):
        return m.model_copy(update={"loss": "each run's own", "overrides": {}})
    return m


def _n_fit(job: loop.Job) -> int:
    return int((~job.labels.val).sum())


def _sizes(job: loop.Job) -> tuple[int, int | None]:
    """What must be equal in a stack: the fitted-set size and, but on the digits MLP, the
    number of samples trained on (O2U's kept samples): a padded batch would reach batch
    norm's statistics."""
    keep = job.phase1.get("keep") if job.kind == "finetune" else None
    trained = _n_fit(job) if keep is None else int(np.sum(keep))
    return _n_fit(job), None if job.run.group.model.name == "digits_mlp" else trained


def train_units(data: loop.Tensors, jobs: list[loop.Job], report=None) -> list[loop.RunResult]:
    """Train one unit of `units`: a job alone (loop.train) or a stack. A stack that an
    earlier, killed execution checkpointed resumes as a stack when every run saved the same
    epoch (as a stack saves them), else run by run, each from its own state."""
    saved = [job.checkpoint.load() if job.checkpoint else None for job in jobs]
    if len(jobs) > 1 and (not any(saved) or (all(saved) and len({s["epoch"] for s in saved}) == 1)):
        return train_stack(data, jobs, report, saved if all(saved) else None)
    return [loop.train(data, job, report) for job in jobs]


class _Stack(nn.Module):
    """What train_stack needs of N runs' models as one: `n`, the runs' stacked tensors under
    loop.train's state_dict names (`state_items`), the parameters in loop.train's optimizer
    order, and one run's weights out and in."""

    n: int

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def state_items(self) -> list[tuple[str, torch.Tensor]]:
        raise NotImplementedError

    def optimizer_order(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def state_dict_of(self, r: int) -> dict[str, torch.Tensor]:
        """Run r's state_dict, as loop.train's model has it."""
        return {name: t[r].detach().clone(memory_format=torch.contiguous_format)
                for name, t in self.state_items()}

    @torch.no_grad()
    def load_run(self, r: int, state: dict[str, torch.Tensor]) -> None:
        """Run r's weights (and buffers) from a state_dict_of-format dict."""
        for name, t in self.state_items():
            t[r].copy_(state[name])


class StackedMLP(_Stack):
    """N digits_mlp models (Flatten, then Linear and ReLU layers) as one: layer i's weights
    are an N x out x in tensor (nn.Linear's layout) and the activations run transposed, N x
    features x B, so every layer is one batched matmul W @ h. On the AMD EPYC this layout
    trained a step of 12 stacked runs 1.3x as fast as activations N x B x features times
    weights N x in x out (one thread, alternately measured): with 10 classes the last
    layer's matmuls have a short last dimension, on which the CPU's batched matmul ran at
    about a sixth of its speed on the other layers. Input: N x B x ... (each run's own batch)
    or B x ... (one batch every run sees); output: N x B x classes (a transposed view)."""

    def __init__(self, models: list[nn.Sequential]):
        super().__init__()
        self.n = len(models)
        self.names = [name for name, _ in models[0].named_parameters()]  # loop.train's state_dict keys
        self.layers = [type(m).__name__ for m in models[0]]
        linear = [i for i, m in enumerate(models[0]) if isinstance(m, nn.Linear)]
        self.weights = nn.ParameterList(torch.stack([m[i].weight.detach() for m in models]) for i in linear)
        self.biases = nn.ParameterList(torch.stack([m[i].bias.detach() for m in models]) for i in linear)

    def forward(self, x: torch.Tensor, head: bool = True) -> torch.Tensor:
        """head=False: the input of the last linear layer (D2L's LID features), N x B x width."""
        shared = x.dim() == 4  # B x C x H x W: the same images for every run
        h = x.flatten(1).t().expand(self.n, -1, -1) if shared else x.flatten(2).mT
        layer = 0
        for kind in self.layers:
            if kind == "Linear":
                if not head and layer == len(self.weights) - 1:
                    return h.mT
                h = torch.baddbmm(self.biases[layer].unsqueeze(2), self.weights[layer], h)
                layer += 1
            elif kind == "ReLU":
                h = torch.relu_(h)  # in place: baddbmm's backward does not read its output
        return h.mT

    def state_items(self):
        return list(zip(self.names, self.optimizer_order()))

    def optimizer_order(self) -> list[nn.Parameter]:
        return [t for pair in zip(self.weights, self.biases) for t in pair]


class StackedModel(_Stack):
    """N models of any other network as one, through torch.func: their parameters and
    buffers stacked (stack_module_state, each N x its shape), and the forward pass of one
    model vmapped over them (functional_call). In training mode each run's batch norm uses
    its own batch's statistics and updates its own running averages (in place, through
    vmap). Input and output as StackedMLP's."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.n = len(models)
        params, buffers = torch.func.stack_module_state(models)
        self.names, self.buffer_names = list(params), list(buffers)
        self.params = nn.ParameterList(params.values())
        for i, t in enumerate(buffers.values()):
            self.register_buffer(f"stacked_{i}", t)
        order = {name: i for i, name in enumerate(models[0].state_dict())}
        self._state = sorted([*self.names, *self.buffer_names], key=order.__getitem__)
        # the network the stacked tensors run through, without weights of its own (so not a
        # submodule: its parameters are not the stack's)
        self._network = [copy.deepcopy(models[0]).to("meta")]

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {**dict(zip(self.names, self.params)),
                **{name: getattr(self, f"stacked_{i}") for i, name in enumerate(self.buffer_names)}}

    def forward(self, x: torch.Tensor, head: bool = True) -> torch.Tensor:
        """head=False: the input of the last linear layer (D2L's LID features), N x B x width."""
        network = self._network[0].train(self.training)
        one = functools.partial(self._one, network, head)
        return torch.func.vmap(one, in_dims=(0, None if x.dim() == 4 else 0))(self._tensors(), x)

    @staticmethod
    def _one(network: nn.Module, head: bool, tensors: dict, x: torch.Tensor) -> torch.Tensor:
        if head:
            return torch.func.functional_call(network, tensors, (x,))
        captured = []
        last = [m for m in network.modules() if isinstance(m, nn.Linear)][-1]
        hook = last.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].flatten(1)))
        try:
            torch.func.functional_call(network, tensors, (x,))
        finally:
            hook.remove()
        return captured[0]

    def state_items(self):
        tensors = self._tensors()
        return [(name, tensors[name]) for name in self._state]

    def optimizer_order(self) -> list[nn.Parameter]:
        return list(self.params)


def stacked_model(group, models: list[nn.Module]) -> _Stack:
    return StackedMLP(models) if group.model.name == "digits_mlp" else StackedModel(models)


@torch.no_grad()
def _logits(model: _Stack, x: torch.Tensor) -> torch.Tensor:
    """N x len(x) x classes in evaluation mode, as methods.logits's chunks of 4096 images
    split over the runs; x: B x ... (shared) or N x B x ..."""
    model.eval()
    dim, chunk = (0 if x.dim() == 4 else 1), max(1, 4096 // model.n)
    return torch.cat([model(part) for part in x.split(chunk, dim)], 1)


def _predict(model: _Stack, x: torch.Tensor) -> torch.Tensor:
    """N x len(x) predicted classes."""
    return _logits(model, x).argmax(2)


def _batches(perms: list[torch.Tensor], bs: int):
    """loop.train's batches (bs samples, a last batch of one skipped) of each run's
    permutation, step by step: (N x B positions, sizes). sizes is None while every run's batch
    is as long as the others'; runs of different lengths (O2U's kept samples) get each its own
    number of real positions, 0 once its epoch is over, and a row padded with position 0."""
    lengths = [len(p) for p in perms]
    if len(set(lengths)) == 1:
        perm, n = torch.stack(perms), lengths[0]
        yield from ((perm[:, s : s + bs], None) for s in range(0, n, bs) if n - s > 1)
        return
    starts = [[s for s in range(0, n, bs) if n - s > 1] for n in lengths]
    for k in range(max(map(len, starts))):
        parts = [p[st[k] : st[k] + bs] if k < len(st) else p[:0] for p, st in zip(perms, starts)]
        sizes = [len(part) for part in parts]
        yield torch.stack([_pad(part, max(sizes)) for part in parts]), sizes


def _pad(t: torch.Tensor, length: int) -> torch.Tensor:
    """t with zeros appended along its first dimension up to `length`."""
    return torch.cat([t, t.new_zeros(length - len(t), *t.shape[1:])])


# --- methods with per-run state: methods.py's hooks for N runs at once ----------------------

def _parts(specs: list, loss_fn, device) -> list[tuple] | None:
    """[(loss function, its runs' rows)], one per distinct loss spec among the runs' `specs`
    (loss_fn(r): run r's function), for _Stacked._loss to call each loss once per step on
    the rows of the runs that have it; None when they all have one loss."""
    rows: dict[str, list[int]] = {}
    for r, spec in enumerate(specs):
        rows.setdefault(spec.model_dump_json(), []).append(r)
    return [(loss_fn(r[0]), torch.tensor(r, device=device)) for r in rows.values()] if len(rows) > 1 else None


class _Stacked:
    """A method's hooks for a stack (methods.Standard's, per run): the standard procedure's
    loss and no state. `saved`: the runs' checkpoints, whose "method" entries the subclasses
    read, in their single-run class's state() format."""

    def __init__(self, trainer: methods.Standard, model: _Stack, jobs: list[loop.Job], saved: list[dict] | None):
        self.loss_fn, self.n = trainer.loss_fn, model.n
        # runs with their own losses (_stack_key: other numbers, or other losses of another
        # group of the stage)
        specs = [job.run.method.loss for job in jobs] if jobs[0].kind == "single" else []
        self.parts = _parts(specs, lambda r: make_loss(specs[r]), model.device)

    def batch_loss(self, model: _Stack, x: torch.Tensor, targets: torch.Tensor, idx: torch.Tensor,
                   sizes: list[int] | None = None):
        """(N x B per-sample losses, N x B x classes logits) of N runs' batches x; targets:
        N x B labels (or N x B x classes soft labels); idx: N x B positions in the runs' training
        sets (fitted or kept); sizes: None, or each run's number of real samples in its row (the
        rest pad it: _batches), whose losses train_stack leaves out."""
        logits = model(x)
        return self._loss(logits, targets), logits

    def _loss(self, logits, targets, **extra):
        """N x B per-sample losses; extra: the loss's other inputs, N * B values each."""
        n, b = targets.shape[:2]
        if not self.parts:
            return self.loss_fn(logits.flatten(0, 1), targets.flatten(0, 1), **extra).view(n, b)
        out = logits.new_empty(n, b)
        for fn, rows in self.parts:  # rows: on the device already (no copy per step)
            part = {k: v.view(n, b)[rows].flatten() for k, v in extra.items()}
            out[rows] = fn(logits[rows].flatten(0, 1), targets[rows].flatten(0, 1), **part).view(len(rows), b)
        return out

    def after_backward(self, idx: torch.Tensor) -> None:
        pass

    def end_epoch(self, epoch: int, model: _Stack, x: torch.Tensor, y: torch.Tensor, val_acc: list[float]
                  ) -> list[dict[str, float]]:
        """x: N x n fitted images, y: N x n labels, val_acc: each run's held-out accuracy;
        returns each run's history values."""
        return [{} for _ in range(self.n)]

    def state(self, r: int) -> dict:
        return {}

    def final_metrics(self, r: int) -> dict[str, float]:
        return {}

    def artefacts(self, r: int) -> dict[str, np.ndarray]:
        return {}


class _Truncation(_Stacked):
    """methods.TruncatedLq: each run's sample weights w = 1[p_y > k] (N x n), recomputed on
    the loss's schedule with that run's best weights so far, best by its own held-out accuracy."""

    def __init__(self, trainer, model, jobs, saved):
        super().__init__(trainer, model, jobs, saved)
        self.k, self.start, self.interval = trainer.k, trainer.start, trainer.interval
        self.best = copy.deepcopy(model)  # holds each run's best weights when they are used
        self.weight = torch.ones(model.n, _n_fit(jobs[0]), device=model.device)
        self.best_acc, self.best_state = [-1.0] * model.n, [None] * model.n
        if saved:
            self.weight = torch.stack([state["method"]["weight"] for state in saved]).to(self.weight.device)
            self.best_acc = [state["method"]["best_acc"] for state in saved]
            self.best_state = [state["method"]["best_state"] for state in saved]

    def batch_loss(self, model, x, targets, idx, sizes=None):
        logits = model(x)
        return self._loss(logits, targets, weight=self.weight.gather(1, idx).flatten()), logits

    def end_epoch(self, epoch, model, x, y, val_acc):
        for r, acc in enumerate(val_acc):
            if acc > self.best_acc[r]:
                self.best_acc[r], self.best_state[r] = acc, model.state_dict_of(r)
        if epoch >= self.start and (epoch - self.start) % self.interval == 0:
            for r, state in enumerate(self.best_state):
                self.best.load_run(r, state)
            p_y = torch.softmax(_logits(self.best, x).float(), 2).gather(2, y[:, :, None]).squeeze(2)
            self.weight = (p_y > self.k).float()
        return [{"truncated_fraction": f} for f in (1 - self.weight.mean(1)).tolist()]

    def state(self, r):
        return {"weight": self.weight[r].clone(), "best_acc": self.best_acc[r], "best_state": self.best_state[r]}


class _D2L(_Stacked):
    """methods.D2L: per run its LID each epoch (on its own random subsets), its turning
    epoch with the roll-back to the epoch before, and from then on the hard bootstrapping
    loss with its own alpha; the runs before their turning point train with the loss."""

    def __init__(self, trainer, model, jobs, saved):
        super().__init__(trainer, model, jobs, saved)
        self.t, self.epochs = trainer.t, trainer.epochs
        self.rng = [torch.Generator().manual_seed(job.run.seed + 1_000_003) for job in jobs]  # as D2L's
        self.lids, self.alpha = [[] for _ in jobs], [1.0] * len(jobs)
        self.turning_epoch, self.previous_state = [None] * len(jobs), [None] * len(jobs)
        for r, state in enumerate(saved or []):
            m = state["method"]
            self.rng[r].set_state(m["rng"])
            self.lids[r], self.alpha[r], self.turning_epoch[r], self.previous_state[r] = (
                m["lids"], m["alpha"], m["turning_epoch"], m["previous_state"])
        self._to_device(model.device)

    def _to_device(self, device) -> None:
        """alpha and whether each run has turned, as the device tensors batch_loss reads: made
        where they change (here and in end_epoch), not every step."""
        self.alpha_t, self.turned_t = (methods.from_host(torch.tensor(v), device)
                                       for v in (self.alpha, [t is not None for t in self.turning_epoch]))

    def batch_loss(self, model, x, targets, idx, sizes=None):
        logits = model(x)
        plain = self._loss(logits, targets)
        if all(t is None for t in self.turning_epoch):
            return plain, logits
        alpha = self.alpha_t.repeat_interleave(targets.shape[1])[:, None]
        boot = bootstrap(logits.flatten(0, 1), targets.flatten(), alpha, "hard").view_as(targets)
        return torch.where(self.turned_t[:, None], boot, plain), logits

    @torch.no_grad()
    def _lid(self, model, x) -> list[float]:
        """D2L._lid for every run: the mean LID of its lid_batch-sized batches of lid_samples
        fitted samples drawn with its own generator."""
        model.eval()  # as D2L._lid
        subsets = torch.stack([torch.randperm(x.shape[1], generator=g)[: self.t.lid_samples] for g in self.rng])
        picked = x[torch.arange(self.n)[:, None], subsets.to(x.device)]  # N x m x ...
        m, bs = picked.shape[1], self.t.lid_batch
        per_batch = [methods.lid_mle(model(picked[:, s : s + bs], head=False), self.t.lid_k).mean(1)
                     for s in range(0, m, bs) if m - s > 1]
        return torch.stack(per_batch).mean(0).tolist()

    def end_epoch(self, epoch, model, x, y, val_acc):
        out = []
        for r, lid in enumerate(self._lid(model, x)):  # D2L.end_epoch, run by run
            lids = self.lids[r]
            lids.append(lid if math.isfinite(lid) and lid > 0 else (lids[-1] if lids else 0.0))
            w = self.t.window
            if self.turning_epoch[r] is None and len(lids) > self.t.init_epoch + w:
                window = np.array(lids[-w - 1 : -1])
                if lids[-1] - window.mean() > 2 * window.std():
                    self.turning_epoch[r] = epoch - 1
                    model.load_run(r, self.previous_state[r])  # roll back to the turning point
            if self.turning_epoch[r] is None:
                self.previous_state[r] = model.state_dict_of(r)
            else:
                self.alpha[r] = math.exp(-(epoch / self.epochs) * lids[-1] / min(lids[:-1]))
            out.append({"lid": lids[-1], "d2l_alpha": self.alpha[r]})
        self._to_device(model.device)
        return out

    def state(self, r):
        return {"rng": self.rng[r].get_state(), "lids": list(self.lids[r]), "alpha": self.alpha[r],
                "turning_epoch": self.turning_epoch[r], "previous_state": self.previous_state[r]}

    def final_metrics(self, r):
        return {"d2l_turning_epoch": float(self.turning_epoch[r] or 0)}


class _Finetune(_Stacked):
    """two_phase.Finetune (phase 2): each run its own mixup draws (lambda and partner
    permutation from its own generator) on its phase-1 labels."""

    def __init__(self, trainer, model, jobs, saved):
        super().__init__(trainer, model, jobs, saved)
        self.mixup = trainer.mixup
        self.trainers = [trainer] + [two_phase.Finetune(job.run.method.finetune, job.run.group.train, job.run.seed)
                                     for job in jobs[1:]]  # the first run's is the shared trainer
        for t, state in zip(self.trainers, saved or []):
            t.restore(state["method"])
        self.parts = _parts([job.run.method.finetune.loss for job in jobs], lambda r: self.trainers[r].loss_fn,
                            model.device)

    def batch_loss(self, model, x, targets, idx, sizes=None):
        logits = model(x)
        loss = self._loss(logits, targets)
        if self.mixup > 0:  # two_phase.Finetune.batch_loss, each run with its own draws
            n, b = targets.shape[:2]
            # a run draws for its real samples only, as alone (a padded row's partners: itself)
            draws = [t.mix(size) if size else (1.0, torch.arange(0))
                     for t, size in zip(self.trainers, sizes or [b] * n)]
            lam = methods.from_host(torch.tensor([d[0] for d in draws]), x.device)
            j = methods.from_host(torch.stack([torch.cat([d[1], torch.arange(len(d[1]), b)]) for d in draws]), x.device)
            runs = torch.arange(n, device=x.device)[:, None]
            t = targets if targets.is_floating_point() else F.one_hot(targets, logits.shape[2]).float()
            shape = (n, *[1] * (x.dim() - 1))
            mixed_logits = model(lam.view(shape) * x + (1 - lam).view(shape) * x[runs, j])
            mixed_t = lam.view(n, 1, 1) * t + (1 - lam).view(n, 1, 1) * t[runs, j]
            loss = loss + soft_ce(log_softmax(mixed_logits.flatten(0, 1).float()),
                                  mixed_t.flatten(0, 1)).view(n, b)
        return loss, logits

    def state(self, r):
        return self.trainers[r].state()


class _Phase1(_Stacked):
    """Phase 1 of the two-phase methods (joint optimisation, PENCIL, O2U): each run keeps its
    own method object, built as loop.train builds it, with its label state, PENCIL's label
    logits or O2U's loss record; it computes its run's losses from that run's slice of the
    stacked logits (the stand-in model it is given returns the slice). Only the network's
    forward and backward passes are stacked. Their end_epoch reads only their own state."""

    def __init__(self, trainer, model, jobs, saved, data):  # no shared loss_fn: each method has its own loss
        self.n = model.n
        self.methods = [trainer] + [loop.pretrain_method(data, job) for job in jobs[1:]]
        for m, state in zip(self.methods, saved or []):
            m.restore(state["method"])

    def batch_loss(self, model, x, targets, idx, sizes=None):
        logits = model(x)
        per_run = [m.batch_loss(lambda _, r=r: logits[r], x[r], targets[r], idx[r])[0]
                   for r, m in enumerate(self.methods)]
        return torch.stack(per_run), logits

    def after_backward(self, idx):
        for m, run_idx in zip(self.methods, idx):
            m.after_backward(run_idx)

    def end_epoch(self, epoch, model, x, y, val_acc):
        return [m.end_epoch(epoch, None, None, None, acc) for m, acc in zip(self.methods, val_acc)]

    def state(self, r):
        return self.methods[r].state()

    def final_metrics(self, r):
        return self.methods[r].final_metrics()

    def artefacts(self, r):
        return self.methods[r].artefacts()


def _trainer(jobs: list[loop.Job], data: loop.Tensors) -> methods.Standard:
    """The first run's method (loop.train's), for what the stack shares: schedule and loss."""
    run = jobs[0].run
    if jobs[0].kind == "pretrain":
        return loop.pretrain_method(data, jobs[0])
    if jobs[0].kind == "finetune":
        return two_phase.Finetune(run.method.finetune, run.group.train, seed=run.seed)
    matrix = None if jobs[0].matrix is None else torch.from_numpy(np.stack([job.matrix for job in jobs]))
    return methods.build(run.method, run.group.train, matrix=matrix, n_fit=_n_fit(jobs[0]), seed=run.seed,
                         device=data.train_x.device)


def _hooks(trainer: methods.Standard, model: _Stack, jobs: list[loop.Job], saved, data) -> _Stacked:
    if jobs[0].kind == "pretrain":
        return _Phase1(trainer, model, jobs, saved, data)
    kind = {methods.D2L: _D2L, methods.TruncatedLq: _Truncation, two_phase.Finetune: _Finetune}.get(
        type(trainer), _Stacked)
    return kind(trainer, model, jobs, saved)


def train_stack(data: loop.Tensors, jobs: list[loop.Job], report=None, saved: list[dict] | None = None
                ) -> list[loop.RunResult]:
    """Train the stack `jobs` (one unit of `units`), as loop.train would train each alone;
    saved: the runs' checkpoints of one epoch, to resume from."""
    runs = [job.run for job in jobs]
    group, device, n_runs = runs[0].group, data.train_x.device, len(jobs)
    descs = [run.key for run in runs]
    started = int(time.time() * 1000)
    if report:
        for run in runs:
            report("start", run.key, started)
    # each run's initial weights and global generator state as loop.train makes them
    models, rngs = [], []
    for run in runs:
        models.append(loop.initial_model(group, data, run.seed))
        rngs.append(loop.global_rng(device))
    if jobs[0].kind == "finetune" and runs[0].method.finetune.init == "phase1":
        for m, job in zip(models, jobs):
            m.load_state_dict(job.phase1["state_dict"])
    if saved:  # each run's state after epoch saved[r]["epoch"], in loop.train's format
        for m, state in zip(models, saved):
            m.load_state_dict(state["model"])
        rngs = [state["global_rng"] for state in saved]
    model = loop.compiled(stacked_model(group, models), group.train)
    method = _trainer(jobs, data)
    opt = SGD(zip(model.names, model.optimizer_order()), group.train.momentum, group.train.weight_decay,
              group.train.l2, group.train.nesterov, group.train.grad_clip, stacked=True)

    def per_run(values) -> torch.Tensor:
        return torch.from_numpy(np.stack(values)).to(device)

    fit = per_run([np.flatnonzero(~job.labels.val) for job in jobs])  # N x n positions in the training set
    val = per_run([np.flatnonzero(job.labels.val) for job in jobs])
    noisy = per_run([job.labels.noisy for job in jobs])
    y, y_val, y_true = noisy.gather(1, fit), noisy.gather(1, val), data.train_y[fit]
    # O2U's kept samples, as positions in each run's fitted set (None: every run trains on all
    # of it); a row padded with 0 past its count, which _batches never reaches
    keeps = [job.phase1.get("keep") if job.kind == "finetune" else None for job in jobs]
    kept = [np.arange(fit.shape[1]) if k is None else np.flatnonzero(k) for k in keeps]
    counts = [len(k) for k in kept]
    sub = None if all(k is None for k in keeps) else per_run([np.pad(k, (0, max(counts) - len(k))) for k in kept])
    orders = [torch.Generator(device=device).manual_seed(run.seed) for run in runs]
    draws = [torch.Generator(device=device).manual_seed(run.seed + 2_000_003) for run in runs]
    histories = [{k: [] for k in (*loop.HISTORY_KEYS, *method.history_keys)} for _ in runs]
    test_preds, val_preds = [], []
    n, iterations, first, last_save = fit.shape[1], [0] * n_runs, 1, time.monotonic()
    amp = loop.autocast(group.train, device)
    hooks = _hooks(method, model, jobs, saved, data)
    x_fit = data.train_x[fit.flatten()].view(n_runs, n, *data.train_x.shape[1:])  # what predictions read
    # what the loss compares with: the noisy labels, or in phase 2 phase 1's corrected labels
    soft = [job.phase1.get("labels") for job in jobs] if jobs[0].kind == "finetune" else [None]
    targets = y if soft[0] is None else torch.stack([torch.as_tensor(t) for t in soft]).to(device)
    run_rows = torch.arange(n_runs, device=device)[:, None]  # indexes N x B positions with idx
    if saved:
        for i, buffer in enumerate(opt.buffers):
            buffer.copy_(torch.stack([state["optimizer"][i] for state in saved]))
        for r, state in enumerate(saved):
            orders[r].set_state(state["batch_order"])
            draws[r].set_state(state["draws"])
        histories = [state["history"] for state in saved]
        test_preds, val_preds = ([torch.stack([state[key][e] for state in saved]).to(device)
                                  for e in range(saved[0]["epoch"])] for key in ("test_preds", "val_preds"))
        iterations, first = [state["iteration"] for state in saved], saved[0]["epoch"] + 1
    for epoch in range(first, method.epochs + 1):
        model.train()  # _logits leaves it in evaluation mode
        lr, bs = method.lr(epoch), method.batch_size(epoch)
        perms = [torch.randperm(c, generator=g, device=device) for c, g in zip(counts, orders)]
        sums = torch.zeros(n_runs, 4, device=device)
        seen = [0] * n_runs  # samples each run trained on this epoch
        for idx, sizes in _batches(perms, bs):  # idx: N x B positions in each run's kept samples
            pos = idx if sub is None else sub.gather(1, idx)  # ... in its fitted set
            width = idx.shape[1]
            if sizes is None:
                images = data.train_x.normalised(fit.gather(1, pos).flatten())
                x = (images.view(n_runs, width, *images.shape[1:]) if data.augment.none
                     else torch.stack([data.augment(part, g) for part, g in zip(images.split(width), draws)]))
                real = None
            else:  # each run's real samples augmented as alone (a finished run draws nothing), then padded
                rows = fit.gather(1, pos)
                images = data.train_x.normalised(torch.cat([row[:b] for row, b in zip(rows, sizes)]))
                parts = [data.augment(part, g) if len(part) else None for part, g in zip(images.split(sizes), draws)]
                like = next(p for p in parts if p is not None)[:0]
                x = torch.stack([_pad(like if p is None else p, width) for p in parts])
                size = methods.from_host(torch.tensor(sizes), device)
                real = torch.arange(width, device=device)[None, :] < size[:, None]
            labels = y.gather(1, pos)
            with amp:
                losses, logits = hooks.batch_loss(model, x, labels if targets is y else targets[run_rows, pos], idx,
                                                  sizes)
            opt.zero_grad()
            if sizes is None:
                losses.mean(1).sum().backward()
            else:  # each run's mean over its real samples: a padded sample's gradient is 0
                (losses.where(real, 0).sum(1) / size.clamp(min=1)).sum().backward()
            hooks.after_backward(idx)
            # lr_decay is 0 where the runs' step counts differ (stackable)
            step_lr = lr / (1 + group.train.lr_decay * iterations[0])
            trained = sizes or [width] * n_runs  # each run's samples in this step
            opt.step(step_lr, skip=[r for r, b in enumerate(trained) if b == 0])  # runs whose epoch is over
            iterations = [i + (b > 0) for i, b in zip(iterations, trained)]
            seen = [s + b for s, b in zip(seen, trained)]
            with torch.no_grad():
                pred, true = logits.argmax(2), y_true.gather(1, pos)
                per_sample = torch.stack([losses, pred == labels, pred == true, true >= 0], 1)  # N x 4 x B, float
                if real is not None:
                    per_sample = per_sample.where(real[:, None], 0)
                sums += per_sample.sum(2)
        with amp:
            test_pred = _predict(model, data.test_x[: len(data.test_x)])
            val_pred = _predict(model, data.train_x[val.flatten()].view(n_runs, val.shape[1], *data.train_x.shape[1:]))
        test_preds.append(test_pred)
        val_preds.append(val_pred)
        seen = torch.tensor(seen, device=device, dtype=sums.dtype)[:, None]
        numbers = torch.cat([sums[:, :2] / seen, sums[:, 2:3] / sums[:, 3:], (val_pred == y_val).float().mean(1, True),
                             (test_pred == data.test_y).float().mean(1, True)], 1).tolist()  # one sync per epoch
        for r in range(n_runs):
            loop.record_epoch(histories[r], step_lr, numbers[r], descs[r], epoch)
        # numbers[r][3]: run r's held-out accuracy (val_acc_noisy)
        for r, values in enumerate(hooks.end_epoch(epoch, model, x_fit, y, [numbers[r][3] for r in range(n_runs)])):
            for key, value in values.items():
                histories[r][key].append(value)
        for r, run in enumerate(runs):
            if report:
                report("epoch", run.key, {key: (len(v), v[-1]) for key, v in histories[r].items()})
        plan = jobs[0].checkpoint
        if plan and epoch < method.epochs and plan.due(epoch, last_save):
            for r, job in enumerate(jobs):  # each run's state as loop.train saves it
                job.checkpoint.save({
                    "epoch": epoch, "iteration": iterations[r], "model": model.state_dict_of(r),
                    "optimizer": [b[r].clone(memory_format=torch.contiguous_format) for b in opt.buffers],
                    "global_rng": rngs[r],
                    "method": hooks.state(r),
                    "history": histories[r], "test_preds": [p[r].clone() for p in test_preds],
                    "val_preds": [p[r].clone() for p in val_preds], "batch_order": orders[r].get_state(),
                    "draws": draws[r].get_state()})
            last_save = time.monotonic()
    with amp:
        train_pred = _predict(model, x_fit).cpu().numpy()
    test_all, val_all = torch.stack(test_preds, 1).to(torch.int16).cpu().numpy(), torch.stack(val_preds, 1).to(torch.int16).cpu().numpy()
    ended = int(time.time() * 1000)
    return [loop.RunResult(history=histories[r], test_pred=test_all[r], val_pred=val_all[r], train_pred=train_pred[r],
                           state_dict={k: v.cpu() for k, v in model.state_dict_of(r).items()},
                           started_ms=started, ended_ms=ended, matrix=jobs[r].matrix, metrics=hooks.final_metrics(r),
                           artefacts=hooks.artefacts(r))
            for r in range(n_runs)]
