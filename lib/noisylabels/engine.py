"""The training loop: one run = one model trained on one set of noisy labels.

The data set lives as tensors on the device for the whole run; a batch is an index slice of
them, so there is no DataLoader and no host copy per step. The host reads numbers back once
per epoch (no per-step synchronisation). What the loss does with a batch, and what happens
between epochs, is the run's method (methods.py). `train_group` is the one entry point the
stages call (with `group_jobs` and `Workers`): it spreads the runs of a group over worker
processes, each single-threaded, so results do not depend on the number of workers.

Per-epoch history (also the MLflow metric names, step = epoch):
  lr, train_loss, train_pass_acc_noisy, train_pass_acc_true  (from the training passes),
  val_acc_noisy (held-out noisy split), test_acc, plus the method's own (methods.py).
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from noisylabels import methods
from noisylabels.config import ConfigError
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
    """A data set on the device: images as normalised float N x C x H x W, labels int64."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def to_tensors(dataset, device: torch.device) -> Tensors:
    def images(a):
        return torch.from_numpy(a).to(device).permute(0, 3, 1, 2).float().div_(255)

    train_x, test_x = images(dataset.train_images), images(dataset.test_images)
    # per-channel standardisation with statistics of the training images
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return Tensors(
        (train_x - mean) / std, torch.from_numpy(dataset.train_labels).to(device),
        (test_x - mean) / std, torch.from_numpy(dataset.test_labels).to(device),
    )


@dataclass
class RunResult:
    history: dict[str, list[float]]  # HISTORY_KEYS -> one value per epoch
    test_pred: np.ndarray  # epochs x n_test predicted classes
    val_pred: np.ndarray  # epochs x n_val, on the held-out noisy split
    train_pred: np.ndarray  # after the last epoch, on the fitted (not held-out) samples
    state_dict: dict
    metrics: dict = field(default_factory=dict)  # the method's final numbers (e.g. D2L's turning epoch)
    matrix: np.ndarray | None = None  # the transition matrix a Forward/Backward loss used


@torch.no_grad()
def predict(model, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + chunk]).argmax(1) for i in range(0, len(x), chunk)])


def train_run(data: Tensors, noisy: np.ndarray, holdout: np.ndarray, seed: int, model_cfg: dict,
              loss_cfg: dict, train_cfg: dict, num_classes: int, training: dict = STANDARD,
              realized: np.ndarray | None = None, desc: str = "") -> RunResult:
    """Train one model on labels `noisy`, holding out the samples where `holdout` is True.

    realized: the noise stage's realized transition matrix of these labels (for Forward and
    Backward with matrix: realized).
    """
    device = data.train_x.device
    fit = torch.from_numpy(np.flatnonzero(~holdout)).to(device)
    val = torch.from_numpy(np.flatnonzero(holdout)).to(device)
    noisy_t = torch.from_numpy(noisy).to(device)
    x, y, y_true = data.train_x[fit], noisy_t[fit], data.train_y[fit]
    x_val, y_val = data.train_x[val], noisy_t[val]

    matrix = None
    if "matrix" in loss_cfg:
        def estimate():  # Patrini et al.: a CE model on the same noisy labels gives the anchors
            ce = train_run(data, noisy, holdout, seed, model_cfg, {"name": "ce"}, train_cfg, num_classes,
                           desc=f"{desc} CE for T")
            model = build_model(model_cfg, x.shape[1:], num_classes).to(device)
            model.load_state_dict(ce.state_dict)
            return methods.probabilities(model, x).cpu().numpy()

        matrix = methods.transition_matrix(loss_cfg, realized, num_classes, estimate)
        methods.check_invertible(loss_cfg, matrix, "loss")

    # Same seed -> same initial weights and batch order for every method (paired comparisons).
    torch.manual_seed(seed)
    model = build_model(model_cfg, x.shape[1:], num_classes).to(device)
    batch_order = torch.Generator(device=device).manual_seed(seed)
    method = methods.build(loss_cfg, training, matrix=None if matrix is None else torch.from_numpy(matrix),
                           n_fit=len(x), epochs=train_cfg["epochs"], seed=seed, device=device)
    opt = torch.optim.SGD(model.parameters(), lr=train_cfg["lr"], momentum=train_cfg["momentum"],
                          weight_decay=train_cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, train_cfg["milestones"], train_cfg["gamma"])

    n, bs = len(x), train_cfg["batch_size"]
    # A last batch of a single sample would break batch norm; it is skipped (its sample is
    # seen in other epochs, as the permutation changes).
    starts = [s for s in range(0, n, bs) if n - s > 1]
    history = {k: [] for k in (*HISTORY_KEYS, *method.history_keys)}
    test_preds, val_preds = [], []
    for epoch in tqdm(range(1, train_cfg["epochs"] + 1), desc=desc, leave=False, disable=None):
        model.train()
        lr = opt.param_groups[0]["lr"]
        perm = torch.randperm(n, generator=batch_order, device=device)
        sums = torch.zeros(3, device=device)  # loss, correct on noisy labels, correct on true
        seen = 0
        for s in starts:
            idx = perm[s : s + bs]
            logits = model(x[idx])
            losses = method.batch_loss(logits, y[idx], idx)
            opt.zero_grad(set_to_none=True)
            losses.mean().backward()
            opt.step()
            with torch.no_grad():
                pred = logits.argmax(1)
                sums += torch.stack([losses.sum(), (pred == y[idx]).sum(), (pred == y_true[idx]).sum()])
            seen += len(idx)
        sched.step()
        test_pred, val_pred = predict(model, data.test_x), predict(model, x_val)
        test_preds.append(test_pred)
        val_preds.append(val_pred)
        numbers = torch.cat([sums / seen, (val_pred == y_val).float().mean()[None],
                             (test_pred == data.test_y).float().mean()[None]]).tolist()  # one sync per epoch
        for key, value in zip(HISTORY_KEYS, [lr, *numbers]):
            history[key].append(float(value))
        for key, value in method.end_epoch(epoch, model, x, y, history["val_acc_noisy"][-1]).items():
            history[key].append(value)
    return RunResult(
        history=history,
        test_pred=torch.stack(test_preds).to(torch.int16).cpu().numpy(),
        val_pred=torch.stack(val_preds).to(torch.int16).cpu().numpy(),
        train_pred=predict(model, x).cpu().numpy(),
        state_dict={k: v.cpu() for k, v in model.state_dict().items()},
        metrics=method.final_metrics(),
        matrix=matrix,
    )


