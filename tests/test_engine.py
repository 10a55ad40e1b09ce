"""The training loop, optimizer and workers on a tiny data set: shapes, determinism,
pairing across methods."""
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from noisylabels.engine import loop, noise
from noisylabels.errors import ConfigError
from noisylabels.engine.optim import SGD
from noisylabels.resolve import resolve_group
from noisylabels.engine.workers import Workers, worker_device

from conftest import TINY_PARAMS, TinyDataset, make_job, train_job, typed

TRAIN = TINY_PARAMS["train"]


def _run(loss, seed=0, **kwargs):
    ds = TinyDataset(n_per_class=20)
    val = np.zeros(len(ds.train_labels), dtype=bool)
    val[::10] = True
    return train_job(ds, loss=loss, seed=seed, noisy=ds.train_labels, val=val, **kwargs)


def test_history_and_prediction_shapes():
    r = _run({"name": "ce"})
    assert set(r.history) == set(loop.HISTORY_KEYS)
    assert all(len(v) == TRAIN["epochs"] for v in r.history.values())
    assert r.history["lr"] == [0.1, 0.1 * TRAIN["gamma"]]
    assert r.test_pred.shape == (TRAIN["epochs"], 100) and r.val_pred.shape == (TRAIN["epochs"], 20)
    assert r.train_pred.shape == (180,)


def test_same_seed_is_reproducible_and_seeds_differ():
    a, b, c = _run({"name": "ce"}, 0), _run({"name": "ce"}, 0), _run({"name": "ce"}, 1)
    assert a.history == b.history
    assert a.history["train_loss"] != c.history["train_loss"]
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k])


def test_cnn_with_batch_norm_trains_at_mnist_shape():
    ds = TinyDataset(n_per_class=6, shape=(28, 28, 1))
    val = np.zeros(len(ds.train_labels), dtype=bool)
    val[:4] = True
    train = {"epochs": 1, "milestones": [], "batch_size": 16}
    r = train_job(ds, loss={"name": "ce"}, model={"name": "sce_mnist_cnn"}, train=train, noisy=ds.train_labels, val=val)
    assert r.test_pred.shape == (1, 100) and np.isfinite(r.history["train_loss"]).all()


def test_a_cnn_trains_the_same_with_channels_last_weights(monkeypatch):
    """The engine's layout (loop.MEMORY_FORMAT, channels_last on every device): a CNN with
    batch norm and a Flatten before its dense layers ends where the default NCHW layout
    ends, up to rounding."""
    ds = TinyDataset(n_per_class=6, shape=(28, 28, 1))
    val = np.zeros(len(ds.train_labels), dtype=bool)
    val[:4] = True
    run = dict(loss={"name": "ce"}, model={"name": "sce_mnist_cnn"}, noisy=ds.train_labels, val=val,
               train={"epochs": 2, "milestones": [], "batch_size": 16})
    job = make_job(**run)
    model = loop.initial_model(job.run.group, loop.to_tensors(ds, torch.device("cpu"), job.run.group.train), 0)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    nhwc = train_job(ds, **run)
    monkeypatch.setattr(loop, "MEMORY_FORMAT", torch.contiguous_format)
    nchw = train_job(ds, **run)
    for k, w in nchw.state_dict.items():
        assert (w - nhwc.state_dict[k]).abs().max() <= 1e-4 * max(w.abs().max(), 1), k
    np.testing.assert_allclose(nchw.history["train_loss"], nhwc.history["train_loss"], rtol=1e-4)


def _store_dataset():
    from noisylabels.data.store import Dataset

    ds = TinyDataset(n_per_class=20)
    return Dataset(ds.name, ds.classes, {}, ds.train_images, ds.train_labels, ds.test_images, ds.test_labels)


