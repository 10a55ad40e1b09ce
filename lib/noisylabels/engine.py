"""The training loop: one run = one model trained on one set of noisy labels.

The data set lives as tensors on the device for the whole run; a batch is an index slice of
them, so there is no DataLoader and no host copy per step. The host reads numbers back once
per epoch (no per-step synchronisation). `train_group` is the one entry point the stages call:
it trains the runs of a group one after another today, and is where a later version can train
them together (stacked models) without touching the stages.

Per-epoch history (also the MLflow metric names, step = epoch):
  lr, train_loss, train_pass_acc_noisy, train_pass_acc_true  (from the training passes),
  val_acc_noisy (held-out noisy split), test_acc.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from noisylabels.config import ConfigError
from noisylabels.losses import make_loss
from noisylabels.models import build_model

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


@torch.no_grad()
def predict(model, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + chunk]).argmax(1) for i in range(0, len(x), chunk)])


def train_run(data: Tensors, noisy: np.ndarray, holdout: np.ndarray, seed: int, model_cfg: dict,
              loss_cfg: dict, train_cfg: dict, num_classes: int, desc: str = "") -> RunResult:
    """Train one model on labels `noisy`, holding out the samples where `holdout` is True."""
    device = data.train_x.device
    fit = torch.from_numpy(np.flatnonzero(~holdout)).to(device)
    val = torch.from_numpy(np.flatnonzero(holdout)).to(device)
    noisy_t = torch.from_numpy(noisy).to(device)
    x, y, y_true = data.train_x[fit], noisy_t[fit], data.train_y[fit]
    x_val, y_val = data.train_x[val], noisy_t[val]

    # Same seed -> same initial weights and batch order for every method (paired comparisons).
    torch.manual_seed(seed)
    model = build_model(model_cfg, x.shape[1:], num_classes).to(device)
    batch_order = torch.Generator(device=device).manual_seed(seed)
    loss_fn = make_loss(loss_cfg)
    opt = torch.optim.SGD(model.parameters(), lr=train_cfg["lr"], momentum=train_cfg["momentum"],
                          weight_decay=train_cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, train_cfg["milestones"], train_cfg["gamma"])

    n, bs = len(x), train_cfg["batch_size"]
    # A last batch of a single sample would break batch norm; it is skipped (its sample is
    # seen in other epochs, as the permutation changes).
    starts = [s for s in range(0, n, bs) if n - s > 1]
    history = {k: [] for k in HISTORY_KEYS}
    test_preds, val_preds = [], []
    for _ in tqdm(range(train_cfg["epochs"]), desc=desc, leave=False, disable=None):
        model.train()
        lr = opt.param_groups[0]["lr"]
        perm = torch.randperm(n, generator=batch_order, device=device)
        sums = torch.zeros(3, device=device)  # loss, correct on noisy labels, correct on true
        seen = 0
        for s in starts:
            idx = perm[s : s + bs]
            logits = model(x[idx])
            losses = loss_fn(logits, y[idx])
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
        epoch = torch.cat([sums / seen, (val_pred == y_val).float().mean()[None],
                           (test_pred == data.test_y).float().mean()[None]]).tolist()  # one sync per epoch
        for key, value in zip(HISTORY_KEYS, [lr, *epoch]):
            history[key].append(float(value))
    return RunResult(
        history=history,
        test_pred=torch.stack(test_preds).to(torch.int16).cpu().numpy(),
        val_pred=torch.stack(val_preds).to(torch.int16).cpu().numpy(),
        train_pred=predict(model, x).cpu().numpy(),
        state_dict={k: v.cpu() for k, v in model.state_dict().items()},
    )


def train_group(group, data: Tensors, noisy: np.ndarray, holdout: np.ndarray, num_classes: int,
                on_run_done=None) -> dict[str, RunResult]:
    """Train every run of `group`; noisy: settings x seeds x N, holdout: seeds x N.

    on_run_done(run, result) is called after each run (the stage logs it to MLflow there).
    """
    results = {}
    for run in group.runs:
        i, j = group.settings.index(run.setting), group.seeds.index(run.seed)
        result = train_run(data, noisy[i, j], holdout[j], run.seed, group.model, group.loss,
                           group.train, num_classes, desc=f"{group.name} {run.name}")
        if on_run_done:
            on_run_done(run, result)
        results[run.name] = result
    return results
