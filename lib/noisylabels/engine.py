"""The training loop: one run = one model trained on one set of noisy labels.

The data set lives as tensors on the device for the whole run; a batch is an index slice of
them, so there is no DataLoader and no host copy per step. The host reads numbers back once
per epoch (no per-step synchronisation). What the loss does with a batch, the learning rate
and batch size of each epoch, and what happens between epochs, is the run's method
(methods.py for single-phase methods, two_phase.py for the phases of two-phase ones).
Three kinds of run share one loop (`_fit`): `train_run` (a single-phase method),
`pretrain_run` (phase 1 of a two-phase method: label correction or O2U-Net's ranking) and
`finetune_run` (phase 2, on phase 1's corrected labels or kept samples).
`train_group` is the one entry point the stages call (with `group_jobs` and `Workers`): it
spreads the runs of a group over worker processes, each single-threaded, so results do not
depend on the number of workers.

Per-epoch history (also the MLflow metric names, step = epoch):
  lr, train_loss, train_pass_acc_noisy, train_pass_acc_true  (from the training passes),
  val_acc_noisy (held-out noisy split), test_acc, plus the method's own.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from noisylabels import augment, methods, two_phase
from noisylabels.augment import Images
from noisylabels.config import TRAIN_DEFAULTS, ConfigError
from noisylabels.models import build_model

STANDARD = {"name": "standard"}

HISTORY_KEYS = ("lr", "train_loss", "train_pass_acc_noisy", "train_pass_acc_true", "val_acc_noisy", "test_acc")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device='cuda': no CUDA device is available here; use auto or cpu")
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


def to_tensors(dataset, device: torch.device, train_cfg: dict | None = None) -> Tensors:
    """The data set on `device`, normalised and augmented as the `train` section says
    (normalize, augment; default: per-channel standardisation, no augmentation)."""
    train_cfg = {**TRAIN_DEFAULTS, **(train_cfg or {})}

    def raw(a):
        return torch.from_numpy(a).to(device).permute(0, 3, 1, 2).contiguous()

    train, test = raw(dataset.train_images), raw(dataset.test_images)
    mean, std = augment.normalisation(train, train_cfg["normalize"])
    augmentation = augment.Augmentation(train_cfg["augment"], mean, std, train.shape)
    return Tensors(Images(train, mean, std, augmentation.view), torch.from_numpy(dataset.train_labels).to(device),
                   Images(test, mean, std, augmentation.view), torch.from_numpy(dataset.test_labels).to(device),
                   augmentation)


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


@torch.no_grad()
def predict(model, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + chunk]).argmax(1) for i in range(0, len(x), chunk)])


class SGD:
    """torch.optim.SGD's update (L2 weight decay added to the gradient, then momentum), as
    four foreach ops. torch.optim's first step imports torch._dynamo, 1.3 s in every worker
    process of every stage; this is the same arithmetic without it (a test compares them).

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


def _fit(data: Tensors, holdout: np.ndarray, noisy: np.ndarray, seed: int, model, method, train_cfg: dict,
         targets=None, keep: np.ndarray | None = None, desc: str = "") -> RunResult:
    """Train `model` with `method` on the fitted samples (not held out; with `keep`, only those).

    targets: what the method's loss compares with, one row per fitted sample (default: the
    noisy labels; soft labels after a label correction). The method sets the schedule
    (method.epochs, method.lr(epoch), method.batch_size(epoch)); train_cfg the optimizer.
    """
    train_cfg = {**TRAIN_DEFAULTS, **train_cfg}
    device = data.train_x.device
    fit = np.flatnonzero(~holdout)
    subset = np.arange(len(fit)) if keep is None else np.flatnonzero(keep)
    fit_t, sub_t = torch.from_numpy(fit).to(device), torch.from_numpy(subset).to(device)
    val = torch.from_numpy(np.flatnonzero(holdout)).to(device)
    noisy_t = torch.from_numpy(noisy).to(device)
    x_fit = data.train_x.subset(fit_t)
    x, y, y_true = x_fit.subset(sub_t), noisy_t[fit_t][sub_t], data.train_y[fit_t][sub_t]
    t = y if targets is None else torch.as_tensor(targets, device=device)[sub_t]
    x_val, y_val = data.train_x.subset(val), noisy_t[val]

    # Same seed -> same batch order and augmentation draws for every method (paired comparisons).
    batch_order = torch.Generator(device=device).manual_seed(seed)
    draws = torch.Generator(device=device).manual_seed(seed + 2_000_003)
    opt = SGD(model.named_parameters(), train_cfg["momentum"], train_cfg["weight_decay"], train_cfg["l2"])
    iteration = 0  # optimizer steps so far, for Keras' lr decay
    n = len(x)
    history = {k: [] for k in (*HISTORY_KEYS, *method.history_keys)}
    test_preds, val_preds = [], []
    for epoch in tqdm(range(1, method.epochs + 1), desc=desc, leave=False, disable=None):
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
            losses, logits = method.batch_loss(model, data.augment(x.normalised(idx), draws), t[idx], idx)
            opt.zero_grad()
            losses.mean().backward()
            method.after_backward(idx)
            step_lr = lr / (1 + train_cfg["lr_decay"] * iteration)
            opt.step(step_lr)
            iteration += 1
            with torch.no_grad():
                pred = logits.argmax(1)
                sums += torch.stack([losses.sum(), (pred == y[idx]).sum(), (pred == y_true[idx]).sum(),
                                     (y_true[idx] >= 0).sum()])
            seen += len(idx)
        test_pred, val_pred = predict(model, data.test_x), predict(model, x_val)
        test_preds.append(test_pred)
        val_preds.append(val_pred)
        numbers = torch.cat([sums[:2] / seen, sums[2:3] / sums[3], (val_pred == y_val).float().mean()[None],
                             (test_pred == data.test_y).float().mean()[None]]).tolist()  # one sync per epoch
        lr = step_lr  # the history's lr: the last step's (with lr_decay it falls within an epoch)
        for key, value in zip(HISTORY_KEYS, [lr, *numbers]):
            history[key].append(float(value))
        for key, value in method.end_epoch(epoch, model, x, y, history["val_acc_noisy"][-1]).items():
            history[key].append(value)
    return RunResult(
        history=history,
        test_pred=torch.stack(test_preds).to(torch.int16).cpu().numpy(),
        val_pred=torch.stack(val_preds).to(torch.int16).cpu().numpy(),
        train_pred=predict(model, x_fit).cpu().numpy(),
        state_dict={k: v.cpu() for k, v in model.state_dict().items()},
        metrics=method.final_metrics(),
        artefacts=method.artefacts(),
    )