# --- a group's runs over worker processes ------------------------------------------------

_worker = {}  # per worker process: the data set on its device


def _init_worker(dataset, device_name: str, threads: int) -> None:
    torch.set_num_threads(threads)
    _worker["data"] = to_tensors(dataset, torch.device(device_name))


def _train_job(job: dict) -> RunResult:
    return train_run(_worker["data"], **job)


def group_jobs(group, noisy: np.ndarray, holdout: np.ndarray, realized: np.ndarray, num_classes: int) -> list[dict]:
    """One train_run job per run of `group`, checked before any of them trains.

    noisy: settings x seeds x N, holdout: seeds x N, realized: settings x seeds x K x K.
    """
    jobs = []
    for run in group.runs:
        i, j = group.settings.index(run.setting), group.seeds.index(run.seed)
        loss = group.loss_for(run.setting)
        if loss.get("matrix") not in (None, "estimated"):  # an estimated one is checked once estimated
            matrix = methods.transition_matrix(loss, realized[i, j], num_classes, None)
            methods.check_invertible(loss, matrix, f"{group.name} {run.name}: loss")
        jobs.append(dict(noisy=noisy[i, j], holdout=holdout[j], seed=run.seed, model_cfg=group.model,
                         loss_cfg=loss, train_cfg=group.train, num_classes=num_classes,
                         training=group.training, realized=realized[i, j], desc=f"{group.name} {run.name}"))
    return jobs


class Workers:
    """The processes that train a group's runs (a context manager).

    Runs are independent, so `processes` worker processes (each with `threads` torch threads
    and its own copy of the data on `device`) train them side by side; results come back in
    job order and are identical for any number of workers. The workers start at once, while
    the caller sets up MLflow. With one process, jobs run here.
    """

    def __init__(self, dataset, device, processes: int, threads: int = 1):
        self.pool = None
        if processes > 1:
            # fork on the CPU: a worker starts in milliseconds with torch already imported
            # (spawn costs seconds of imports per worker and group); CUDA needs spawn. The
            # parent has run no torch op yet, so no thread pool is forked half-initialised.
            context = multiprocessing.get_context("fork" if torch.device(device).type == "cpu" else "spawn")
            self.pool = ProcessPoolExecutor(processes, mp_context=context,
                                            initializer=_init_worker, initargs=(dataset, str(device), threads))
            for _ in range(processes):  # each submit starts one more worker
                self.pool.submit(int)
        else:
            _init_worker(dataset, str(device), threads)

    def map(self, jobs: list[dict]):
        return self.pool.map(_train_job, jobs) if self.pool else map(_train_job, jobs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.pool:
            self.pool.shutdown(cancel_futures=True)


def train_group(group, jobs: list[dict], workers: Workers, on_run_done=None) -> dict[str, RunResult]:
    """Train the jobs of group_jobs(group, ...) on `workers`; run name -> result, in run order.

    on_run_done(run, result) is called in this process as each run finishes (the stage logs
    it to MLflow there).
    """
    results = {}
    for run, result in zip(group.runs, workers.map(jobs)):
        if on_run_done:
            on_run_done(run, result)
        results[run.name] = result
    return results