def test_group_results_do_not_depend_on_the_number_of_workers(params):
    group = resolve_group(params, "sce_table1-sl-digits")
    ds = _store_dataset()
    n, S, K = len(ds.train_labels), len(group.settings), len(group.seeds)
    noisy = np.stack([np.stack([np.roll(ds.train_labels, i + j) for j in range(K)]) for i in range(S)])
    val = np.zeros((K, n), dtype=bool)
    val[:, ::10] = True
    records = [{"setting": s.name, "seed": seed, "realized_matrix": np.eye(10).tolist(), "realized_noise_rate": 0.0}
               for s in group.settings for seed in group.seeds]
    labels = noise.NoisyLabels(noisy, val, {"seeds": list(group.seeds), "runs": records})
    jobs = [loop.Job(run, labels.for_run(run)) for run in group.runs]
    assert [job.labels.noisy[0] for job in jobs] == [noisy[i, j, 0] for i in range(S) for j in range(K)]
    with Workers(ds, "cpu", 1, 1, group.train) as one_process:
        one = list(one_process.map(jobs))
    with Workers(ds, "cpu", 2, 1, group.train) as two_processes:
        two = list(two_processes.map(jobs))
    assert len(one) == len(two) == len(group.runs)
    for a, b in zip(one, two):
        assert a.history == b.history
        assert np.array_equal(a.test_pred, b.test_pred)


def test_workers_spread_over_the_visible_gpus_only_for_plain_cuda():
    assert [worker_device("cuda", i, 4) for i in range(6)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0",
                                                             "cuda:1"]
    assert worker_device("cuda", 3, 1) == "cuda"  # one GPU: all on it
    assert worker_device("cuda:2", 3, 4) == "cuda:2" and worker_device("cpu", 3, 0) == "cpu"


