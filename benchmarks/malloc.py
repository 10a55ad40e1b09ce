"""Benchmark: glibc's malloc keeping freed memory (workers.keep_freed_memory, what every
training worker sets) against glibc's default, for the per-run engine.

    python benchmarks/malloc.py [--rounds 4] [--networks sce_mnist_cnn,sce_cifar10_cnn]

The setting is process-wide and cannot be undone, so every measurement is a fresh process
(this script with --child), default and kept alternating round by round so that both share
the machine's load. A child trains the runs of a network of benchmarks/engine.py (its
NETWORKS entry) one by one with loop.train on one thread and reports the seconds, the minor
page faults and the peak memory of that training; the summary prints each variant's best
and median seconds per network and the ratio of the medians. Linux with glibc only.
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import click


def _child(variant: str, network: str) -> None:
    import torch
    from engine import NETWORKS, _dataset, _jobs, _per_run  # benchmarks/engine.py, beside this file
    from noisylabels.engine import loop, workers

    if variant == "kept" and not workers.keep_freed_memory():
        sys.exit("glibc refused the malloc settings (or this is not glibc)")
    torch.set_num_threads(1)
    dataset, model, n, runs, epochs, batch = NETWORKS[network]
    ds = _dataset(dataset, n)
    group, jobs = _jobs(ds, model, runs, epochs, batch, "cpu", "fp32", "none", "off")
    data = loop.to_tensors(ds, torch.device("cpu"), group.train)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    _per_run(data, jobs)
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": seconds, "faults": after.ru_minflt - before.ru_minflt,
                      "peak_mb": after.ru_maxrss / 1024}))


@click.command()
@click.option("--rounds", default=4, show_default=True, help="fresh processes per variant and network")
@click.option("--networks", default="sce_mnist_cnn,sce_cifar10_cnn", show_default=True)
@click.option("--child", nargs=2, hidden=True, help="VARIANT NETWORK: one measurement (internal)")
def main(rounds, networks, child):
    if child:
        return _child(*child)
    print(f"load average {os.getloadavg()[0]:.2f}; {rounds} alternating rounds of fresh processes")
    for network in networks.split(","):
        seen = {"default": [], "kept": []}
        for _ in range(rounds):
            for variant in seen:
                out = subprocess.run([sys.executable, __file__, "--child", variant, network], check=True,
                                     capture_output=True, text=True).stdout
                seen[variant].append(json.loads(out.strip().splitlines()[-1]))
        print(f"\n{network}: the per-run engine, runs one by one")
        for variant, results in seen.items():
            secs = [r["seconds"] for r in results]
            print(f"  {variant:8s} best {min(secs):6.2f} s  median {statistics.median(secs):6.2f} s  "
                  f"page faults {statistics.median(r['faults'] for r in results):9.0f}  "
                  f"peak {max(r['peak_mb'] for r in results):6.0f} MB  ({', '.join(f'{s:.2f}' for s in secs)})")
        ratio = statistics.median(r["seconds"] for r in seen["default"]) / statistics.median(
            r["seconds"] for r in seen["kept"])
        print(f"  kept: x{ratio:.2f} as fast as default (medians)")
    print(f"\nload average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
