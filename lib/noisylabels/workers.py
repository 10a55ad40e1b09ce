"""A group's jobs (loop.Job) trained side by side: in worker processes on this machine
(`Workers`, the local executor) or as tasks of a Ray cluster (`RayWorkers`, `--executor ray`).

Runs are independent, so `processes` workers (each with `threads` torch threads and its own
copy of the data set on the device) train them; results come back in job order and are
identical for any number of workers and either executor. On a machine with several GPUs and
device `cuda`, worker i trains on cuda:(i mod the GPU count), so `--workers 8` on 4 GPUs puts
two workers on each. Used by runner.train_stage.

Workers never outlive the stage: leaving the `with` block on an error or a signal
terminates them at once, and on Linux the kernel kills them if the stage process dies,
even by SIGKILL (prctl PR_SET_PDEATHSIG). They ignore Ctrl-C, which the stage handles.
"""
from __future__ import annotations

import copy
import ctypes
import functools
import multiprocessing
import os
import signal
import socket
import sys

import torch

from noisylabels import loop
from noisylabels.errors import ExecutorError

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


def worker_device(device_name: str, worker: int, gpus: int) -> str:
    """The device of the worker numbered `worker` (from 0): plain `cuda` spreads the workers
    over the `gpus` visible GPUs; any other name (cpu, cuda:1) is used as it is."""
    return f"cuda:{worker % gpus}" if device_name == "cuda" and gpus > 1 else device_name


def _init_worker(dataset, device_name: str, threads: int, train, parent_pid: int | None) -> None:
    if parent_pid is not None:  # a worker process, not the stage itself
        # Pool numbers its processes from 1, in start order
        worker = multiprocessing.current_process()._identity[0] - 1
        device_name = worker_device(device_name, worker, torch.cuda.device_count() if device_name == "cuda" else 1)
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


def start_workers(dataset, device, train, runs: int, executor: str, processes: int, threads: int, gpus_per_run: float):
    """The started workers for `runs` jobs of a group: Workers (executor local) or RayWorkers."""
    if executor == "ray":
        return RayWorkers(dataset, str(device), threads, train, gpus_per_run)
    return Workers(dataset, device, max(1, min(processes, runs)), threads, train)


@functools.cache
def _ray_task():
    """`_train` as a Ray task (defined on first use: importing ray costs seconds). Ray
    resolves the data set's object reference before the task runs, once per task; the
    tensors are made once per Ray worker process and kept for its later tasks."""
    import ray

    @ray.remote(max_retries=3)  # a task lost with its node (or worker process) runs again
    def train_job(dataset, dataset_key: str, device_name: str, threads: int, train, job: loop.Job) -> loop.RunResult:
        if _worker.get("key") != (dataset_key, device_name, threads):
            # Ray's arrays are read-only views of its object store; torch wants writable ones
            _init_worker(copy.deepcopy(dataset), device_name, threads, train, None)
            _worker["key"] = (dataset_key, device_name, threads)
        return _train(job)

    return train_job


def _check_reachable(address: str) -> None:
    """A host:port (or ray://host:port) that accepts no connection fails here in seconds:
    ray.init would wait for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        return  # "auto", "local": ray.init says itself what is wrong
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise ExecutorError(f"RAY_ADDRESS={address!r}: no Ray cluster reachable there ({e.strerror or e}); "
                            "start one (ray start --head) or use --executor local") from None


class RayWorkers:
    """The group's jobs as tasks of the Ray cluster at $RAY_ADDRESS (a context manager with
    Workers' `map`). Each task asks for `threads` CPUs and, on CUDA, `gpus` GPUs (a fraction
    shares one: 0.25 puts four runs on a GPU); Ray sets the task's visible GPU, so device
    `cuda` is the one it was given. The data set goes to Ray's object store once. The tasks
    write their checkpoints to the stage's checkpoint folder, so a task retried on another
    node resumes from it only when that folder is on storage both nodes share."""

    def __init__(self, dataset, device: str, threads: int, train, gpus: float):
        address = os.environ.get("RAY_ADDRESS")
        if not address:
            raise ExecutorError("--executor ray: RAY_ADDRESS is not set; set it to the cluster's address "
                                "(host:6379 of `ray start --head`), or to `local` to start Ray on this machine only")
        _check_reachable(address)
        import ray

        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError) as e:
            raise ExecutorError(f"RAY_ADDRESS={address!r}: {str(e).strip().splitlines()[0]}") from None
        if device == "auto":  # the cluster's GPUs, not this (head) machine's
            device = "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"
        if device.startswith("cuda"):  # cuda:N too: Ray makes the task's own GPU its only visible one
            device = "cuda"
        resources = {"num_cpus": threads, "num_gpus": gpus if device.startswith("cuda") else 0}
        self.ray, self.refs = ray, []
        self.task = _ray_task().options(**resources)
        data = ray.put(dataset)
        self.args = (data, data.hex(), device, threads, train)

    def map(self, jobs: list[loop.Job]):
        """The jobs' results, in job order, as each is ready; every job is submitted now."""
        self.refs = [self.task.remote(*self.args, job) for job in jobs]
        return map(self._get, jobs, self.refs)

    def _get(self, job: loop.Job, ref) -> loop.RunResult:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as e:  # the task's own error, raised as a local run raises it
            raise e.cause from None
        except self.ray.exceptions.RayError as e:  # lost more often than max_retries, out of memory, ...
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExecutorError(f"{job.run.group.name} {job.run.name}: the Ray task failed ({reason})") from None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is not None:  # an error or a signal: the other runs stop now
            for ref in self.refs:
                self.ray.cancel(ref, force=True)
        self.ray.shutdown()
