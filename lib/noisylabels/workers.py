"""A group's jobs (loop.Job) trained side by side in worker processes.

Runs are independent, so `processes` workers (each with `threads` torch threads and its own
copy of the data set on the device) train them; results come back in job order and are
identical for any number of workers. Used by runner.train_and_log.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import torch

from noisylabels import loop

_worker = {}  # per worker process: the data set on its device


def _init_worker(dataset, device_name: str, threads: int, train) -> None:
    torch.set_num_threads(threads)
    _worker["data"] = loop.to_tensors(dataset, torch.device(device_name), train)


def _train(job: loop.Job) -> loop.RunResult:
    return loop.train(_worker["data"], job)


class Workers:
    """The processes that train a group's jobs (a context manager). The workers start at
    once, while the caller sets up MLflow. With one process, jobs run here."""

    def __init__(self, dataset, device, processes: int, threads: int, train):
        self.pool = None
        if processes > 1:
            # fork on the CPU: a worker starts in milliseconds with torch already imported
            # (spawn costs seconds of imports per worker and group); CUDA needs spawn. The
            # parent has run no torch op yet, so no thread pool is forked half-initialised.
            context = multiprocessing.get_context("fork" if torch.device(device).type == "cpu" else "spawn")
            self.pool = ProcessPoolExecutor(processes, mp_context=context,
                                            initializer=_init_worker, initargs=(dataset, str(device), threads, train))
            for _ in range(processes):  # each submit starts one more worker
                self.pool.submit(int)
        else:
            _init_worker(dataset, str(device), threads, train)

    def map(self, jobs: list[loop.Job]):
        """The jobs' results, in job order, as each is ready."""
        return self.pool.map(_train, jobs) if self.pool else map(_train, jobs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.pool:
            self.pool.shutdown(cancel_futures=True)