def preflight(group, dataset) -> None:
    """What would fail inside a worker, checked before any run starts: the augmentation and
    normalisation fit the images, every `train.l2` layer exists in the model, pretrained
    weights load (and are downloaded into torch's cache once, here)."""
    problem = augment.check_fits(group.train["augment"], dataset.train_images.shape[1:])
    if problem:
        raise ConfigError(f"train.augment.size={group.train['augment']['size']}: {problem}")
    if group.train["normalize"] == "imagenet" and dataset.train_images.shape[-1] != 3:
        raise ConfigError(f"train.normalize='imagenet': expected RGB images; {dataset.name} has "
                          f"{dataset.train_images.shape[-1]} channel(s)")
    shape = augment.input_shape(group.train["augment"], dataset.train_images.shape[1:])
    model = build_model(group.model, shape, dataset.num_classes)
    SGD(model.named_parameters(), 0.0, 0.0, group.train["l2"])


def _model(model_cfg: dict, data: Tensors, num_classes: int, seed: int):
    torch.manual_seed(seed)  # same seed -> same initial weights for every method
    return build_model(model_cfg, data.train_x.shape[1:], num_classes).to(data.train_x.device)


def train_run(data: Tensors, noisy: np.ndarray, holdout: np.ndarray, seed: int, model_cfg: dict,
              loss_cfg: dict, train_cfg: dict, num_classes: int, training: dict = STANDARD,
              realized: np.ndarray | None = None, desc: str = "") -> RunResult:
    """Train one model (a single-phase method) on labels `noisy`, holding out where `holdout`.

    realized: the noise stage's realized transition matrix of these labels (for Forward and
    Backward with matrix: realized).
    """
    matrix = None
    if "matrix" in loss_cfg:
        def estimate():  # Patrini et al.: a CE model on the same noisy labels gives the anchors
            ce = train_run(data, noisy, holdout, seed, model_cfg, {"name": "ce"}, train_cfg, num_classes,
                           desc=f"{desc} CE for T")
            model = _model(model_cfg, data, num_classes, seed)
            model.load_state_dict(ce.state_dict)
            fit = torch.from_numpy(np.flatnonzero(~holdout)).to(data.train_x.device)
            return methods.probabilities(model, data.train_x[fit]).cpu().numpy()

        matrix = methods.transition_matrix(loss_cfg, realized, num_classes, estimate)
        methods.check_invertible(loss_cfg, matrix, "loss")

    model = _model(model_cfg, data, num_classes, seed)
    method = methods.build(loss_cfg, training, train_cfg, matrix=None if matrix is None else torch.from_numpy(matrix),
                           n_fit=int((~holdout).sum()), seed=seed, device=data.train_x.device)
    result = _fit(data, holdout, noisy, seed, model, method, train_cfg, desc=desc)
    result.matrix = matrix
    return result


def pretrain_run(data: Tensors, noisy: np.ndarray, holdout: np.ndarray, seed: int, model_cfg: dict,
                 pretrain_cfg: dict, train_cfg: dict, num_classes: int, noise_rate: float,
                 desc: str = "") -> RunResult:
    """Phase 1 of a two-phase method (two_phase.py): its artefacts are in result.artefacts."""
    model = _model(model_cfg, data, num_classes, seed)
    fit = np.flatnonzero(~holdout)
    method = two_phase.build_pretrain(pretrain_cfg, train_cfg, noisy=torch.from_numpy(noisy[fit]),
                                      true=data.train_y.cpu()[fit], num_classes=num_classes,
                                      noise_rate=noise_rate, seed=seed, device=data.train_x.device)
    return _fit(data, holdout, noisy, seed, model, method, train_cfg, desc=desc)


