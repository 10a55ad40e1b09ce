"""The training loop: one job = one typed run (resolve.Run) trained on its noisy labels.

The data set lives as tensors on the device for the whole run; a batch is an index slice of
them, so there is no DataLoader and no host copy per step. The host reads numbers back once
per epoch (no per-step synchronisation). What the loss does with a batch, the learning rate
and batch size of each epoch, and what happens between epochs, is the run's method
(methods.py for single-phase methods, two_phase.py for the phases of two-phase ones); the
optimizer and schedule are optim.py's; workers.py spreads a group's jobs over processes.
A job is one of three kinds that share one loop (`_fit`): a single-phase method, phase 1 of
a two-phase method (label correction or O2U-Net's ranking) or its phase 2 (on phase 1's
corrected labels or kept samples).

While a run trains, `train` can report its progress (`report`): ("start", run, time in ms)
once, then ("epoch", run, {history key: (step, value)}) after every epoch of the run's own
training, which the stage logs to MLflow as it comes (tracking.LiveRuns).

A training loss that is no longer finite stops the run at the end of that epoch with a
DivergenceError (one line: run, epoch, value, learning rate); no NaN reaches an output.

Per-epoch history (also the MLflow metric names, step = epoch):
  lr, train_loss, train_pass_acc_noisy, train_pass_acc_true  (from the training passes),
  val_acc_noisy (held-out noisy split), test_acc, plus the method's own.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from noisylabels.engine import augment, methods, models, two_phase
from noisylabels.engine.augment import Images
from noisylabels.checkpoint import Plan
from noisylabels.errors import ConfigError, DivergenceError
from noisylabels.engine.noise import RunLabels
from noisylabels.engine.optim import SGD
from noisylabels.resolve import Run
from noisylabels.spec.losses import CE
from noisylabels.spec.methods import SinglePhase

HISTORY_KEYS = ("lr", "train_loss", "train_pass_acc_noisy", "train_pass_acc_true", "val_acc_noisy", "test_acc")


def resolve_device(name: str) -> torch.device:
    """train.device on this machine (cuda: every visible GPU, workers.worker_device spreads them)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpus = torch.cuda.device_count()
    if name.startswith("cuda") and (torch.device(name).index or 0) >= gpus:
        allowed = f"auto, cpu, cuda or cuda:0 to cuda:{gpus - 1}" if gpus else "auto or cpu"
        raise ConfigError(f"train.device={name!r}: {gpus} CUDA device(s) visible here; use {allowed}")
    return torch.device(name)


@dataclass
class Tensors:
    """A data set on the device: uint8 images that normalise when indexed (augment.Images,
    in their evaluation view), labels int64 (-1 where a training sample's true label is
    unknown: Clothing1M), and the augmentation of a training batch."""

    train_x: Images
    train_y: torch.Tensor
    test_x: Images
    test_y: torch.Tensor
    augment: augment.Augmentation
    num_classes: int


def to_tensors(dataset, device: torch.device, train) -> Tensors:
    """The data set on `device`, normalised and augmented as the `train` section says."""

    def raw(a):
        return torch.from_numpy(a).to(device).permute(0, 3, 1, 2).contiguous()

    train_raw, test = raw(dataset.train_images), raw(dataset.test_images)
    mean, std = augment.normalisation(train_raw, train.normalize)
    augmentation = augment.Augmentation(train.augment, mean, std, train_raw.shape)
    return Tensors(Images(train_raw, mean, std, augmentation.view), torch.from_numpy(dataset.train_labels).to(device),
                   Images(test, mean, std, augmentation.view), torch.from_numpy(dataset.test_labels).to(device),
                   augmentation, dataset.num_classes)


@dataclass(frozen=True)
class Job:
    """What one worker trains: a run, its labels, for phase 2 its phase-1 artefacts
    (`labels` or `keep`, and phase 1's weights as `state_dict` for init: phase1), and for a
    Forward/Backward loss its transition matrix (None: estimated in the worker)."""

    run: Run
    labels: RunLabels
    phase1: dict | None = None
    matrix: np.ndarray | None = None
    checkpoint: Plan | None = None  # where and when its state is saved; None: never

    @property
    def kind(self) -> str:
        if not self.run.group.two_phase:
            return "single"
        return "pretrain" if self.phase1 is None else "finetune"


