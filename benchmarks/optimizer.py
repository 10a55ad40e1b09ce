"""Benchmark: optim.SGD against torch.optim.SGD for the default digits run.

    python benchmarks/optimizer.py [--runs 3]

Each optimizer trains the main experiment's run in a fresh Python process (as a stage's
forked worker starts cold), `--runs` times in a row; prints the first run (which pays
one-off costs: torch.optim's first step imports torch._dynamo) and the mean of the others,
and the ratios. Both are measured in this one invocation, alternating, so they share the
machine's load.
"""
import json
import subprocess
import sys

import click

CHILD = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from noisylabels.engine import loop, noise
from noisylabels.resolve import load_params, resolve_group
from noisylabels.data import sources
from noisylabels.data.store import Dataset

if sys.argv[1] == "torch.optim":  # the same update through torch.optim.SGD
    class TorchSGD:
        @classmethod
        def for_train(cls, model, train):  # the default run has no l2
            return cls(model, train)
        def __init__(self, model, train):
            self.opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=train.momentum,
                                       weight_decay=train.weight_decay)
        def zero_grad(self):
            self.opt.zero_grad(set_to_none=True)
        def step(self, lr):
            for group in self.opt.param_groups:
                group["lr"] = lr
            self.opt.step()
    loop.SGD = TorchSGD
a = sources.fetch("digits", {"test_fraction": 0.3, "split_seed": 0}, "unused")
ds = Dataset("digits", a.classes, {}, a.train_images, a.train_labels, a.test_images, a.test_labels)
params = load_params("params.yaml")
params["noise"]["seeds"] = list(range(int(sys.argv[2])))
g = resolve_group(params, "main")
data = loop.to_tensors(ds, torch.device("cpu"), g.train)
val = np.zeros(len(ds.train_labels), dtype=bool)
val[::10] = True
times = []
for run in g.runs:
    t = time.perf_counter()
    loop.train(data, loop.Job(run, noise.RunLabels(ds.train_labels, val, np.eye(10), 0.0)))
    times.append(time.perf_counter() - t)
print(json.dumps(times))
"""


def _times(kind: str, runs: int) -> list[float]:
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(runs)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@click.command()
@click.option("--runs", default=3, show_default=True, help="runs per process (>= 2)")
def main(runs):
    results = {"torch.optim.SGD": _times("torch.optim", runs), "optim.SGD": _times("optim", runs)}
    base_first, base_rest = None, None
    print(f"the default digits run ({runs} per fresh process), wall seconds")
    for label, times in results.items():
        first, rest = times[0], sum(times[1:]) / (len(times) - 1)
        base_first, base_rest = base_first or first, base_rest or rest
        print(f"{label:18s} first run {first:6.2f} s (x{base_first / first:.2f})   "
              f"later runs {rest:6.2f} s (x{base_rest / rest:.2f})")


if __name__ == "__main__":
    main()
