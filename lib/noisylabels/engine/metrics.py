"""Metrics of one run, computed from its saved predictions and phase-1 artefacts (numpy only).

'best' is the epoch with the highest accuracy on the held-out split of the *noisy* training
data (what a practitioner can see), never the epoch with the highest test accuracy.
Epochs are numbered from 1.

Two-phase methods add (on the fitted samples, against the true labels):
  label_acc_noisy      share of noisy labels equal to the true ones (before correction)
  label_acc_corrected  share of corrected labels (argmax) equal to the true ones (after)
  label_fixed          share of the wrong noisy labels that the correction made right
  label_broken         share of the right noisy labels that the correction made wrong
  detect_precision, detect_recall, detect_f1   of the removed samples as a detector of the
                       wrong labels (seed 004's 'noise accuracy' is the precision)
  detect_auroc         of the O2U score (higher = more likely wrong) against the wrong labels
  kept_fraction        share of the fitted samples kept for phase 2
"""
from __future__ import annotations

import numpy as np

# the final metrics summarised over seeds (MLflow parent runs, report tables)
SEED_SUMMARY = ("test_acc_last", "test_acc_best", "train_acc_noisy", "train_acc_true", "realized_noise_rate")
LABEL_CORRECTION = ("label_acc_noisy", "label_acc_corrected", "label_fixed", "label_broken")
DETECTION = ("detect_precision", "detect_recall", "detect_f1", "detect_auroc", "kept_fraction")


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1) over seeds; the std of a single seed is
    undefined (NaN), not 0."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(pred == labels)) if len(labels) else float("nan")


def classwise_accuracy(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float]:
    return [accuracy(pred[labels == c], labels[labels == c]) for c in range(num_classes)]


def label_correction(noisy: np.ndarray, corrected: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Accuracy of the labels before and after a correction, and what the correction changed."""
    wrong = noisy != true
    return {
        "label_acc_noisy": accuracy(noisy, true),
        "label_acc_corrected": accuracy(corrected, true),
        "label_fixed": accuracy(corrected[wrong], true[wrong]),
        "label_broken": float(np.mean(corrected[~wrong] != true[~wrong])) if (~wrong).any() else float("nan"),
    }


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count 1/2
    (the Mann-Whitney U statistic, from average ranks)."""
    score, positive = np.asarray(score, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score))
    sorted_score = score[order]
    # average rank (from 1) over each run of tied scores
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    ends = np.r_[starts[1:], len(score)]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + 1 + b) / 2
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def detection(score: np.ndarray, removed: np.ndarray, is_noisy: np.ndarray) -> dict[str, float]:
    """How well the removed samples (and the score ranking) find the wrong labels. Precision
    is undefined (NaN) when nothing is removed, recall when no label is wrong; F1 = 2TP /
    (2TP + FP + FN) is 0 when nothing removed is wrong, NaN only when both are empty: as
    scikit-learn's precision_recall_fscore_support(zero_division=nan) computes them (a test
    checks it), written out here because importing sklearn.metrics costs an O2U stage about
    1 s after its training, and each of its workers as much during it."""
    removed, is_noisy = np.asarray(removed, dtype=bool), np.asarray(is_noisy, dtype=bool)
    tp, n_removed, n_noisy = int(np.sum(removed & is_noisy)), int(removed.sum()), int(is_noisy.sum())

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {"detect_precision": ratio(tp, n_removed), "detect_recall": ratio(tp, n_noisy),
            "detect_f1": ratio(2 * tp, n_noisy + n_removed), "detect_auroc": auroc(score, is_noisy),
            "kept_fraction": float(1 - np.mean(removed))}


def phase1_metrics(artefacts: dict, noisy: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Label-correction metrics (from `labels`) or detection metrics (from `score`, `keep`),
    on the samples whose true label is known (all but most of Clothing1M's)."""
    known = true >= 0
    noisy, true = noisy[known], true[known]
    if "labels" in artefacts:
        return label_correction(noisy, artefacts["labels"][known].argmax(1), true)
    return detection(artefacts["score"][known], ~artefacts["keep"][known], noisy != true)


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
        "train_acc_true": accuracy(train_pred[train_true >= 0], train_true[train_true >= 0]),  # where known
        "classwise_test_acc_last": classwise_accuracy(test_pred[-1], test_labels, num_classes),
        "test_acc_per_epoch": test_acc.round(6).tolist(),
    }


def run_record(arrays, dataset, labels, phase1: dict | None = None) -> dict:
    """Final metrics of one run: arrays holds its test_pred, val_pred, train_pred; labels is
    its noise.RunLabels; phase1: a two-phase run's artefacts."""
    fit, val = ~labels.val, labels.val
    m = run_metrics(arrays["test_pred"], dataset.test_labels, arrays["val_pred"], labels.noisy[val],
                    arrays["train_pred"], labels.noisy[fit], dataset.train_labels[fit], dataset.num_classes)
    if phase1:
        m.update(phase1_metrics(phase1, labels.noisy[fit], dataset.train_labels[fit]))
    return {"realized_noise_rate": labels.realized_noise_rate, **m}


def mlflow_metrics(record: dict, classes: list[str]) -> dict[str, float]:
    """A run record's single numbers, as MLflow final metrics (class-wise ones by class name)."""
    return {**{k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "seed"},
            **{f"classwise_test_acc_last/{c}": v for c, v in zip(classes, record["classwise_test_acc_last"])}}


def seed_summary(records: list[dict], settings: list[str]) -> dict[str, float]:
    """{"<metric>/<setting>": mean, "<metric>_std/<setting>": std} over the seeds of each
    setting (no std with a single seed)."""
    out = {}
    for setting in settings:
        for key in (*SEED_SUMMARY, *LABEL_CORRECTION, *DETECTION):
            if key not in records[0]:
                continue
            values = [r[key] for r in records if r["setting"] == setting]
            out[f"{key}/{setting}"], std = mean_std(values)
            if len(values) > 1:
                out[f"{key}_std/{setting}"] = std
    return out
