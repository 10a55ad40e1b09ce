"""Stacked training (stack.py): a stack of runs trains each run as loop.train trains it
alone, up to floating-point summation order, for every loss that stacks; what does not
stack trains alone; a stack's checkpoints resume run by run."""
import copy

import numpy as np
import pytest
import torch
import yaml

from noisylabels.engine import loop, methods, noise, stack
from noisylabels.checkpoint import Plan
from noisylabels.resolve import resolve_group
from noisylabels.spec.losses import LOSSES

from conftest import REPO, TINY_PARAMS, TinyDataset

# after 2 epochs at lr 0.1 the runs agree to about 1e-6 (relative to the largest weight);
# over 40 epochs on noisy labels the differences grow as any change of summation order does
RTOL = 1e-4


def _params_losses() -> dict:
    """One loss section per loss name, as params.yaml sets it."""
    found = {}

    def walk(d):
        if isinstance(d, dict):
            for k, v in d.items():
                if k == "loss" and isinstance(v, dict) and "name" in v:
                    found.setdefault(v["name"], v)
                walk(v)

    walk(yaml.safe_load((REPO / "params.yaml").read_text()))
    return {**found, "nce": {"name": "nce"}, "nfl": {"name": "nfl", "gamma": 0.5}, "ngce": {"name": "ngce", "q": 0.7},
            "backward": {"name": "backward", "matrix": "realized", "anchor_percentile": 97.0}}


def _jobs(method: dict, seeds=(0, 1), stack_setting="auto", precision="fp32", train: dict | None = None, phase=2,
          model: dict | None = None):
    """The jobs of a 2-setting x len(seeds) group training `method`, each run with its own
    noisy labels and held-out split (train: changes to the tiny train section; model: another
    network than the tiny digits MLP); for a
    two-phase method its phase-1 jobs or its phase-2 jobs, these each with its own phase-1
    soft labels and weights."""
    p = copy.deepcopy(TINY_PARAMS)
    p["sce_table1"]["digits"]["train"].update(stack=stack_setting, precision=precision, **(train or {}))
    p["sce_table1"]["noise"].update(settings={"symmetric": [0.0, 0.4]}, seeds=list(seeds))
    p["sce_table1"]["digits"]["methods"] = {"m": method}
    p["sce_table1"]["digits"]["model"] = model or p["sce_table1"]["digits"]["model"]
    two_phase = "finetune" in method
    p["groups"], p["two_phase_groups"] = {}, {}
    p["two_phase_groups" if two_phase else "groups"]["g"] = {"table": "sce_table1", "dataset": "digits", "method": "m"}
    group = resolve_group(p, "g")
    ds = TinyDataset(n_per_class=20)
    n, S, K = len(ds.train_labels), len(group.settings), len(group.seeds)
    noisy = np.stack([np.stack([np.roll(ds.train_labels, 3 * i + j) for j in range(K)]) for i in range(S)])
    val = np.zeros((K, n), dtype=bool)
    for j in range(K):
        val[j, j::10] = True  # each seed its own held-out samples
    # a realized matrix of its own per run (invertible, for Backward): a stack must not mix them up
    records = [{"setting": s.name, "seed": seed, "realized_noise_rate": 0.0,
                "realized_matrix": (0.8 * np.eye(10) + 0.2 * np.roll(np.eye(10), 1 + (3 * i + j) % 9, axis=1)).tolist()}
               for i, s in enumerate(group.settings) for j, seed in enumerate(group.seeds)]
    labels = noise.NoisyLabels(noisy, val, {"seeds": list(group.seeds), "runs": records})
    data = loop.to_tensors(ds, torch.device("cpu"), group.train)
    phase1 = None
    if two_phase and phase == 2:
        rng = np.random.default_rng(0)
        phase1 = {run.name: {"labels": rng.dirichlet(np.ones(10), int((~labels.for_run(run).val).sum())),
                             "state_dict": loop.initial_model(group, data, run.seed + 7).state_dict()}
                  for run in group.runs}
    return loop.group_jobs(group, labels, phase1), data


