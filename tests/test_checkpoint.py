"""Checkpoints: a run killed right after a checkpoint and resumed from it ends exactly as the
same run trained without a break, for every kind of training state (optimizer, generators,
dropout's global generator, each method's own state)."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from noisylabels import checkpoint
from noisylabels.engine import loop
from noisylabels.errors import ConfigError

from conftest import TinyDataset, make_job

JOINT = {"name": "joint", "alpha": 1.2, "beta": 0.8, "labels": "soft", "start_epoch": 2, "window": 2, "epochs": 3,
         "lr": 0.1}
FINETUNE = {"loss": {"name": "kl"}, "mixup": 1.0, "init": "scratch", "epochs": 3, "lr": 0.1, "milestones": [2],
            "gamma": 0.1}
CASES = {
    "ce": dict(loss={"name": "ce"}),
    "truncated_lq": dict(loss={"name": "truncated_lq", "q": 0.7, "k": 0.5, "start_epoch": 1, "interval": 1}),
    "d2l": dict(loss={"name": "ce"}, procedure={"name": "d2l", "lid_k": 5, "lid_samples": 100, "lid_batch": 50,
                                                   "window": 2, "init_epoch": 1}),
    "joint": dict(pretrain=JOINT, finetune=FINETUNE),
    "pencil": dict(pretrain={"name": "pencil", "alpha": 0.1, "beta": 0.4, "label_lr": 50.0, "init_scale": 10.0,
                             "stage1_epochs": 1, "epochs": 3, "lr": 0.02}, finetune=FINETUNE),
    "o2u": dict(pretrain={"name": "o2u", "epochs": 1, "lr": 0.05, "cyclic_epochs": 2, "cycle": 2, "r1": 0.01,
                          "r2": 0.001, "cyclic_batch_size": 16, "forget_rate": 0.3},
                finetune={**FINETUNE, "loss": {"name": "ce"}}),
}


class _Killed(Exception):
    pass


class _KilledAfter:
    """A plan that saves as planned, then 'kills' the run after epoch `stop`'s checkpoint."""

    def __init__(self, plan, stop):
        self.plan, self.stop = plan, stop

    def __getattr__(self, name):
        return getattr(self.plan, name)

    def save(self, state):
        self.plan.save(state)
        if state["epoch"] == self.stop:
            raise _Killed


def _same(a: loop.RunResult, b: loop.RunResult):
    assert a.history.keys() == b.history.keys()
    assert all(np.array_equal(a.history[k], b.history[k], equal_nan=True) for k in a.history)  # bit for bit
    for key in ("test_pred", "val_pred", "train_pred"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert a.state_dict.keys() == b.state_dict.keys()
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert a.artefacts.keys() == b.artefacts.keys()
    assert all(np.array_equal(a.artefacts[k], b.artefacts[k]) for k in a.artefacts)
    assert a.metrics == b.metrics


def _resume_equals_uninterrupted(tmp_path, ds, stop, **kwargs):
    val = np.zeros(len(ds.train_labels), dtype=bool)
    val[::5] = True
    job = make_job(noisy=ds.train_labels, val=val, **kwargs)
    data = loop.to_tensors(ds, torch.device("cpu"), job.run.group.train)
    plan = checkpoint.Plan(tmp_path, job.run.name, "fingerprint", 1, None)
    whole = loop.train(data, job)
    with pytest.raises(_Killed):
        loop.train(data, replace(job, checkpoint=_KilledAfter(plan, stop)))
    assert plan.path.is_file()
    _same(loop.train(data, replace(job, checkpoint=plan)), whole)
    return job, data, whole


@pytest.mark.parametrize("case", CASES)
def test_a_resumed_run_equals_the_uninterrupted_one(tmp_path, case):
    ds = TinyDataset(n_per_class=12)
    train = {"epochs": 3, "milestones": [2], "batch_size": 16}
    _resume_equals_uninterrupted(tmp_path, ds, 1, train=train, **CASES[case])


def test_a_resumed_finetune_keeps_its_mixup_draws(tmp_path):
    ds = TinyDataset(n_per_class=12)
    train = {"epochs": 3, "milestones": [2], "batch_size": 16}
    job, data, phase1 = _resume_equals_uninterrupted(tmp_path / "1", ds, 2, train=train, **CASES["joint"])
    labels = {"labels": phase1.artefacts["labels"]}
    _resume_equals_uninterrupted(tmp_path / "2", ds, 2, train=train, **CASES["joint"], phase1=labels)


def test_dropout_draws_resume_from_the_global_generator(tmp_path):
    ds = TinyDataset(n_per_class=3, num_classes=4, shape=(32, 32, 3))
    train = {"epochs": 2, "milestones": [], "batch_size": 4}
    _resume_equals_uninterrupted(tmp_path, ds, 1, loss={"name": "ce"}, model={"name": "coteaching_cnn"}, train=train,
                                 rate=0.2)


def test_a_checkpoint_of_other_settings_is_ignored(tmp_path):
    plan = checkpoint.Plan(tmp_path, "r", "one", 1, None)
    plan.save({"epoch": 1})
    assert plan.load() == {"epoch": 1}
    assert replace(plan, fingerprint="another").load() is None


@pytest.mark.parametrize("text,parsed", [("5min", (None, 5.0)), ("0.5min", (None, 0.5)), ("2epochs", (2, None)),
                                         ("1epoch", (1, None))])
def test_checkpoint_every_reads_minutes_or_epochs(text, parsed):
    assert checkpoint.parse_every(text) == parsed


@pytest.mark.parametrize("text", ["0min", "1.5epochs", "5", "soon", "-1min"])
def test_checkpoint_every_refuses_anything_else(text):
    with pytest.raises(ConfigError, match=f"--checkpoint-every={text!r}: expected minutes or whole epochs"):
        checkpoint.parse_every(text)
