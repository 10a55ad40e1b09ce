"""Run metrics on hand-made predictions."""
import numpy as np

from noisylabels.engine.metrics import classwise_accuracy, run_metrics


def test_best_epoch_is_chosen_on_the_noisy_val_split_not_the_test_set():
    test_labels = np.array([0, 1, 1, 0])
    test_pred = np.array([[0, 1, 1, 0],   # epoch 1: test 100%
                          [0, 1, 0, 0],   # epoch 2: test 75%
                          [1, 1, 0, 0]])  # epoch 3: test 50%
    val_noisy = np.array([1, 1])
    val_pred = np.array([[0, 0], [1, 1], [1, 0]])  # held-out accuracy peaks at epoch 2
    train_true, train_noisy = np.array([0, 1, 2]), np.array([0, 2, 2])
    m = run_metrics(test_pred, test_labels, val_pred, val_noisy, np.array([0, 2, 2]), train_noisy, train_true, 3)
    assert m["best_epoch"] == 2 and m["test_acc_best"] == 0.75
    assert m["test_acc_last"] == 0.5
    assert m["train_acc_noisy"] == 1.0 and m["train_acc_true"] == 2 / 3
    assert m["classwise_test_acc_last"][:2] == [0.5, 0.5]
    assert m["test_acc_per_epoch"] == [1.0, 0.75, 0.5]


def test_classwise_accuracy():
    assert classwise_accuracy(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), 3) == [1.0, 0.5, 1.0]


def test_seed_summary_uses_sample_std():
    from noisylabels.engine.metrics import seed_summary

    records = [{"setting": "symmetric-0.4", "test_acc_last": a, "test_acc_best": 0.0, "train_acc_noisy": 0.0,
                "train_acc_true": 0.0, "realized_noise_rate": 0.4} for a in (0.5, 0.7)]
    s = seed_summary(records, ["symmetric-0.4"])
    assert s["test_acc_last/symmetric-0.4"] == 0.6
    assert abs(s["test_acc_last_std/symmetric-0.4"] - 0.1414213) < 1e-6