def _assert_same_runs(alone: list[loop.RunResult], stacked: list[loop.RunResult]):
    for a, b in zip(alone, stacked, strict=True):
        assert a.state_dict.keys() == b.state_dict.keys()
        for k, w in a.state_dict.items():
            assert w.shape == b.state_dict[k].shape
            assert (w - b.state_dict[k]).abs().max() <= RTOL * w.abs().max(), k
        assert a.history.keys() == b.history.keys()
        for k, values in a.history.items():
            np.testing.assert_allclose(values, b.history[k], rtol=RTOL, atol=RTOL, err_msg=k)
        assert a.test_pred.shape == b.test_pred.shape and a.val_pred.shape == b.val_pred.shape
        assert a.train_pred.shape == b.train_pred.shape
        assert (a.test_pred != b.test_pred).mean() <= 0.02  # a near tie may flip


# every loss, as params.yaml sets it; truncated Lq (which starts after epoch 2 there) has its own test
STACKED_LOSSES = sorted(name for name in LOSSES if name != "truncated_lq")


@pytest.mark.parametrize("loss", STACKED_LOSSES)
def test_a_stack_trains_each_run_as_it_trains_alone(loss):
    jobs, data = _jobs({"loss": _params_losses()[loss]})
    assert all(stack.stackable(job) for job in jobs) and len(jobs) == 4
    _assert_same_runs([loop.train(data, job) for job in jobs], stack.train_stack(data, jobs))


