"""A group's jobs (loop.Job) trained side by side: in worker processes on this machine
(`Workers`, the local executor) or as tasks of a Ray cluster (`RayWorkers`, `--executor ray`).

Runs are independent, so `processes` workers (each with `threads` torch threads and its own
copy of the data set on the device) train them; results come back in job order and are
identical for any number of workers and either executor. On a machine with several GPUs and
device `cuda`, worker i trains on cuda:(i mod the GPU count), so `--workers 8` on 4 GPUs puts
two workers on each. While they train, the runs' progress (loop.train's `report`) comes
back to the stage through a queue, which `map` drains into `on_events` twice a second.
Progress is best effort (the results carry the full history). Used by runner.train_stage.

Workers never outlive the stage: leaving the `with` block on an error or a signal
terminates them at once, and on Linux the kernel kills them if the stage process dies,
even by SIGKILL (prctl PR_SET_PDEATHSIG). They ignore Ctrl-C, which the stage handles.
"""
from __future__ import annotations

import copy
import ctypes
import functools
import itertools
import multiprocessing
import os
import signal
import socket
from queue import Empty

import torch

from noisylabels.engine import loop, stack
from noisylabels.cli import die_with_parent
from noisylabels.errors import ExecutorError

_worker = {}  # per worker process: the data set on its device, where its progress goes
_DRAIN_S = 0.5  # how often the stage reads the workers' progress while it waits for a result
# The stage's handlers for these raise cli.Stopped; a worker must not inherit them. They are
# blocked while the workers start and unblocked in each worker after its handlers are reset.
_STAGE_SIGNALS = {signal.SIGTERM, signal.SIGHUP}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def worker_device(device_name: str, worker: int, gpus: int) -> str:
    """The device of the worker numbered `worker` (from 0): plain `cuda` spreads the workers
    over the `gpus` visible GPUs; any other name (cpu, cuda:1) is used as it is."""
    return f"cuda:{worker % gpus}" if device_name == "cuda" and gpus > 1 else device_name


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep the memory a training step frees for the next step. By
    default it hands large freed blocks back to the kernel (munmap, heap trimming), and the
    next step page-faults them in again: a CNN's activations, every step. With fixed
    thresholds (blocks under 32 MB from the heap, up to 1 GB of freed heap kept) the per-run
    engine trained SCE's MNIST CNN 1.33x and its CIFAR-10 CNN 1.21x as fast on the CPU, with
    a third of the page faults and 2% more peak memory (benchmarks/malloc.py, the AMD EPYC);
    the digits MLP frees little and did not change. False where glibc is not the C library
    (nothing changes there) or refused a value."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1 and mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1


def _init_worker(dataset, device_name: str, threads: int, train, parent_pid: int | None, progress) -> None:
    """progress: where loop.train's reports go: a queue (worker processes, Ray tasks), a
    callable (jobs trained in the stage process) or None."""
    if parent_pid is not None:  # a worker process, not the stage itself
        # Pool numbers its processes from 1, in start order
        worker = multiprocessing.current_process()._identity[0] - 1
        device_name = worker_device(device_name, worker, torch.cuda.device_count() if device_name == "cuda" else 1)
        die_with_parent(parent_pid)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for s in _STAGE_SIGNALS:  # Pool.terminate's SIGTERM ends a worker quietly
            signal.signal(s, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STAGE_SIGNALS)
    torch.set_num_threads(threads)
    keep_freed_memory()
    # cuDNN picks the fastest convolution algorithms for the group's fixed shapes once
    torch.backends.cudnn.benchmark = torch.device(device_name).type == "cuda"
    _worker["data"] = loop.to_tensors(dataset, torch.device(device_name), train)
    if hasattr(progress, "put"):
        if hasattr(progress, "cancel_join_thread"):  # a worker's exit never waits for the stage to read
            progress.cancel_join_thread()
        progress = functools.partial(_put, progress)
    _worker["report"] = progress


def _train(unit: list[loop.Job]) -> list[loop.RunResult]:
    return stack.train_units(_worker["data"], unit, _worker["report"])


def _put(queue, *event) -> None:
    """A worker's report: its progress events go to the stage through `queue`."""
    queue.put_nowait(event)


def _ignore(events) -> None:
    pass


def _drain(queue) -> list:
    events = []
    while True:
        try:
            events.append(queue.get_nowait())
        except Empty:
            return events


