"""Benchmark: how to spend two CPU cores on the many small runs of a group.

    python benchmarks/threads.py [--epochs 40] [--runs 16]

Trains the default digits run (params.yaml's main experiment model, loss and schedule)
through workers.Workers, as the pretrain stage does, in three ways, and prints the wall time,
runs per second and the ratio to the first:
  1. one process, 1 torch thread (`--workers 1`);
  2. one process, 2 torch threads (`--workers 1 --threads 2`);
  3. two forked worker processes with 1 thread each (the stage's default, `--workers 2`).
All three are measured in this one invocation, so they share the machine's load. Wall
time includes starting the workers; the two-process case runs first, so it forks before
this process has run any torch op, as in the stage.
"""
import time

import click
import torch

from noisylabels.engine import loop, noise
from noisylabels.data import sources
from noisylabels.data.store import Dataset
from noisylabels.resolve import load_params, resolve_group
from noisylabels.engine.workers import Workers


def digits_jobs(runs: int, epochs: int):
    """The main experiment's digits runs with `runs` seeds and `epochs` epochs: data set, group, jobs."""
    a = sources.fetch("digits", {"test_fraction": 0.3, "split_seed": 0}, "unused")
    ds = Dataset("digits", a.classes, {}, a.train_images, a.train_labels, a.test_images, a.test_labels)
    params = load_params("params.yaml")
    train = params["train"]
    params["noise"]["seeds"] = list(range(runs))
    train.update(epochs=epochs, milestones=[m for m in train["milestones"] if m < epochs])
    g = resolve_group(params, "main")
    noisy, val, records = noise.generate(ds, g.settings, g.seeds, g.draw, g.val_fraction)
    return ds, g, loop.group_jobs(g, noise.NoisyLabels(noisy, val, {"seeds": list(g.seeds), "runs": records}))


def _seconds(ds, group, jobs, processes: int, threads: int) -> float:
    t = time.perf_counter()
    with Workers(ds, torch.device("cpu"), processes, threads, group.train) as workers:
        list(workers.map(jobs))
    return time.perf_counter() - t


@click.command()
@click.option("--epochs", default=40, show_default=True)
@click.option("--runs", default=16, show_default=True, help="runs per measurement (a group has 9 to 24)")
def main(epochs, runs):
    ds, g, jobs = digits_jobs(runs, epochs)
    two_processes = _seconds(ds, g, jobs, 2, 1)
    _seconds(ds, g, jobs[:1], 1, 1)  # warm-up of this process's first torch ops, not timed
    results = [("1 process x 1 thread", _seconds(ds, g, jobs, 1, 1)),
               ("1 process x 2 threads", _seconds(ds, g, jobs, 1, 2)),
               ("2 processes x 1 thread", two_processes)]
    base = results[0][1]
    print(f"{runs} runs of {epochs} epochs each (digits, main experiment settings); wall time")
    for label, seconds in results:
        print(f"{label:24s} {seconds:7.2f} s  {runs / seconds:6.2f} runs/s  speed-up x{base / seconds:.2f}")


if __name__ == "__main__":
    main()
