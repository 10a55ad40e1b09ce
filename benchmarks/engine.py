"""Benchmark: the training engine against an official-style loop, and stacked runs against
runs trained one by one.

    python benchmarks/engine.py [--rounds 2] [--device cpu] [--precisions fp32,bf16]
                                [--stack-sizes 4,12] [--mlp-runs 12] [--compile reduce-overhead]

For three networks (the digits MLP of the default pipeline, SCE's MNIST CNN and SCE's
CIFAR-10 CNN; the CNNs on random images of their data set's shape), in this one process and
interleaved round by round (A, B, C, A, B, C, ...), so that all share the machine's load:
  official  the papers' style: a torch DataLoader with a per-sample transform (normalise),
            torch.optim.SGD, F.cross_entropy, NCHW weights (the engine's are channels_last:
            loop.MEMORY_FORMAT), one run at a time; it predicts what the engine
            predicts (the test set and the held-out split each epoch, the fitted samples once
            at the end), so that both do the same work;
  per-run   loop.train, one run at a time (what `train.stack: off` trains);
  stacked   stack.train_units over stack.units, what one worker trains: all runs as one
            model (`train.stack` = the number of runs), or with --stack-sizes stacks of at
            most N runs (`train.stack: N`), a row per size (--mlp-runs sets the MLP's runs).
            Each network's line says whether `train.stack: auto` stacks it on this device.
With several --precisions (train.precision), the engine and stacked rows are repeated per
precision (the official loop stays float32); with --compile the engine rows run under
torch.compile in that mode (train.compile; the first round includes compiling, so give two
or more). benchmarks/gpu_check.sh runs it on a GPU with a stack-size sweep.
Each trains the same runs (CE, the main experiment's schedule, one thread) and prints, from
its best round: training images per second (all runs together), seconds per epoch of one
run, its ratio to the others, and its share of a matmul peak measured in this process (the
FLOPs of a training step counted by torch's FlopCounterMode). The load average is printed
first and last: compare ratios, not absolute numbers, across machines. The process keeps
freed memory as every training worker does (workers.keep_freed_memory; benchmarks/malloc.py
measures it), so the official loop has it too.
"""
import functools
import os
import time

import click
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset as TorchDataset
from torch.utils.flop_counter import FlopCounterMode

from noisylabels.engine import loop, models, noise, stack, workers
from noisylabels.data import sources
from noisylabels.data.store import Dataset
from noisylabels.resolve import load_params, resolve_group

# network -> (data set name, model section, training images, runs, epochs, batch size): the
# digits MLP as a default group's stack, the CNNs at SCE's batch size, 4 runs (a stack) of
# 512 or 256 images; a round takes seconds on this CPU
NETWORKS = {
    "digits_mlp": ("digits", None, None, 12, 5, 64),
    "sce_mnist_cnn": ("mnist", {"name": "sce_mnist_cnn"}, 512, 4, 2, 128),
    "sce_cifar10_cnn": ("cifar10", {"name": "sce_cifar10_cnn"}, 256, 4, 1, 128),
}
SHAPES = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}