class Workers:
    """The processes that train a group's jobs (a context manager). The workers start at
    once, while the caller sets up MLflow. With one process, jobs run here."""

    def __init__(self, dataset, device, processes: int, threads: int, train):
        self.pool, self.on_events, self.processes, self.device = None, _ignore, processes, str(device)
        if processes > 1:
            # fork on the CPU: a worker starts in milliseconds with torch already imported
            # (spawn costs seconds of imports per worker and group); CUDA needs spawn. The
            # parent has run no torch op yet, so no thread pool is forked half-initialised.
            context = multiprocessing.get_context("fork" if torch.device(device).type == "cpu" else "spawn")
            self.queue = context.Queue()  # the workers' progress events
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STAGE_SIGNALS)
            try:
                self.pool = context.Pool(processes, initializer=_init_worker,
                                         initargs=(dataset, str(device), threads, train, os.getpid(), self.queue))
            finally:  # a signal that came meanwhile reaches the stage now
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        else:  # in this process, whose events reach on_events as they happen
            _init_worker(dataset, str(device), threads, train, None, lambda *event: self.on_events([event]))

    def map(self, jobs: list[loop.Job], on_events=_ignore):
        """The jobs' results, in job order, as each is ready; meanwhile on_events(the
        progress events since its last call)."""
        self.on_events = on_events
        units = stack.units(jobs, self.processes, self.device)
        if not self.pool:
            return itertools.chain.from_iterable(map(_train, units))
        return itertools.chain.from_iterable(self._gather(self.pool.imap(_train, units), len(units)))

    def _gather(self, results, n: int):
        for _ in range(n):
            result = None
            while result is None:
                try:
                    result = results.next(timeout=_DRAIN_S)
                except multiprocessing.TimeoutError:
                    pass
                self.on_events(_drain(self.queue))
            yield result

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
        return RayWorkers(dataset, str(device), threads, train, gpus_per_run, processes)
    return Workers(dataset, device, max(1, min(processes, runs)), threads, train)


@functools.cache
def _ray_task():
    """`_train` as a Ray task (defined on first use: importing ray costs seconds). Ray
    resolves the data set's object reference before the task runs, once per task; the
    tensors are made once per Ray worker process and kept for its later tasks of the stage."""
    import ray

    @ray.remote(max_retries=3)  # a task lost with its node (or worker process) runs again
    def train_job(dataset, dataset_key: str, device_name: str, threads: int, train, progress,
                  unit: list[loop.Job]) -> list[loop.RunResult]:
        if _worker.get("key") != (dataset_key, device_name, threads):
            # Ray's arrays are read-only views of its object store; torch wants writable ones
            _init_worker(copy.deepcopy(dataset), device_name, threads, train, None, progress)
            _worker["key"] = (dataset_key, device_name, threads)
        return _train(unit)

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

    def __init__(self, dataset, device: str, threads: int, train, gpus: float, processes: int):
        address = os.environ.get("RAY_ADDRESS")
        if not address:
            raise ExecutorError("--executor ray: RAY_ADDRESS is not set; set it to the cluster's address "
                                "(host:6379 of `ray start --head`), or to `local` to start Ray on this machine only")
        _check_reachable(address)
        import ray
        from ray.util.queue import Queue

        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError) as e:
            raise ExecutorError(f"RAY_ADDRESS={address!r}: {str(e).strip().splitlines()[0]}") from None
        if device == "auto":  # the cluster's GPUs, not this (head) machine's
            device = "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"
        if device.startswith("cuda"):  # cuda:N too: Ray makes the task's own GPU its only visible one
            device = "cuda"
        resources = {"num_cpus": threads, "num_gpus": gpus if device.startswith("cuda") else 0}
        self.ray, self.refs, self.processes, self.device = ray, [], processes, device
        self.task = _ray_task().options(**resources)
        self.progress = Queue(actor_options={"num_cpus": 0})  # the tasks' progress events
        data = ray.put(dataset)
        self.args = (data, data.hex(), device, threads, train, self.progress)

    def map(self, jobs: list[loop.Job], on_events=_ignore):
        """The jobs' results, in job order, as each is ready; every job is submitted now.
        Meanwhile on_events(the progress events since its last call)."""
        units = stack.units(jobs, self.processes, self.device)
        self.refs = [self.task.remote(*self.args, unit) for unit in units]
        return itertools.chain.from_iterable(self._gather(units, on_events))

    def _gather(self, units: list[list[loop.Job]], on_events):
        for unit, ref in zip(units, self.refs):
            while not self.ray.wait([ref], timeout=_DRAIN_S)[0]:
                on_events(self._drain())
            on_events(self._drain())
            yield self._get(unit, ref)

    def _drain(self) -> list:
        return self.progress.get_nowait_batch(self.progress.qsize())

    def _get(self, unit: list[loop.Job], ref) -> list[loop.RunResult]:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as e:  # the task's own error, raised as a local run raises it
            raise e.cause from None
        except self.ray.exceptions.RayError as e:  # lost more often than max_retries, out of memory, ...
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            names = ", ".join(job.run.key for job in unit)
            raise ExecutorError(f"{names}: the Ray task failed ({reason})") from None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is not None:  # an error or a signal: the other runs stop now
            for ref in self.refs:
                self.ray.cancel(ref, force=True)
        self.ray.shutdown()