def group_jobs(group, labels, phase1: dict | None = None) -> list[Job]:
    """One job per run of `group`, checked before any of them trains: labels is its
    noise.NoisyLabels; phase1 (phase 2 only): run name -> that run's phase-1 artefacts.
    A Forward/Backward matrix that is not estimated is resolved (and checked) here."""
    jobs = []
    for run in group.runs:
        run_labels, matrix = labels.for_run(run), None
        loss = getattr(run.method, "loss", None)
        if getattr(loss, "matrix", "estimated") != "estimated":
            matrix = methods.transition_matrix(loss, run_labels.realized_matrix, group.dataset.num_classes, None,
                                               f"{group.name} {run.name}: loss")
        jobs.append(Job(run, run_labels, None if phase1 is None else phase1[run.name], matrix))
    return jobs


@dataclass
class RunResult:
    history: dict[str, list[float]]  # HISTORY_KEYS -> one value per epoch
    test_pred: np.ndarray  # epochs x n_test predicted classes
    val_pred: np.ndarray  # epochs x n_val, on the held-out noisy split
    train_pred: np.ndarray  # after the last epoch, on every fitted (not held-out) sample
    state_dict: dict
    metrics: dict = field(default_factory=dict)  # the method's final numbers (e.g. D2L's turning epoch)
    matrix: np.ndarray | None = None  # the transition matrix a Forward/Backward loss used
    artefacts: dict = field(default_factory=dict)  # phase 1: corrected labels, O2U scores and mask
    # when the training ran (ms since the epoch; a resumed run: this execution), so that its
    # MLflow run, logged afterwards by the stage, shows the training's real duration
    started_ms: int | None = None
    ended_ms: int | None = None