def test_a_stack_truncates_each_run_with_its_own_best_weights_as_it_does_alone(tmp_path):
    """Truncated Lq with its weights recomputed after epochs 1 and 2 (each run's best weights
    by its own held-out accuracy); a checkpoint keeps them per run, in loop.train's format."""
    method = {"loss": {"name": "truncated_lq", "q": 0.7, "k": 0.1, "start_epoch": 1, "interval": 1}}
    jobs, data = _jobs(method)
    assert all(stack.stackable(job) for job in jobs)
    alone, stacked = [loop.train(data, job) for job in jobs], stack.train_stack(data, jobs)
    _assert_same_runs(alone, stacked)
    fractions = [r.history["truncated_fraction"] for r in stacked]
    assert all(len(f) == 2 for f in fractions) and len({f[-1] for f in fractions}) > 1  # at work, per run
    jobs = [loop.Job(job.run, job.labels, checkpoint=Plan(tmp_path, job.run.name, "key", 1, None)) for job in jobs]
    stack.train_stack(data, jobs)
    saved = jobs[0].checkpoint.load()["method"]
    assert set(saved) == {"weight", "best_acc", "best_state"} and saved["weight"].shape == (len(jobs[0].labels.val) * 9 // 10,)
    jobs[1].checkpoint.path.unlink()  # run 1 starts again, the others resume alone from epoch 1
    _assert_same_runs(stacked, stack.train_units(data, jobs))


def test_a_stack_of_d2l_runs_finds_each_runs_turning_point_and_rolls_it_back_as_alone(tmp_path):
    """D2L over 8 epochs with a 2-epoch window: each run its own LID curve, turning epoch,
    roll-back and alpha; resumed from per-run checkpoints in D2L's format."""
    method = {"loss": {"name": "ce"}, "procedure": {"name": "d2l", "lid_k": 5, "lid_samples": 60, "lid_batch": 25,
                                                    "window": 2, "init_epoch": 1}}
    jobs, data = _jobs(method, seeds=(0, 1, 2), train={"epochs": 8, "milestones": [6]})
    assert all(stack.stackable(job) for job in jobs)
    alone, stacked = [loop.train(data, job) for job in jobs], stack.train_stack(data, jobs)
    _assert_same_runs(alone, stacked)
    turning = [r.metrics["d2l_turning_epoch"] for r in stacked]
    assert turning == [r.metrics["d2l_turning_epoch"] for r in alone] and len(set(turning)) > 1, turning
    jobs = [loop.Job(job.run, job.labels, checkpoint=Plan(tmp_path, job.run.name, "key", 3, None)) for job in jobs]
    stack.train_stack(data, jobs)  # saves after epoch 3
    assert set(jobs[0].checkpoint.load()["method"]) == set(methods.D2L.STATE)
    _assert_same_runs(stacked, stack.train_units(data, jobs))


FINETUNE = {"loss": {"name": "kl"}, "mixup": 0.0, "init": "scratch", "epochs": 2, "lr": 0.1, "milestones": [1],
            "gamma": 0.1}


@pytest.mark.parametrize("pretrain", [
    {"name": "joint", "alpha": 1.2, "beta": 0.8, "labels": "soft", "start_epoch": 1, "window": 2, "epochs": 3, "lr": 0.1},
    {"name": "pencil", "alpha": 0.1, "beta": 0.4, "label_lr": 300.0, "init_scale": 10.0, "stage1_epochs": 1,
     "epochs": 3, "lr": 0.02},
    {"name": "o2u", "epochs": 1, "lr": 0.1, "cyclic_epochs": 2, "cycle": 2, "r1": 0.1, "r2": 0.01,
     "cyclic_batch_size": 16, "forget_rate": 0.2},
], ids=["joint", "pencil", "o2u"])
def test_a_stack_of_phase1_runs_corrects_or_selects_each_runs_labels_as_alone(pretrain, tmp_path):
    """Each run's label state (joint optimisation's labels, PENCIL's label logits, O2U's loss
    record) stays its own; the artefacts phase 2 reads equal those trained alone."""
    finetune = {**FINETUNE, "loss": {"name": "ce"}} if pretrain["name"] == "o2u" else FINETUNE  # O2U: kept samples
    jobs, data = _jobs({"pretrain": pretrain, "finetune": finetune}, phase=1)
    assert [job.kind for job in jobs] == ["pretrain"] * 4 and all(stack.stackable(job) for job in jobs)
    alone, stacked = [loop.train(data, job) for job in jobs], stack.train_stack(data, jobs)
    _assert_same_runs(alone, stacked)
    for a, b in zip(alone, stacked):
        assert a.artefacts.keys() == b.artefacts.keys() and a.artefacts
        for key, value in a.artefacts.items():
            np.testing.assert_allclose(value, b.artefacts[key], rtol=RTOL, atol=RTOL, err_msg=key)
    jobs = [loop.Job(job.run, job.labels, checkpoint=Plan(tmp_path, job.run.name, "key", 1, None)) for job in jobs]
    stack.train_stack(data, jobs)
    assert set(jobs[0].checkpoint.load()["method"]) == set(type(loop.pretrain_method(data, jobs[0])).STATE)
    _assert_same_runs(stacked, stack.train_units(data, jobs))


@pytest.mark.parametrize("finetune", [
    {"loss": {"name": "kl"}, "mixup": 0.5, "init": "scratch"},          # seed 002's improved phase 2
    {"loss": {"name": "reverse_kl"}, "mixup": 0.0, "init": "phase1"},   # PENCIL's
], ids=["kl_mixup_scratch", "reverse_kl_phase1"])
def test_a_stack_of_finetune_runs_uses_each_runs_phase1_labels_weights_and_mixup_draws(finetune, tmp_path):
    method = {"pretrain": {"name": "joint", "alpha": 1.2, "beta": 0.8, "labels": "soft", "start_epoch": 1, "window": 1,
                           "epochs": 2, "lr": 0.1},
              "finetune": {**finetune, "epochs": 2, "lr": 0.1, "milestones": [1], "gamma": 0.1}}
    jobs, data = _jobs(method)
    assert [job.kind for job in jobs] == ["finetune"] * 4 and all(stack.stackable(job) for job in jobs)
    alone, stacked = [loop.train(data, job) for job in jobs], stack.train_stack(data, jobs)
    _assert_same_runs(alone, stacked)
    jobs = [loop.Job(job.run, job.labels, job.phase1, checkpoint=Plan(tmp_path, job.run.name, "key", 1, None))
            for job in jobs]
    stack.train_stack(data, jobs)  # saves after epoch 1, with each run's mixup generator
    _assert_same_runs(stacked, stack.train_units(data, jobs))


@pytest.mark.parametrize("loss, mixup, overrides", [
    ("ce", 0.0, {}),
    ("nce_rce", 0.5, {"symmetric-0.4": {"loss": {"alpha": 3.0}}}),
])
def test_a_stack_of_o2u_phase2_runs_trains_each_on_its_own_kept_samples_as_alone(loss, mixup, overrides, tmp_path):
    """O2U's phase 2: each run keeps a different number of its samples (here 1/2, 2/3, 3/4
    and 4/5 of them), so its epochs take different numbers of steps and its last batches
    differ in size; a finished run's weights and momentum stay still while the others train,
    with mixup each run draws for its own real samples only, and with a per-setting override
    each run computes its own loss."""
    method = {"pretrain": {"name": "o2u", "epochs": 1, "lr": 0.1, "cyclic_epochs": 1, "cycle": 1, "r1": 0.1,
                           "r2": 0.01, "cyclic_batch_size": 16, "forget_rate": 0.2},
              "finetune": {"loss": _params_losses()[loss], "mixup": mixup, "init": "scratch", "epochs": 2, "lr": 0.1,
                           "milestones": [1], "gamma": 0.1, "overrides": overrides}}
    jobs, data = _jobs(method, train={"batch_size": 16, "weight_decay": 1e-3})
    jobs = [loop.Job(job.run, job.labels, {"keep": np.arange(int((~job.labels.val).sum())) % (2 + r) > 0})
            for r, job in enumerate(jobs)]
    kept = [int(job.phase1["keep"].sum()) for job in jobs]
    steps = [sum(k - s > 1 for s in range(0, k, 16)) for k in kept]  # loop.train's batches of 16
    assert len(set(kept)) == 4 and len(set(steps)) > 1
    assert [len(unit) for unit in stack.units(jobs, workers=1, device="cpu")] == [4]
    assert len({job.run.method.finetune.loss.model_dump_json() for job in jobs}) == (2 if overrides else 1)
    alone, stacked = [loop.train(data, job) for job in jobs], stack.train_stack(data, jobs)
    _assert_same_runs(alone, stacked)
    jobs = [loop.Job(job.run, job.labels, job.phase1, checkpoint=Plan(tmp_path, job.run.name, "key", 1, None))
            for job in jobs]
    stack.train_stack(data, jobs)  # saves after epoch 1, each run with its own step count
    assert [job.checkpoint.load()["iteration"] for job in jobs] == steps
    _assert_same_runs(stacked, stack.train_units(data, jobs))


def test_a_stack_clips_each_runs_gradient_norm_as_that_run_alone_is_clipped():
    """APL's training setup (apl_table: gradient norm clipped, Nesterov, cosine schedule)."""
    apl = {"grad_clip": 0.5, "nesterov": True, "schedule": "cosine", "lr_min": 1.0e-3, "milestones": []}
    method = {"loss": _params_losses()["nce_rce"]}
    jobs, data = _jobs(method, train=apl)
    assert all(stack.stackable(job) for job in jobs) and jobs[0].run.group.train.grad_clip == 0.5
    stacked = stack.train_stack(data, jobs)
    _assert_same_runs([loop.train(data, job) for job in jobs], stacked)
    # the clip was at work (a norm above 0.5): unclipped, every run ends elsewhere
    unclipped = stack.train_stack(data, _jobs(method, train={**apl, "grad_clip": None})[0])
    for a, b in zip(stacked, unclipped):
        assert (a.state_dict["1.weight"] - b.state_dict["1.weight"]).abs().max() > 1e-3


# SCE's MNIST CNN (convolutions, batch norm, max pooling) on the tiny 8 x 8 images
CNN = {"name": "sce_mnist_cnn"}


# vmap warns where it falls back to a loop over the runs (an op without a batching rule)
@pytest.mark.filterwarnings("error::UserWarning")
@pytest.mark.parametrize("model", [CNN, {"name": "preact_resnet32"}], ids=["sce_mnist_cnn", "preact_resnet32"])
def test_a_stacked_network_computes_each_runs_outputs_batch_statistics_and_gradients(model):
    """One training step of StackedModel against each model alone, from the same weights:
    the logits, batch norm's running averages (each run's own batch statistics) and the
    last layer's gradients agree to rounding (the last layer: behind every max pooling,
    whose gradient may take another of two near-equal inputs: see the next test); then in
    evaluation mode the logits of one shared batch and D2L's LID features (the last linear
    layer's input). D2L's own logic is the MLP's (test_a_stack_of_d2l_runs_...): over the
    epochs it needs, a max pooling's gradient flip moves a CNN's LID estimates too much to
    compare whole trainings."""
    jobs, data = _jobs({"loss": {"name": "ce"}}, model=model)
    group = jobs[0].run.group
    models = [loop.initial_model(group, data, seed) for seed in (0, 1, 2)]
    alone = [copy.deepcopy(m).train() for m in models]
    stacked = stack.StackedModel(models).train()
    x, y = data.train_x.normalised(torch.arange(48)).view(3, 16, 1, 8, 8), data.train_y[:48].view(3, 16)
    logits = stacked(x)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(3, 16).mean(1).sum().backward()
    for r, m in enumerate(alone):
        out = m(x[r])
        torch.nn.functional.cross_entropy(out, y[r]).backward()
        assert (out - logits[r]).abs().max() <= 1e-5 * out.abs().max()
        state = stacked.state_dict_of(r)
        for k, v in m.state_dict().items():
            assert (v.float() - state[k].float()).abs().max() <= 1e-5 * v.float().abs().max() + 1e-7, k
        last = [name for name, _ in m.named_parameters()][-2:]  # the last linear layer's weight and bias
        for name, p in m.named_parameters():
            if name in last:
                g = stacked.params[stacked.names.index(name)].grad[r]
                assert (p.grad - g).abs().max() <= 1e-5 * p.grad.abs().max(), name
    stacked.eval()
    shared = data.test_x[:10]  # evaluation: one batch every run sees, each run's running averages
    features = stacked(shared, head=False)
    for r, m in enumerate(alone):
        assert (m.eval()(shared) - stacked(shared)[r]).abs().max() <= 1e-5 * m(shared).abs().max()
        captured, head = [], [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)][-1]
        hook = head.register_forward_hook(lambda mod, inputs, out: captured.append(inputs[0]))
        m(shared)
        hook.remove()
        assert (captured[0] - features[r]).abs().max() <= 1e-5 * captured[0].abs().max()


