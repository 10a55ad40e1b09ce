"""Benchmark: the Ray executor's overhead against the local one, on a group of small runs.

    python benchmarks/ray_executor.py [--runs 12] [--epochs 20] [--repeats 2]

Trains the main experiment's digits runs (benchmarks/threads.py's jobs) as the pretrain
stage does, alternately (local, ray, local, ray, ...) so that both share the machine's
load: the local executor with 2 forked worker processes, and `--executor ray` on a Ray
cluster with 2 CPUs (one task per run, 1 thread each). RAY_ADDRESS names the cluster; if
it is unset, a one-node cluster is started here (`ray start --head`) and stopped at the
end. Wall time includes what a stage pays: starting the worker processes (the local
executor forks; Ray starts fresh processes for every connecting stage, each importing
torch), sending the data set and jobs, and collecting the results. Prints each
measurement, the medians, and the overhead per run.
"""
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch

from noisylabels.engine.workers import start_workers
from threads import digits_jobs


def _seconds(ds, group, jobs, executor: str) -> tuple[float, list]:
    t = time.perf_counter()
    with start_workers(ds, torch.device("cpu"), group.train, len(jobs), executor, 2, 1, 1.0) as workers:
        results = list(workers.map(jobs))
    return time.perf_counter() - t, results


def _start_cluster() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
                    f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, capture_output=True)
    return f"127.0.0.1:{port}"


@click.command()
@click.option("--runs", default=12, show_default=True, help="runs in the group (a group has 6 to 24)")
@click.option("--epochs", default=20, show_default=True)
@click.option("--repeats", default=2, show_default=True, help="measurements of each executor")
def main(runs, epochs, repeats):
    started_here = not os.environ.get("RAY_ADDRESS")
    if started_here:
        os.environ["RAY_ADDRESS"] = _start_cluster()
    try:
        ds, g, jobs = digits_jobs(runs, epochs)
        times = {"local": [], "ray": []}
        for _ in range(repeats):
            for executor in times:
                seconds, results = _seconds(ds, g, jobs, executor)
                times[executor].append(seconds)
                if executor == "local":
                    reference = results
                assert all(np.array_equal(a.test_pred, b.test_pred) for a, b in zip(reference, results))
                print(f"{executor:5s} {seconds:7.2f} s")
    finally:
        if started_here:
            subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True)
    local, ray = statistics.median(times["local"]), statistics.median(times["ray"])
    load = os.getloadavg()[0]
    print(f"{runs} runs of {epochs} epochs (digits, main experiment settings), 2 CPUs each way, "
          f"load average {load:.2f} at the end; identical predictions")
    print(f"median wall time: local {local:.2f} s, ray {ray:.2f} s, ratio ray/local x{ray / local:.2f}; "
          f"Ray overhead {(ray - local) / runs * 1000:.0f} ms per run ({ray - local:.2f} s per stage)")


if __name__ == "__main__":
    main()