def autocast(train, device: torch.device) -> torch.autocast:
    """train.precision for the forward passes: bf16 under torch.autocast (float32 weights,
    gradients and optimizer state: the optimizer steps outside it), or nothing for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=train.precision == "bf16")


def predict(model, x) -> torch.Tensor:
    """Predicted classes, in evaluation mode."""
    return methods.logits(model, x).argmax(1)


def _fit(data: Tensors, labels: RunLabels, seed: int, model, method, train, targets=None,
         keep: np.ndarray | None = None, desc: str = "", checkpoint: Plan | None = None, on_epoch=None) -> RunResult:
    """Train `model` with `method` on the fitted samples (not held out; with `keep`, only those).

    targets: what the method's loss compares with, one row per fitted sample (default: the
    noisy labels; soft labels after a label correction). The method sets the schedule
    (method.epochs, method.lr(epoch), method.batch_size(epoch)); `train` the optimizer.
    checkpoint: the run resumes from its saved state, if any, and saves it as planned.
    on_epoch: called after each epoch with {history key: (its step, its value)}.
    """
    device = data.train_x.device
    fit = np.flatnonzero(~labels.val)
    subset = np.arange(len(fit)) if keep is None else np.flatnonzero(keep)
    fit_t, sub_t = torch.from_numpy(fit).to(device), torch.from_numpy(subset).to(device)
    val = torch.from_numpy(np.flatnonzero(labels.val)).to(device)
    noisy_t = torch.from_numpy(labels.noisy).to(device)
    x_fit = data.train_x.subset(fit_t)
    x, y, y_true = x_fit.subset(sub_t), noisy_t[fit_t][sub_t], data.train_y[fit_t][sub_t]
    t = y if targets is None else torch.as_tensor(targets, device=device)[sub_t]
    x_val, y_val = data.train_x.subset(val), noisy_t[val]

    # Same seed -> same batch order and augmentation draws for every method (paired comparisons).
    batch_order = torch.Generator(device=device).manual_seed(seed)
    draws = torch.Generator(device=device).manual_seed(seed + 2_000_003)
    opt = SGD.for_train(model, train)
    iteration = 0  # optimizer steps so far, for Keras' lr decay
    n = len(x)
    history = {k: [] for k in (*HISTORY_KEYS, *method.history_keys)}
    test_preds, val_preds = [], []
    generators = {"batch_order": batch_order, "draws": draws}
    amp = autocast(train, device)
    saved, first, last_save = checkpoint.load() if checkpoint else None, 1, time.monotonic()
    if saved:  # resume: everything the next epoch reads, as it was after epoch saved["epoch"]
        model.load_state_dict(saved["model"])
        for buffer, value in zip(opt.buffers, saved["optimizer"]):
            buffer.copy_(value)
        for key, generator in generators.items():
            generator.set_state(saved[key])
        _set_global_rng(device, saved["global_rng"])
        method.restore(saved["method"])
        iteration, first, history = saved["iteration"], saved["epoch"] + 1, saved["history"]
        test_preds, val_preds = [p.to(device) for p in saved["test_preds"]], [p.to(device) for p in saved["val_preds"]]
    for epoch in tqdm(range(first, method.epochs + 1), desc=desc, leave=False, disable=None):
        model.train()
        lr, bs = method.lr(epoch), method.batch_size(epoch)
        perm = torch.randperm(n, generator=batch_order, device=device)
        # loss, correct on noisy labels, correct on true labels, samples with a known true label
        sums = torch.zeros(4, device=device)
        seen = 0
        # A last batch of a single sample would break batch norm; it is skipped (its sample is
        # seen in other epochs, as the permutation changes).
        for s in (s for s in range(0, n, bs) if n - s > 1):
            idx = perm[s : s + bs]
            with amp:
                losses, logits = method.batch_loss(model, data.augment(x.normalised(idx), draws), t[idx], idx)
            opt.zero_grad()
            losses.mean().backward()
            method.after_backward(idx)
            step_lr = lr / (1 + train.lr_decay * iteration)
            opt.step(step_lr)
            iteration += 1
            with torch.no_grad():
                pred = logits.argmax(1)
                sums += torch.stack([losses.sum(), (pred == y[idx]).sum(), (pred == y_true[idx]).sum(),
                                     (y_true[idx] >= 0).sum()])
            seen += len(idx)
        with amp:
            test_pred, val_pred = predict(model, data.test_x), predict(model, x_val)
        test_preds.append(test_pred)
        val_preds.append(val_pred)
        numbers = torch.cat([sums[:2] / seen, sums[2:3] / sums[3], (val_pred == y_val).float().mean()[None],
                             (test_pred == data.test_y).float().mean()[None]]).tolist()  # one sync per epoch
        record_epoch(history, step_lr, numbers, desc, epoch)
        for key, value in method.end_epoch(epoch, model, x, y, history["val_acc_noisy"][-1]).items():
            history[key].append(value)
        if on_epoch:
            on_epoch({key: (len(values), values[-1]) for key, values in history.items() if values})
        if checkpoint and epoch < method.epochs and checkpoint.due(epoch, last_save):
            checkpoint.save({"epoch": epoch, "iteration": iteration, "model": model.state_dict(),
                             "optimizer": opt.buffers, "global_rng": global_rng(device), "method": method.state(),
                             "history": history, "test_preds": test_preds, "val_preds": val_preds,
                             **{key: generator.get_state() for key, generator in generators.items()}})
            last_save = time.monotonic()
    with amp:
        train_pred = predict(model, x_fit)
    return RunResult(
        history=history,
        test_pred=torch.stack(test_preds).to(torch.int16).cpu().numpy(),
        val_pred=torch.stack(val_preds).to(torch.int16).cpu().numpy(),
        train_pred=train_pred.cpu().numpy(),
        state_dict={k: v.cpu() for k, v in model.state_dict().items()},
        metrics=method.final_metrics(),
        artefacts=method.artefacts(),
    )


def record_epoch(history: dict, lr: float, numbers: list[float], desc: str, epoch: int) -> None:
    """Append an epoch's lr (its last step's: with lr_decay it falls within an epoch) and
    numbers (the HISTORY_KEYS after lr) to `history`; a training loss that is no longer
    finite stops the run here, once per epoch (the one host sync there is)."""
    if not math.isfinite(numbers[0]):
        raise DivergenceError(f"{desc}: diverged in epoch {epoch}: train_loss={numbers[0]} at lr={lr:g}; "
                              "lower the learning rate (train.lr) or check the labels")
    for key, value in zip(HISTORY_KEYS, [lr, *numbers]):
        history[key].append(float(value))


def global_rng(device) -> torch.Tensor:
    """torch's global generator on `device` (dropout draws from it)."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_global_rng(device, state: torch.Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


def initial_model(group, data: Tensors, seed: int):
    torch.manual_seed(seed)  # same seed -> same initial weights for every method
    device = data.train_x.device
    model = models.build_model(group.model, data.train_x.shape[1:], data.num_classes)
    return compiled(model.to(device, memory_format=MEMORY_FORMAT), group.train)


def compiled(model: torch.nn.Module, train) -> torch.nn.Module:
    """train.compile: the model's calls go through torch.compile in that mode (Module.compile,
    so its state_dict keeps its names), or stay eager."""
    if train.compile != "none":
        model.compile(mode=train.compile)
    return model


# How convolution weights are laid out, on every device: channels_last (NHWC). A
# channels_last weight makes the convolutions take that path; their outputs follow, and
# nn.Flatten reads them in NCHW order as before. cuDNN's tensor-core kernels want NHWC; on
# the CPU, oneDNN's convolutions and the max pooling in NHWC trained SCE's MNIST CNN 1.19x
# and its CIFAR-10 CNN 1.30x as fast as NCHW (one thread, AMD EPYC, 2026-12-08). Only the
# summation order changes (tests/test_engine.py); a network without convolutions (the
# digits MLP) has no 4-d weight to lay out.
MEMORY_FORMAT = torch.channels_last