def _vector(result: loop.RunResult) -> torch.Tensor:
    return torch.cat([v.flatten().double() for v in result.state_dict.values() if v.is_floating_point()])


@pytest.mark.parametrize("method, train", [
    # Keras' L2 on the first dense layer's kernel (SCE's CIFAR-10 setting) and gradient clipping
    ({"loss": {"name": "sl", "alpha": 0.1, "beta": 1.0, "A": -4.0}}, {"l2": {"fc1": 0.01}, "grad_clip": 0.5}),
    # each run's best weights, read in evaluation mode
    ({"loss": {"name": "truncated_lq", "q": 0.7, "k": 0.1, "start_epoch": 1, "interval": 1}}, {}),
    # phase 2 from phase 1's weights and running averages, with mixup
    ({"pretrain": {"name": "joint", "alpha": 1.2, "beta": 0.8, "labels": "soft", "start_epoch": 1, "window": 1,
                   "epochs": 2, "lr": 0.1},
      "finetune": {"loss": {"name": "kl"}, "mixup": 0.5, "init": "phase1", "epochs": 2, "lr": 0.1, "milestones": [1],
                   "gamma": 0.1}}, {}),
], ids=["sl_l2_clip", "truncated_lq", "finetune_mixup_phase1"])
def test_a_stack_of_cnn_runs_trains_each_as_alone_up_to_rounding_and_max_pooling(method, train):
    """A stack of CNN runs with batch norm against the runs alone, whole trainings. A
    stacked (grouped) convolution rounds otherwise than a convolution alone, and where a
    max pooling window holds two inputs within that rounding of each other its gradient
    may go to the other one: from then on the runs differ as two runs in another summation
    order do (here up to 3e-4 of the weights' norm after 2 epochs). So the check is: each
    stacked run within 1e-3 of its run alone (relative L2 over its weights and running
    averages) and ten times closer to it than to the nearest other run (same seed, other
    labels); its losses within 1e-3, accuracies within one held-out sample. `auto` stacks
    the CNN on CUDA only, an explicit size everywhere."""
    jobs, data = _jobs(method, model=CNN, train=train)
    assert all(stack.stackable(job) for job in jobs) and len(jobs) == 4
    assert [len(u) for u in stack.units(jobs, workers=1, device="cpu")] == [1] * 4
    assert [len(u) for u in stack.units(jobs, workers=1, device="cuda")] == [4]
    assert [len(u) for u in stack.units(_jobs(method, model=CNN, train=train, stack_setting=4)[0], workers=1,
                                         device="cpu")] == [4]
    alone, stacked = [loop.train(data, job) for job in jobs], stack.train_stack(data, jobs)
    for r, (a, b) in enumerate(zip(alone, stacked, strict=True)):
        assert a.state_dict.keys() == b.state_dict.keys() and any("running_mean" in k for k in a.state_dict)
        distance = (_vector(a) - _vector(b)).norm() / _vector(a).norm()
        nearest = min((_vector(a) - _vector(o)).norm() / _vector(a).norm() for o in alone if o is not a)
        assert distance <= 1e-3 and distance <= nearest / 10, (r, distance, nearest)
        assert a.history.keys() == b.history.keys() and a.metrics.keys() == b.metrics.keys()
        for k, values in a.history.items():
            tol = 1e-3 if "loss" in k or k in ("lr", "lid", "d2l_alpha") else 1 / int(a.val_pred.shape[1])
            np.testing.assert_allclose(values, b.history[k], rtol=tol, atol=tol, err_msg=k)