def finetune_run(data: Tensors, noisy: np.ndarray, holdout: np.ndarray, seed: int, model_cfg: dict,
                 finetune_cfg: dict, train_cfg: dict, num_classes: int, phase1: dict,
                 desc: str = "") -> RunResult:
    """Phase 2: train on phase 1's corrected labels (`labels`) or kept samples (`keep`).

    phase1: that run's artefacts and, for init: phase1, its final weights (`state_dict`).
    """
    model = _model(model_cfg, data, num_classes, seed)
    if finetune_cfg["init"] == "phase1":
        model.load_state_dict(phase1["state_dict"])
    method = two_phase.Finetune(finetune_cfg, train_cfg, seed=seed)
    return _fit(data, holdout, noisy, seed, model, method, train_cfg,
                targets=phase1.get("labels"), keep=phase1.get("keep"), desc=desc)


RUNNERS = {"single": train_run, "pretrain": pretrain_run, "finetune": finetune_run}


# --- a group's runs over worker processes ------------------------------------------------

_worker = {}  # per worker process: the data set on its device


def _init_worker(dataset, device_name: str, threads: int, train_cfg: dict) -> None:
    torch.set_num_threads(threads)
    _worker["data"] = to_tensors(dataset, torch.device(device_name), train_cfg)


def _train_job(job: dict) -> RunResult:
    return RUNNERS[job["kind"]](_worker["data"], **{k: v for k, v in job.items() if k != "kind"})


def group_jobs(group, noisy: np.ndarray, holdout: np.ndarray, realized: np.ndarray, num_classes: int,
               phase1: dict[str, dict] | None = None) -> list[dict]:
    """One job per run of `group`, checked before any of them trains.

    noisy: settings x seeds x N, holdout: seeds x N, realized: settings x seeds x K x K.
    A single-phase group gives train_run jobs; a two-phase group gives pretrain_run jobs, or
    with `phase1` (run name -> that run's phase-1 artefacts) finetune_run jobs.
    """
    jobs = []
    for run in group.runs:
        i, j = group.settings.index(run.setting), group.seeds.index(run.seed)
        common = dict(noisy=noisy[i, j], holdout=holdout[j], seed=run.seed, model_cfg=group.model,
                      train_cfg=group.train, num_classes=num_classes, desc=f"{group.name} {run.name}")
        if not group.two_phase:
            loss = group.loss_for(run.setting)
            if loss.get("matrix") not in (None, "estimated"):  # an estimated one is checked once estimated
                matrix = methods.transition_matrix(loss, realized[i, j], num_classes, None)
                methods.check_invertible(loss, matrix, f"{group.name} {run.name}: loss")
            jobs.append(dict(kind="single", loss_cfg=loss, training=group.training, realized=realized[i, j], **common))
        elif phase1 is None:
            jobs.append(dict(kind="pretrain", pretrain_cfg=group.phase_for(run.setting, "pretrain"),
                             noise_rate=run.setting.rate, **common))
        else:
            jobs.append(dict(kind="finetune", finetune_cfg=group.phase_for(run.setting, "finetune"),
                             phase1=phase1[run.name], **common))
    return jobs


class Workers:
    """The processes that train a group's runs (a context manager).

    Runs are independent, so `processes` worker processes (each with `threads` torch threads
    and its own copy of the data on `device`) train them side by side; results come back in
    job order and are identical for any number of workers. The workers start at once, while
    the caller sets up MLflow. With one process, jobs run here.
    """

    def __init__(self, dataset, device, processes: int, threads: int = 1, train_cfg: dict | None = None):
        self.pool = None
        if processes > 1:
            # fork on the CPU: a worker starts in milliseconds with torch already imported
            # (spawn costs seconds of imports per worker and group); CUDA needs spawn. The
            # parent has run no torch op yet, so no thread pool is forked half-initialised.
            context = multiprocessing.get_context("fork" if torch.device(device).type == "cpu" else "spawn")
            self.pool = ProcessPoolExecutor(processes, mp_context=context,
                                            initializer=_init_worker, initargs=(dataset, str(device), threads, train_cfg))
            for _ in range(processes):  # each submit starts one more worker
                self.pool.submit(int)
        else:
            _init_worker(dataset, str(device), threads, train_cfg)

    def map(self, jobs: list[dict]):
        return self.pool.map(_train_job, jobs) if self.pool else map(_train_job, jobs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.pool:
            self.pool.shutdown(cancel_futures=True)


def train_group(group, jobs: list[dict], workers: Workers, on_run_done=None) -> dict[str, RunResult]:
    """Train the jobs of group_jobs(group, ...) on `workers`; run name -> result, in run order.

    on_run_done(run, job, result) is called in this process as each run finishes, in run
    order (the stage logs it to MLflow there).
    """
    results = {}
    for run, job, result in zip(group.runs, jobs, workers.map(jobs)):
        if on_run_done:
            on_run_done(run, job, result)
        results[run.name] = result
    return results