def _dataset(name: str, n: int | None) -> Dataset:
    if name == "digits":
        a = sources.fetch("digits", {"test_fraction": 0.3, "split_seed": 0}, "unused")
        return Dataset("digits", a.classes, {}, a.train_images, a.train_labels, a.test_images, a.test_labels)
    rng = np.random.default_rng(0)
    shape = SHAPES[name]
    return Dataset(name, [str(c) for c in range(10)], {}, rng.integers(0, 256, (n, *shape), dtype=np.uint8),
                   np.arange(n) % 10, rng.integers(0, 256, (n // 4, *shape), dtype=np.uint8), np.arange(n // 4) % 10)


def _jobs(ds: Dataset, model: dict | None, runs: int, epochs: int, batch: int, device: str, precision: str,
          compile_mode: str, stack_setting: str | int = "auto"):
    """`runs` seeds of the main experiment with CE on `ds` (model: its section, None: params')."""
    params = load_params("params.yaml")
    params["data"]["name"] = ds.name
    params["datasets"].setdefault(ds.name, {})
    params["download"] = [ds.name]
    params["noise"]["seeds"] = list(range(runs))
    params["loss"] = {"name": "ce"}
    if model:
        params["model"] = model
    params["train"].update(epochs=epochs, milestones=[], batch_size=batch, device=device, stack=stack_setting,
                           precision=precision, compile=compile_mode)
    g = resolve_group(params, "main")
    noisy, val, records = noise.generate(ds, g.settings, g.seeds, g.draw, g.val_fraction)
    return g, loop.group_jobs(g, noise.NoisyLabels(noisy, val, {"seeds": list(g.seeds), "runs": records}))


class _PerSample(TorchDataset):
    """The official loops' dataset: one uint8 HWC image at a time, normalised in __getitem__."""

    def __init__(self, images, labels, mean, std):
        self.images, self.labels, self.mean, self.std = images, labels, mean, std

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = torch.from_numpy(self.images[i]).permute(2, 0, 1).float().div(255)
        return (x - self.mean) / self.std, int(self.labels[i])


def _official(ds: Dataset, group, jobs, data: loop.Tensors, device) -> None:
    train = group.train
    mean, std = data.train_x.mean[0].cpu(), data.train_x.std[0].cpu()
    def predict(model, images, labels):
        model.eval()
        with torch.no_grad():
            return [model(x.to(device)).argmax(1).cpu() for x, _ in
                    DataLoader(_PerSample(images, labels, mean, std), batch_size=train.batch_size)]

    for job in jobs:
        fit, val = np.flatnonzero(~job.labels.val), np.flatnonzero(job.labels.val)
        torch.manual_seed(job.run.seed)
        model = models.build_model(group.model, data.train_x.shape[1:], ds.num_classes).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
        loader = DataLoader(_PerSample(ds.train_images[fit], job.labels.noisy[fit], mean, std),
                            batch_size=train.batch_size, shuffle=True, drop_last=False)
        for _ in range(train.epochs):
            model.train()
            for x, y in loader:
                if len(y) < 2:
                    continue
                loss = F.cross_entropy(model(x.to(device)), y.to(device))
                opt.zero_grad()
                loss.backward()
                opt.step()
            predict(model, ds.test_images, ds.test_labels)
            predict(model, ds.train_images[val], job.labels.noisy[val])
        predict(model, ds.train_images[fit], job.labels.noisy[fit])


def _per_run(data: loop.Tensors, jobs) -> list:
    return [loop.train(data, job) for job in jobs]


def _stacked(data: loop.Tensors, jobs, device: str) -> list:
    """What one worker trains: the jobs cut by train.stack (stack.units), a unit at a time."""
    return [r for unit in stack.units(jobs, 1, device) for r in stack.train_units(data, unit)]


def _step_flops(group, data: loop.Tensors, batch: int) -> float:
    """FLOPs of one training step (forward and backward) per image, counted in eager mode."""
    model = models.build_model(group.model, data.train_x.shape[1:], data.num_classes).to(data.train_x.device)
    x = data.train_x[torch.arange(batch, device=data.train_x.device)]
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), data.train_y[:batch]).backward()
    return counter.get_total_flops() / batch


def _matmul_peak(device) -> float:
    """FLOP/s of a 1024 x 1024 float32 matmul in this process (best of 5)."""
    a, b = torch.randn(1024, 1024, device=device), torch.randn(1024, 1024, device=device)
    best = float("inf")
    for _ in range(5):
        _sync(device)
        t = time.perf_counter()
        for _ in range(10):
            a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 10 * 2 * 1024 ** 3 / best


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@click.command()
@click.option("--rounds", default=2, show_default=True, help="interleaved rounds; each engine's best is reported")
@click.option("--device", default="cpu", show_default=True)
@click.option("--networks", default=",".join(NETWORKS), show_default=True)
@click.option("--precisions", default="fp32", show_default=True, help="train.precision values, comma-separated")
@click.option("--stack-sizes", default="auto", show_default=True,
              help="train.stack values for the stacked rows, comma-separated: auto (one stack) or N")
@click.option("--mlp-runs", default=NETWORKS["digits_mlp"][3], show_default=True, help="runs of the digits MLP")
@click.option("--compile", "compile_mode", default="none", show_default=True,
              type=click.Choice(["none", "default", "reduce-overhead", "max-autotune"]),
              help="train.compile of the engine rows")
def main(rounds, device, networks, precisions, stack_sizes, mlp_runs, compile_mode):
    torch.set_num_threads(1)
    workers.keep_freed_memory()  # as a training worker
    print(f"load average {os.getloadavg()[0]:.2f}; device {device}; one torch thread; best of {rounds} interleaved rounds;"
          f" engine compile: {compile_mode}")
    peak = _matmul_peak(device)
    print(f"matmul peak here: {peak / 1e9:.1f} GFLOP/s")
    for name in networks.split(","):
        dataset, model, n, runs, epochs, batch = NETWORKS[name]
        runs = mlp_runs if name == "digits_mlp" else runs
        ds = _dataset(dataset, n)
        engines, several = {}, "," in precisions
        for precision in precisions.split(","):
            group, jobs = _jobs(ds, model, runs, epochs, batch, device, precision, compile_mode)
            data = loop.to_tensors(ds, torch.device(device), group.train)
            if not engines:  # the official loop trains in float32 whatever the precision
                engines["official"] = functools.partial(_official, ds, group, jobs, data, device)
            engines[f"per-run {precision}" if several else "per-run"] = functools.partial(_per_run, data, jobs)
            if not all(stack.stackable(job) for job in jobs):
                continue
            for size in stack_sizes.split(","):
                setting = runs if size == "auto" else int(size)
                _, stacked_jobs = _jobs(ds, model, runs, epochs, batch, device, precision, compile_mode, setting)
                label = " ".join(["stacked", *([precision] if several else []), *([] if size == "auto" else [f"<={size}"])])
                engines[label] = functools.partial(_stacked, data, stacked_jobs, device)
        images = sum(int((~j.labels.val).sum()) for j in jobs) * epochs
        best = {k: float("inf") for k in engines}
        for _ in range(rounds):
            for key, fn in engines.items():
                _sync(device)
                t = time.perf_counter()
                fn()
                _sync(device)
                best[key] = min(best[key], time.perf_counter() - t)
        flops = _step_flops(group, data, group.train.batch_size)
        auto = len(stack.units(jobs, 1, device)[0]) > 1  # jobs: train.stack auto
        print(f"\n{name}: {runs} runs x {epochs} epoch(s) x {images // (runs * epochs)} images, "
              f"batch {group.train.batch_size}, {flops / 1e6:.2f} MFLOP per training image; "
              f"train.stack auto {'stacks' if auto else 'does not stack'} it on {device}")
        for key, seconds in best.items():
            rate = images / seconds
            ratios = "  ".join(f"x{best[other] / seconds:.2f} vs {other}" for other in best if other != key)
            print(f"  {key:18s} {rate:9.0f} img/s  {seconds / (runs * epochs):7.3f} s/epoch/run  "
                  f"{100 * rate * flops / peak:5.1f}% of peak  {ratios}")
    print(f"\nload average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
