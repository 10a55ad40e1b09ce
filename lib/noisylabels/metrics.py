"""Accuracy metrics of one run, computed from its saved predictions (numpy only).

'best' is the epoch with the highest accuracy on the held-out split of the *noisy* training
data (what a practitioner can see), never the epoch with the highest test accuracy.
Epochs are numbered from 1.
"""
from __future__ import annotations

import numpy as np

# the final metrics summarised over seeds (MLflow parent runs, report tables)
SEED_SUMMARY = ("test_acc_last", "test_acc_best", "train_acc_noisy", "train_acc_true", "realized_noise_rate")


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single seed) over seeds."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(pred == labels)) if len(labels) else float("nan")


def classwise_accuracy(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float]:
    return [accuracy(pred[labels == c], labels[labels == c]) for c in range(num_classes)]


def run_metrics(test_pred, test_labels, val_pred, val_noisy, train_pred, train_noisy, train_true,
                num_classes: int) -> dict:
    """test_pred: epochs x n_test, val_pred: epochs x n_val, train_pred: final, on the fitted part."""
    test_acc = (test_pred == test_labels[None, :]).mean(axis=1)
    val_acc = (val_pred == val_noisy[None, :]).mean(axis=1)
    best = int(np.argmax(val_acc))  # first epoch with the top held-out accuracy
    return {
        "test_acc_last": float(test_acc[-1]),
        "test_acc_best": float(test_acc[best]),
        "best_epoch": best + 1,
        "val_acc_best": float(val_acc[best]),
        "train_acc_noisy": accuracy(train_pred, train_noisy),
        "train_acc_true": accuracy(train_pred, train_true),
        "classwise_test_acc_last": classwise_accuracy(test_pred[-1], test_labels, num_classes),
        "test_acc_per_epoch": test_acc.round(6).tolist(),
    }


def group_records(saved: dict, load_run, dataset, noisy, holdout, noise_info: dict) -> list[dict]:
    """Final metrics of every run of a group.

    saved: the pretrain output's group.json; load_run(name) -> that run's arrays;
    noisy: settings x seeds x N labels and holdout: seeds x N, with noise.json as noise_info.
    """
    realized = {(r["setting"], r["seed"]): r["realized_rate"] for r in noise_info["runs"]}
    records = []
    for info in saved["runs"]:
        i, j = saved["settings"].index(info["setting"]), saved["seeds"].index(info["seed"])
        r = load_run(info["name"])
        fit, val = ~holdout[j], holdout[j]
        m = run_metrics(r["test_pred"], dataset.test_labels, r["val_pred"], noisy[i, j][val],
                        r["train_pred"], noisy[i, j][fit], dataset.train_labels[fit], dataset.num_classes)
        records.append({"run": info["name"], "setting": info["setting"], "seed": info["seed"],
                        "realized_noise_rate": realized[(info["setting"], info["seed"])], **m})
    return records


def seed_summary(records: list[dict], settings: list[str]) -> dict[str, float]:
    """{"<metric>/<setting>": mean, "<metric>_std/<setting>": std} over the seeds of each setting."""
    out = {}
    for setting in settings:
        for key in SEED_SUMMARY:
            out[f"{key}/{setting}"], out[f"{key}_std/{setting}"] = mean_std(
                [r[key] for r in records if r["setting"] == setting])
    return out
