"""Shared fixtures: a tiny params file (the real schema, small numbers) and a tiny data set."""
import copy
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

TINY_PARAMS = {
    "data": {"name": "digits"},
    "noise": {"type": "symmetric", "rate": 0.4, "draw": "exact", "val_fraction": 0.1, "seeds": [0, 1]},
    "model": {"name": "digits_mlp", "hidden": 16, "depth": 1},
    "loss": {"name": "sl", "alpha": 0.01, "beta": 1.0, "A": -4.0},
    "procedure": {"name": "standard"},
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.1, "momentum": 0.9, "weight_decay": 1.0e-4,
              "milestones": [1], "gamma": 0.1, "device": "cpu"},
    "download": ["digits"],
    "datasets": {"digits": {"test_fraction": 0.3, "split_seed": 0}},
    "sce_table1": {
        "paper": "sce",
        "title": "tiny SCE table",
        "noise": {"settings": {"symmetric": [0.0, 0.4], "asymmetric": [0.3]}, "draw": "exact",
                  "val_fraction": 0.1, "seeds": [0, 1]},
        "digits": {
            "model": {"name": "digits_mlp", "hidden": 16, "depth": 1},
            "train": {"epochs": 2, "batch_size": 64, "lr": 0.1, "momentum": 0.9, "weight_decay": 1.0e-4,
                      "milestones": [1], "gamma": 0.1, "device": "cpu"},
            "methods": {"ce": {"loss": {"name": "ce"}},
                        "sl": {"loss": {"name": "sl", "alpha": 0.01, "beta": 1.0, "A": -4.0}},
                        # the realized matrix travels from the noise stage to the loss
                        "forward": {"loss": {"name": "forward", "matrix": "realized", "anchor_percentile": 97.0}}},
        },
    },
    "o2u_table": {  # two-phase methods: a sample selection and a label correction
        "paper": "o2u",
        "title": "tiny two-phase table",
        "noise": {"settings": {"symmetric": [0.4]}, "draw": "exact", "val_fraction": 0.1, "seeds": [0, 1]},
        "digits": {
            "model": {"name": "digits_mlp", "hidden": 16, "depth": 1},
            "train": {"epochs": 2, "batch_size": 64, "lr": 0.1, "momentum": 0.9, "weight_decay": 1.0e-4,
                      "milestones": [1], "gamma": 0.1, "device": "cpu"},
            "methods": {
                "o2u": {"pretrain": {"name": "o2u", "epochs": 1, "lr": 0.1, "cyclic_epochs": 2, "cycle": 2, "r1": 0.1,
                                     "r2": 0.01, "cyclic_batch_size": 32, "forget_rate": "realized_noise_rate"},
                        "finetune": {"loss": {"name": "ce"}, "mixup": 0.0, "init": "scratch", "epochs": 2, "lr": 0.1,
                                     "milestones": [1], "gamma": 0.1}},
                "improved": {"pretrain": {"name": "joint", "alpha": 1.2, "beta": 0.8, "labels": "soft", "start_epoch": 1,
                                          "window": 1, "epochs": 2, "lr": 0.1},
                             "finetune": {"loss": {"name": "kl"}, "mixup": 1.0, "init": "scratch", "epochs": 2, "lr": 0.1,
                                          "milestones": [1], "gamma": 0.1,
                                          "overrides": {"symmetric-0.4": {"mixup": 2.0}}}},
            },
        },
    },
    "groups": {
        "sce_table1-ce-digits": {"table": "sce_table1", "dataset": "digits", "method": "ce"},
        "sce_table1-sl-digits": {"table": "sce_table1", "dataset": "digits", "method": "sl"},
        "sce_table1-forward-digits": {"table": "sce_table1", "dataset": "digits", "method": "forward"},
    },
    "train_stages": {"sce_table1-digits": {"table": "sce_table1", "dataset": "digits"}},
    "two_phase_groups": {
        "o2u_table-o2u-digits": {"table": "o2u_table", "dataset": "digits", "method": "o2u"},
        "o2u_table-improved-digits": {"table": "o2u_table", "dataset": "digits", "method": "improved"},
    },
}


@pytest.fixture
def params():
    """A fresh, mutable copy of the tiny params."""
    return copy.deepcopy(TINY_PARAMS)


@pytest.fixture
def write_params(tmp_path):
    def write(p, name="params.yaml"):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(p, sort_keys=False))
        return path

    return write


