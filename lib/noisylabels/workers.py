"""A group's jobs (loop.Job) trained side by side in worker processes.

Runs are independent, so `processes` workers (each with `threads` torch threads and its own
copy of the data set on the device) train them; results come back in job order and are
identical for any number of workers. Used by runner.train_stage.

Workers never outlive the stage: leaving the `with` block on an error or a signal
terminates them at once, and on Linux the kernel kills them if the stage process dies,
even by SIGKILL (prctl PR_SET_PDEATHSIG). They ignore Ctrl-C, which the stage handles.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys

import torch

from noisylabels import loop

_worker = {}  # per worker process: the data set on its device
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# The stage's handlers for these raise cli.Stopped; a worker must not inherit them. They are
# blocked while the workers start and unblocked in each worker after its handlers are reset.
_STAGE_SIGNALS = {signal.SIGTERM, signal.SIGHUP}


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _init_worker(dataset, device_name: str, threads: int, train, parent_pid: int | None) -> None:
    if parent_pid is not None:  # a worker process, not the stage itself
        _die_with_parent(parent_pid)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for s in _STAGE_SIGNALS:  # Pool.terminate's SIGTERM ends a worker quietly
            signal.signal(s, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STAGE_SIGNALS)
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
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STAGE_SIGNALS)
            try:
                self.pool = context.Pool(processes, initializer=_init_worker,
                                         initargs=(dataset, str(device), threads, train, os.getpid()))
            finally:  # a signal that came meanwhile reaches the stage now
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        else:
            _init_worker(dataset, str(device), threads, train, None)

    def map(self, jobs: list[loop.Job]):
        """The jobs' results, in job order, as each is ready."""
        return self.pool.imap(_train, jobs) if self.pool else map(_train, jobs)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if self.pool:
            if exc_type is None:
                self.pool.close()
            else:  # an error or a signal: the other runs stop now
                self.pool.terminate()
            self.pool.join()