def test_cnn_runs_of_different_lengths_or_with_dropout_do_not_stack():
    """O2U's kept samples of different counts: padding would reach batch norm's statistics;
    dropout: vmap would draw other masks than the run alone."""
    method = {"pretrain": {"name": "o2u", "epochs": 1, "lr": 0.1, "cyclic_epochs": 1, "cycle": 1, "r1": 0.1,
                           "r2": 0.01, "cyclic_batch_size": 16, "forget_rate": 0.2},
              "finetune": {"loss": {"name": "ce"}, "mixup": 0.0, "init": "scratch", "epochs": 2, "lr": 0.1,
                           "milestones": [1], "gamma": 0.1}}
    jobs, _ = _jobs(method, model=CNN)
    n = int((~jobs[0].labels.val).sum())
    kept = [loop.Job(job.run, job.labels, {"keep": np.arange(n) % (2 + r // 2) > 0}) for r, job in enumerate(jobs)]
    assert [len(u) for u in stack.units(kept, workers=1, device="cuda")] == [2, 2]  # equal counts stack
    dropout, _ = _jobs({"loss": {"name": "ce"}}, model={"name": "coteaching_cnn"})
    assert not any(stack.stackable(job) for job in dropout)


def test_stacks_follow_the_setting_and_take_loss_overrides_and_keep_unstackable_runs_apart():
    method = {"loss": {"name": "sl", "alpha": 0.01, "beta": 1.0, "A": -4.0}, "overrides": {"symmetric-0.4": {"beta": 2.0}}}
    jobs, _ = _jobs(method, seeds=(0, 1, 2))  # 6 runs; the 3 of symmetric-0.4 have beta 2
    assert [len(u) for u in stack.units(jobs, workers=1, device="cpu")] == [6]  # each run computes its own loss
    assert [len(u) for u in stack.units(jobs, workers=2, device="cpu")] == [3, 3]
    assert [len(u) for u in stack.units(jobs, workers=4, device="cpu")] == [2, 2, 2]  # every worker gets work
    for setting, sizes in (("off", [1] * 6), (4, [4, 2])):
        assert [len(u) for u in stack.units(_jobs(method, (0, 1, 2), setting)[0], workers=1, device="cpu")] == sizes
    # an override of truncated Lq's numbers changes its sample-weight schedule: its own stack
    lq = {"loss": {"name": "truncated_lq", "q": 0.7, "k": 0.5, "start_epoch": 1, "interval": 1},
          "overrides": {"symmetric-0.4": {"k": 0.3}}}
    names = [[job.run.name for job in unit] for unit in stack.units(_jobs(lq, seeds=(0, 1, 2))[0], workers=1, device="cpu")]
    assert names == [["symmetric-0-s0", "symmetric-0-s1", "symmetric-0-s2"],
                     ["symmetric-0.4-s0", "symmetric-0.4-s1", "symmetric-0.4-s2"]]
    forward, _ = _jobs({"loss": {"name": "forward", "matrix": "estimated", "anchor_percentile": 97.0}})
    assert not any(stack.stackable(job) for job in forward)  # an estimated matrix: a CE fit per run first
    assert [len(u) for u in stack.units(forward, workers=1, device="cpu")] == [1] * len(forward)


def test_runs_of_several_groups_and_losses_share_a_stack_and_train_as_alone():
    """A stage trains the groups of a table together (params `train_stages`): runs of plain
    losses make one stack whatever their loss (each loss computed once per step on its
    runs' rows), each run trained as alone; a matrix loss or truncated Lq keeps its own."""
    a, data = _jobs({"loss": {"name": "sl", "alpha": 0.01, "beta": 1.0, "A": -4.0}})
    b, _ = _jobs({"loss": {"name": "sl", "alpha": 0.1, "beta": 1.0, "A": -4.0}})
    ce, _ = _jobs({"loss": {"name": "ce"}})
    forward, _ = _jobs({"loss": {"name": "forward", "matrix": "realized", "anchor_percentile": 97.0}})
    lq, _ = _jobs({"loss": {"name": "truncated_lq", "q": 0.7, "k": 0.5, "start_epoch": 1, "interval": 1}})
    assert a[0].run.group is not b[0].run.group
    assert [len(u) for u in stack.units(a + ce + b + forward + lq, workers=1, device="cpu")] == [12, 4, 4]
    mixed = [a[0], ce[1], b[2], ce[3], a[1]]  # three losses, interleaved
    _assert_same_runs([loop.train(data, job) for job in mixed], stack.train_stack(data, mixed))


def test_a_stack_of_runs_with_their_own_loss_overrides_trains_each_as_alone():
    method = {"loss": {"name": "gce", "q": 0.7}, "overrides": {"symmetric-0.4": {"q": 0.3}}}
    jobs, data = _jobs(method)
    assert [len(unit) for unit in stack.units(jobs, workers=1, device="cpu")] == [4]  # q 0.7 and q 0.3 in one stack
    alone = [loop.train(data, job) for job in jobs]
    stacked = [r for unit in stack.units(jobs, workers=1, device="cpu") for r in stack.train_units(data, unit)]
    _assert_same_runs(alone, stacked)


def test_a_stack_saves_each_runs_checkpoint_and_resumes_from_them(tmp_path):
    jobs, data = _jobs({"loss": _params_losses()["sl"]})
    jobs = [loop.Job(job.run, job.labels, checkpoint=Plan(tmp_path, job.run.name, "key", 1, None)) for job in jobs]
    stacked = stack.train_stack(data, jobs)  # 2 epochs: saves after epoch 1
    saved = [job.checkpoint.load() for job in jobs]
    assert [s["epoch"] for s in saved] == [1] * len(jobs)
    # loop.train's own format: its state_dict keys and optimizer buffers per parameter
    model = loop.initial_model(jobs[0].run.group, data, 0)
    assert list(saved[0]["model"]) == list(model.state_dict())
    assert [b.shape for b in saved[0]["optimizer"]] == [p.shape for p in model.parameters()]
    resumed = stack.train_units(data, jobs)  # all saved at epoch 1: the stack resumes, exactly
    for a, b in zip(stacked, resumed):
        assert a.history == b.history and np.array_equal(a.test_pred, b.test_pred)
        assert all(torch.equal(w, b.state_dict[k]) for k, w in a.state_dict.items())
    jobs[0].checkpoint.path.unlink()  # saved epochs differ: each run resumes (or starts) alone
    _assert_same_runs(stacked, stack.train_units(data, jobs))


def test_stack_off_written_in_yaml_means_off():
    """YAML 1.1 reads `stack: off` as false (PyYAML, and `dvc exp run -S train.stack=off`)."""
    from noisylabels.spec.train import Train

    main = yaml.safe_load((REPO / "params.yaml").read_text())["train"]
    assert yaml.safe_load("stack: off") == {"stack": False}
    assert Train(**{**main, **yaml.safe_load("stack: off")}).stack == "off"
    assert Train(**{**main, **yaml.safe_load("stack: 3")}).stack == 3


@pytest.mark.slow
def test_compiled_runs_alone_and_stacked_train_as_eager_ones():
    """train.compile on the CPU path (torch.compile's inductor builds C++ kernels here): a
    compiled run, alone and stacked, ends where the eager run ends, up to rounding, with
    the same state_dict names; truncated Lq copies a compiled model for its best weights."""
    for method in ({"loss": _params_losses()["sl"]},
                   {"loss": {"name": "truncated_lq", "q": 0.7, "k": 0.1, "start_epoch": 1, "interval": 1}}):
        eager_jobs, data = _jobs(method)
        jobs, _ = _jobs(method, train={"compile": "default"})
        assert jobs[0].run.group.train.compile == "default"
        eager = [loop.train(data, job) for job in eager_jobs]
        torch._dynamo.reset()
        _assert_same_runs(eager, [loop.train(data, job) for job in jobs])
        _assert_same_runs(eager, stack.train_stack(data, jobs))
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # the MLP's and the stack's


def test_bf16_runs_the_forward_passes_in_bfloat16_and_keeps_float32_weights():
    """train.precision on the CPU path (autocast works there too): alone and stacked, every
    module's output is bfloat16 with bf16 and float32 with fp32; weights stay float32; bf16
    changes the results, within bf16 rounding of the fp32 ones."""
    dtypes = set()
    layers = (torch.nn.Linear, stack.StackedMLP)  # not a Flatten of the images: that stays float32
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, inputs, output: dtypes.add(output.dtype) if isinstance(module, layers) else None)
    try:
        results = {}
        for precision in ("fp32", "bf16"):
            jobs, data = _jobs({"loss": _params_losses()["sl"]}, precision=precision)
            dtypes.clear()
            results[precision] = [loop.train(data, job) for job in jobs]
            alone = set(dtypes)
            dtypes.clear()
            stacked = stack.train_stack(data, jobs)
            assert alone == set(dtypes) == {torch.float32 if precision == "fp32" else torch.bfloat16}
            for a, b in zip(results[precision], stacked):
                for k, w in a.state_dict.items():
                    assert w.dtype == b.state_dict[k].dtype == torch.float32
                    assert (w - b.state_dict[k]).abs().max() <= (RTOL if precision == "fp32" else 0.05) * w.abs().max()
    finally:
        hook.remove()
    for a, b in zip(results["fp32"], results["bf16"]):
        gap = max(float((w - b.state_dict[k]).abs().max() / w.abs().max()) for k, w in a.state_dict.items())
        assert 0 < gap < 0.05