def run_stage(script, *args, cwd, env=None):
    """Run stages/<script> as DVC would; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("DVC_ROOT", None)
    return subprocess.run([sys.executable, str(REPO / "stages" / script), *map(str, args)],
                          cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600)


def sh(cmd, cwd, env):
    """Run a command that must succeed; its stdout and stderr."""
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def pipeline_repo(root: Path, params: dict, env: dict | None = None):
    """A git + DVC repository in `root` with this repository's pipeline and code and `params`,
    committed; returns the environment to run it in (plus `env`) and the dvc command."""
    for item in ("dvc.yaml", ".gitignore", "stages", "lib", "data/downloads/README.md"):
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, root / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (root / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, root / item)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    full_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
                "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}
    for key in ("DVC_ROOT", "MLFLOW_TRACKING_URI", "DVC_STAGE", "DVC_EXP_NAME"):
        full_env.pop(key, None)
    full_env.update(env or {})
    dvc = [sys.executable, "-m", "dvc"]
    sh(["git", "init", "-q"], root, full_env)
    sh([*dvc, "init", "-q"], root, full_env)
    sh([*dvc, "config", "core.analytics", "false"], root, full_env)
    sh(["git", "add", "-A"], root, full_env)
    sh(["git", "commit", "-qm", "tiny pipeline"], root, full_env)
    return full_env, dvc


def free_port() -> int:
    """A loopback port nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_address():
    """A one-node Ray cluster on this machine; its address. Ray's session folder must have a
    short path (Unix socket names are limited to 107 bytes), hence not pytest's tmp_path."""
    port, ray = free_port(), str(Path(sys.executable).parent / "ray")
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    sh([ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
        "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats"], None, env)
    yield f"127.0.0.1:{port}"
    subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def prepared(tmp_path, write_params):
    """params, the raw digits and the main group's noisy labels in tmp_path (stage outputs)."""
    def prepare(p):
        path = write_params(p)
        assert run_stage("download.py", "--dataset", "digits", "--params", path, "--out", tmp_path / "raw/digits",
                         cwd=tmp_path).returncode == 0
        assert run_stage("noise.py", "--group", "main", "--params", path, "--raw", tmp_path / "raw",
                         "--out", tmp_path / "noisy/main", cwd=tmp_path).returncode == 0
        return ["--group", "main", "--params", path, "--raw", tmp_path / "raw", "--noisy", tmp_path / "noisy"]

    return prepare


class TinyDataset:
    """Stands in for data.store.Dataset: balanced labels, random images."""

    def __init__(self, n_per_class=100, num_classes=10, name="digits", shape=(8, 8, 1), seed=0):
        rng = np.random.default_rng(seed)
        self.name = name
        self.classes = [str(c) for c in range(num_classes)]
        self.train_labels = np.repeat(np.arange(num_classes), n_per_class).astype(np.int64)
        self.test_labels = np.repeat(np.arange(num_classes), 10).astype(np.int64)
        self.train_images = rng.integers(0, 256, (len(self.train_labels), *shape), dtype=np.uint8)
        self.test_images = rng.integers(0, 256, (len(self.test_labels), *shape), dtype=np.uint8)
        self.train_coarse_labels = None

    @property
    def num_classes(self):
        return len(self.classes)


def make_job(*, loss=None, pretrain=None, finetune=None, phase1=None, procedure=None, train=None, model=None,
             seed=0, noisy, val, realized=None, rate=0.4, realized_rate=None, dataset="digits"):
    """A loop.Job resolved from the tiny params with these sections: a single-phase run
    (loss, training) or a two-phase one (pretrain, finetune; with phase1 its phase 2).
    rate: the setting's nominal rate; realized_rate: the labels' share of wrong ones (rate)."""
    from noisylabels.engine.loop import group_jobs
    from noisylabels.engine.noise import NoisyLabels
    from noisylabels.resolve import resolve_group

    p = copy.deepcopy(TINY_PARAMS)
    if dataset != "digits":
        p["datasets"][dataset] = {}
        p["download"].append(dataset)
    section = {"model": model or p["model"], "train": {**p["train"], **(train or {})}, "methods": {}}
    if loss is not None:
        p.update(data={"name": dataset}, loss=loss, procedure=procedure or {"name": "standard"}, model=section["model"],
                 train=section["train"])
        p["noise"].update(rate=rate, seeds=[seed])
        group = resolve_group(p, "main")
    else:
        section["methods"]["m"] = {"pretrain": pretrain, "finetune": finetune}
        p["o2u_table"].update({dataset: section})
        p["o2u_table"]["noise"].update(settings={"symmetric": [rate]}, seeds=[seed])
        p["two_phase_groups"] = {"g": {"table": "o2u_table", "dataset": dataset, "method": "m"}}
        group = resolve_group(p, "g")
    realized = np.eye(group.dataset.num_classes) if realized is None else realized
    record = {"realized_matrix": realized.tolist(), "realized_noise_rate": rate if realized_rate is None else realized_rate}
    labels = NoisyLabels(noisy[None, None], val[None], {"seeds": [seed], "runs": [record]})
    (job,) = group_jobs(group, labels, None if phase1 is None else {group.runs[0].name: phase1})
    return job


def train_job(ds, **kwargs):
    """make_job(...) trained on the tiny data set `ds` on the CPU."""
    import torch

    from noisylabels.engine import loop

    job = make_job(**kwargs)
    return loop.train(loop.to_tensors(ds, torch.device("cpu"), job.run.group.train), job)


def typed(value: dict):
    """A settings dict of the tests as its spec/ model: by `name` from its registry, a
    finetune section (it has a loss) or a `train` section (device cpu unless given)."""
    from noisylabels.spec import losses, methods, models, train
    from noisylabels.spec.base import check

    registries = {**losses.LOSSES, **methods.PROCEDURES, **methods.PRETRAINS, **methods.SOFT_LOSSES, **models.MODELS,
                  **train.AUGMENTS}
    if "name" in value:
        return check(registries[value["name"]], "test", value)
    if "loss" in value:
        return check(methods.Finetune, "test", value)
    return check(train.Train, "test", {"device": "cpu", **value})