# In a fresh process (glibc's settings are process-wide): workers set up as a stage sets them
# up (or not), then blocks of 16 and 12 MB allocated, written and freed, three times; prints
# the page faults of the second time.
_FREED_MEMORY = """
import ctypes, resource, sys
sys.path.insert(0, sys.argv[2])
from conftest import TINY_PARAMS, TinyDataset, typed
from noisylabels.engine.workers import Workers
if sys.argv[1] == "worker":
    Workers(TinyDataset(n_per_class=2), "cpu", 1, 1, typed(TINY_PARAMS["train"]))
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [(libc.malloc(mb << 20), mb << 20) for mb in (16, 12)]
    for address, size in blocks:
        ctypes.memset(address, 1, size)
    for address, _ in blocks:
        libc.free(address)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(faults[1])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_worker_keeps_the_memory_a_step_frees_for_the_next():
    """workers.keep_freed_memory, set where every worker starts: the second allocation of
    the same blocks reuses their pages (glibc's default returned them to the kernel: 28 MB
    page-faulted in again)."""
    faults = {how: int(subprocess.run([sys.executable, "-c", _FREED_MEMORY, how, str(Path(__file__).parent)],
                                      check=True, capture_output=True, text=True).stdout)
              for how in ("default", "worker")}
    assert faults["default"] > 5000  # 7,168 pages of 4 kB: what the setting saves
    assert faults["worker"] < 500


def test_methods_train_end_to_end_with_their_own_history():
    trunc = _run({"name": "truncated_lq", "q": 0.7, "k": 0.5, "start_epoch": 1, "interval": 1})
    assert len(trunc.history["truncated_fraction"]) == TRAIN["epochs"]
    d2l = _run({"name": "ce"}, procedure={"name": "d2l", "lid_k": 5, "lid_samples": 100, "lid_batch": 50,
                                     "window": 2, "init_epoch": 1})
    assert len(d2l.history["lid"]) == TRAIN["epochs"] and "d2l_turning_epoch" in d2l.metrics


def test_forward_gets_the_realized_or_estimated_matrix():
    realized = np.full((10, 10), 0.02) + 0.8 * np.eye(10)
    cfg = {"name": "forward", "matrix": "realized", "anchor_percentile": 97.0}
    assert np.array_equal(_run(cfg, realized=realized).matrix, realized)
    identity, ce = _run({**cfg, "matrix": "identity"}), _run({"name": "ce"})
    assert np.allclose(identity.history["train_loss"], ce.history["train_loss"], atol=1e-5)  # identity = CE
    est = _run({**cfg, "matrix": "estimated"})
    assert est.matrix.shape == (10, 10) and np.allclose(est.matrix.sum(1), 1)


@pytest.mark.parametrize("nesterov,grad_clip", [(False, None), (True, None), (False, 0.5), (True, 5.0)])
def test_sgd_matches_torch_optim_sgd(nesterov, grad_clip):
    torch.manual_seed(0)
    a = torch.nn.Linear(5, 3)
    b = torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    ours = SGD(a.named_parameters(), momentum=0.9, weight_decay=1e-3, nesterov=nesterov, grad_clip=grad_clip)
    ref = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=nesterov, fused=True)
    x = torch.randn(8, 5)
    for step in range(5):
        lr = 0.1 if step < 3 else 0.01
        for g in ref.param_groups:
            g["lr"] = lr
        ours.zero_grad(), ref.zero_grad()
        a(x).square().sum().backward(), b(x).square().sum().backward()
        if grad_clip is not None:  # APL's code: clip, then the optimizer's step
            norm = torch.nn.utils.clip_grad_norm_(b.parameters(), grad_clip, foreach=True)
            assert step > 0 or norm > grad_clip  # the clip acts
        ours.step(lr), ref.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_cosine_schedule_is_torchs_cosine_annealing_stepped_per_epoch():
    from noisylabels.engine.optim import Schedule

    train = typed({**TRAIN, "epochs": 7, "lr": 0.01, "milestones": [], "schedule": "cosine", "lr_min": 1e-3})
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7, eta_min=1e-3)
    for epoch in range(1, 8):
        assert Schedule(train).lr(epoch) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        ref.step()
    with pytest.raises(Exception, match="expected \\[\\] with schedule: cosine"):
        typed({**TRAIN, "milestones": [1], "schedule": "cosine"})


def test_keras_l2_on_one_layer_is_its_penalty_in_the_loss():
    """l2 {fc1: c} == c * sum(fc1.weight^2) added to the loss; biases and fc2 untouched."""
    def net():
        torch.manual_seed(0)
        return torch.nn.Sequential(OrderedDict(fc1=torch.nn.Linear(5, 4), act=torch.nn.ReLU(), fc2=torch.nn.Linear(4, 3)))

    a, b = net(), net()
    ours = SGD(a.named_parameters(), momentum=0.9, weight_decay=0.0, l2={"fc1": 0.01})
    ref = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(8, 5)
    for _ in range(4):
        ours.zero_grad(), ref.zero_grad()
        a(x).square().sum().backward()
        (b(x).square().sum() + 0.01 * b.fc1.weight.square().sum()).backward()
        ours.step(0.1), ref.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)
    with pytest.raises(ConfigError, match=r"train.l2.fc3=0.01: no layer of the model has that name; .*fc1, fc2"):
        SGD(a.named_parameters(), 0.9, 0.0, {"fc3": 0.01})


def test_keras_lr_decay_divides_the_lr_by_one_plus_decay_times_iterations():
    ds = TinyDataset(n_per_class=14)
    val = np.zeros(len(ds.train_labels), dtype=bool)
    val[::14] = True  # 130 samples left to fit
    train = {"epochs": 2, "milestones": [1], "batch_size": 64, "lr_decay": 0.01}
    r = train_job(ds, loss={"name": "ce"}, train=train, noisy=ds.train_labels, val=val)
    # 130 samples in batches of 64, 64, 2: steps 0-2 in epoch 1, 3-5 in epoch 2 (lr / 10 after epoch 1)
    assert r.history["lr"] == pytest.approx([0.1 / (1 + 0.01 * 2), 0.01 / (1 + 0.01 * 5)])


def test_a_loss_that_turns_nan_stops_the_run_in_that_epoch():
    from noisylabels.errors import DivergenceError

    with pytest.raises(DivergenceError, match=r"^main symmetric-0.4-s0: diverged in epoch 1: train_loss=nan at lr=1e\+20;"):
        _run({"name": "sl", "alpha": 0.1, "beta": 1.0, "A": -4.0}, train={"lr": 1e20})
