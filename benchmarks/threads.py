"""Benchmark: how to spend two CPU cores on the many small runs of a group.

    python benchmarks/threads.py [--epochs 40] [--runs 4]

Trains the default digits run (params.yaml's main experiment model, loss and schedule) in
three ways and prints runs per second and the ratio to the first:
  1. one process, 1 torch thread, runs one after another (the pretrain stage's default);
  2. one process, 2 torch threads;
  3. two processes with 1 thread each, splitting the runs.
All three are measured in this one invocation, so they share the machine's load; each
process first trains one warm-up epoch, and only the training loops are timed.
"""
import multiprocessing as mp
import time

import click
import numpy as np
import torch

from noisylabels import engine, noise
from noisylabels.config import load_params, resolve_group
from noisylabels.data import sources
from noisylabels.data.store import Dataset


def _dataset():
    a = sources.fetch("digits", {"test_fraction": 0.3, "split_seed": 0}, "unused")
    return Dataset("digits", a.classes, {}, a.train_images, a.train_labels, a.test_images, a.test_labels)


def _train(seeds, threads, epochs, out=None):
    """Train one run per seed; return (or put on `out`) the seconds spent in training only."""
    torch.set_num_threads(threads)
    g = resolve_group(load_params("params.yaml"), "main")
    ds = _dataset()
    data = engine.to_tensors(ds, torch.device("cpu"))
    labels, holdout, _ = noise.generate(ds, g.settings, [0, *seeds], g.draw, g.val_fraction)
    cfg = {**g.train, "epochs": epochs}
    engine.train_run(data, labels[0, 0], holdout[0], 0, g.model, g.loss, {**cfg, "epochs": 1}, ds.num_classes)  # warm-up
    t = time.perf_counter()
    for j, seed in enumerate(seeds, start=1):
        engine.train_run(data, labels[0, j], holdout[j], seed, g.model, g.loss, cfg, ds.num_classes)
    seconds = time.perf_counter() - t
    if out is not None:
        out.put(seconds)
    return seconds


@click.command()
@click.option("--epochs", default=40, show_default=True)
@click.option("--runs", default=4, show_default=True, help="runs per measurement (even)")
def main(epochs, runs):
    seeds = list(range(1, runs + 1))
    results = [("1 process x 1 thread", _train(seeds, 1, epochs)),
               ("1 process x 2 threads", _train(seeds, 2, epochs))]
    ctx = mp.get_context("spawn")  # each worker imports torch afresh, as a stage process would
    out = ctx.Queue()
    t = time.perf_counter()
    procs = [ctx.Process(target=_train, args=(seeds[i::2], 1, epochs, out)) for i in range(2)]
    for p in procs:
        p.start()
    training = max(out.get() for _ in procs)  # the two workers train side by side
    for p in procs:
        p.join()
    results.append(("2 processes x 1 thread", training))
    base = results[0][1]
    print(f"{runs} runs of {epochs} epochs each (digits, main experiment settings); training time only")
    for label, seconds in results:
        print(f"{label:24s} {seconds:7.2f} s  {runs / seconds:6.2f} runs/s  speed-up x{base / seconds:.2f}")
    print(f"2 processes: {time.perf_counter() - t - training:.2f} s of start-up (imports, data) on top")


if __name__ == "__main__":
    main()