def preflight(group, dataset) -> None:
    """What would fail inside a worker, checked before any run starts: the augmentation and
    normalisation fit the images, every `train.l2` layer exists in the model, pretrained
    weights load (and are downloaded into torch's cache once, here)."""
    aug = group.train.augment
    problem = augment.check_fits(aug, dataset.train_images.shape[1:])
    if problem:
        raise ConfigError(f"train.augment.size={aug.size}: {problem}")
    if group.train.normalize == "imagenet" and dataset.train_images.shape[-1] != 3:
        raise ConfigError(f"train.normalize='imagenet': expected RGB images; {dataset.name} has "
                          f"{dataset.train_images.shape[-1]} channel(s)")
    model = models.build_model(group.model, augment.input_shape(aug, dataset.train_images.shape[1:]),
                               dataset.num_classes)
    SGD.for_train(model, group.train)


def _single(data: Tensors, job: Job, desc: str, on_epoch) -> RunResult:
    run, method, labels = job.run, job.run.method, job.labels
    matrix = job.matrix
    if getattr(method.loss, "matrix", None) == "estimated":
        def estimate():  # Patrini et al.: a CE model on the same noisy labels gives the anchors
            ce_run = SinglePhase(loss=CE())
            ce = _fit(data, labels, run.seed, initial_model(run.group, data, run.seed),
                      methods.build(ce_run, run.group.train, n_fit=int((~labels.val).sum()), seed=run.seed,
                                    device=data.train_x.device), run.group.train, desc=f"{desc} CE for T")
            model = initial_model(run.group, data, run.seed)
            model.load_state_dict(ce.state_dict)
            fit = torch.from_numpy(np.flatnonzero(~labels.val)).to(data.train_x.device)
            return methods.probabilities(model, data.train_x[fit]).cpu().numpy()

        matrix = methods.transition_matrix(method.loss, labels.realized_matrix, data.num_classes, estimate, "loss")
    model = initial_model(run.group, data, run.seed)
    trainer = methods.build(method, run.group.train, matrix=None if matrix is None else torch.from_numpy(matrix),
                            n_fit=int((~labels.val).sum()), seed=run.seed, device=data.train_x.device)
    result = _fit(data, labels, run.seed, model, trainer, run.group.train, desc=desc, checkpoint=job.checkpoint,
                  on_epoch=on_epoch)
    result.matrix = matrix
    return result


def pretrain_method(data: Tensors, job: Job) -> two_phase._Phase1:
    """A phase-1 job's method (two_phase.py), on its fitted samples' noisy and true labels."""
    run, labels = job.run, job.labels
    fit = np.flatnonzero(~labels.val)
    return two_phase.build_pretrain(run.method.pretrain, run.group.train, noisy=torch.from_numpy(labels.noisy[fit]),
                                    true=data.train_y.cpu()[fit], num_classes=data.num_classes,
                                    realized_noise_rate=labels.realized_noise_rate, device=data.train_x.device)


def _pretrain(data: Tensors, job: Job, desc: str, on_epoch) -> RunResult:
    run = job.run
    return _fit(data, job.labels, run.seed, initial_model(run.group, data, run.seed), pretrain_method(data, job),
                run.group.train, desc=desc, checkpoint=job.checkpoint, on_epoch=on_epoch)


def _finetune(data: Tensors, job: Job, desc: str, on_epoch) -> RunResult:
    run, spec = job.run, job.run.method.finetune
    model = initial_model(run.group, data, run.seed)
    if spec.init == "phase1":
        model.load_state_dict(job.phase1["state_dict"])
    trainer = two_phase.Finetune(spec, run.group.train, seed=run.seed)
    return _fit(data, job.labels, run.seed, model, trainer, run.group.train,
                targets=job.phase1.get("labels"), keep=job.phase1.get("keep"), desc=desc, checkpoint=job.checkpoint,
                on_epoch=on_epoch)


def train(data: Tensors, job: Job, report=None) -> RunResult:
    """Train one job on `data` (to_tensors of its group's data set); report(kind, run, what):
    its progress (module docstring), or None."""
    kinds = {"single": _single, "pretrain": _pretrain, "finetune": _finetune}
    started = int(time.time() * 1000)
    on_epoch = None
    if report:
        report("start", job.run.key, started)
        on_epoch = functools.partial(report, "epoch", job.run.key)
    result = kinds[job.kind](data, job, job.run.key, on_epoch)
    result.started_ms, result.ended_ms = started, int(time.time() * 1000)
    return result
