"""What the stage scripts share.

Stages wrap their checks in `stage_errors()`; a ConfigError (bad params), DataError (missing
or corrupt data), DivergenceError (a run's loss is no longer finite), TrackingError
(unusable MLflow store) or ExecutorError (unreachable Ray cluster; errors.py has them all) prints
`error: <one line>` to stderr and exits with status 2 before anything is written (outputs
are written atomically); `Stage` makes a bad command-line option the same one line.
`training_options` are the pretrain and finetune stages' options that do not change results
(each also read from an environment variable, so `dvc repro` and `dvc exp run` take them).
`groups_from_params` is the all-groups stages' prelude.
The all-groups stages (noise, evaluate) use `write_per_group`.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import signal
import sys
from contextlib import contextmanager

import click

from noisylabels import memo
from noisylabels.errors import ConfigError, DataError, DivergenceError, ExecutorError, TrackingError
from noisylabels.io import atomic_dir, check_writable
from noisylabels.resolve import group_names, load_params, resolve_group


class Stage(click.Command):
    """A stage script's command (`@click.command(cls=Stage)`): a bad option (`--workers 0`, a
    misspelt name, a missing `--group`) prints `error: <click's message>` and exits 2, as a
    bad params.yaml value does, instead of click's usage block. --help is unchanged."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:  # called from Python (tests): click's own behaviour
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as e:
            click.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        if isinstance(code, int):  # --help (0): nothing loaded worth skipping the teardown of
            sys.exit(code)
        _exit_now(0)  # the stage ran


def _exit_now(code: int) -> None:
    """End a stage that did its work without Python's teardown of every module it loaded,
    which took a training stage 1.6-1.9 s after its last line (torch, MLflow, SQLAlchemy and
    pandas loaded; 20 such stages in `dvc repro`). The atexit handlers still run (MLflow's,
    multiprocessing's, logging's) and the output is flushed; every file a stage writes is
    closed by then (io.py), and MLflow's store commits each call."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def workers_option(help: str):
    """--workers (also NOISYLABELS_WORKERS): processes doing a stage's work side by side,
    which never changes its outputs (the training stages, the report stage's figures)."""
    return click.option("--workers", default=min(2, os.cpu_count() or 1), type=click.IntRange(min=1),
                        show_default="min(2, CPU count)", envvar="NOISYLABELS_WORKERS", show_envvar=True, help=help)


def training_options(command):
    """--workers, --threads, --executor, --gpus-per-run, --checkpoints, --checkpoint-every:
    how a group trains, never what it learns. DVC runs the stages with the commands of
    dvc.yaml, so each option also reads NOISYLABELS_<OPTION> (e.g. NOISYLABELS_EXECUTOR=ray
    dvc exp run ...), and changing one reruns nothing."""
    options = [
        workers_option("local executor: processes training the group's runs side by side, spread over the "
                       "visible GPUs with device cuda (results do not depend on it)"),
        click.option("--threads", default=1, type=click.IntRange(min=1), show_default=True,
                     envvar="NOISYLABELS_THREADS", show_envvar=True,
                     help="CPU threads for torch per worker or Ray task. One thread keeps CPU results identical "
                          "whatever the machine's core count (the thread count changes float summation "
                          "order); speed comes from separate processes (benchmarks/threads.py)"),
        click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     envvar="NOISYLABELS_EXECUTOR", show_envvar=True,
                     help="local: worker processes on this machine; ray: one Ray task per run on the cluster "
                          "at $RAY_ADDRESS (results are the same)"),
        click.option("--gpus-per-run", default=1.0, type=click.FloatRange(min=0, max=1, min_open=True),
                     show_default=True, envvar="NOISYLABELS_GPUS_PER_RUN", show_envvar=True,
                     help="Ray executor on CUDA: the GPU share of one run's task (0.25: four runs per GPU)"),
        click.option("--checkpoints", default=None, show_default=".checkpoints/<DVC stage>",
                     envvar="NOISYLABELS_CHECKPOINTS", show_envvar=True,
                     help="folder of the runs' checkpoints, kept across a kill, removed when the group is saved "
                          "(with Ray on several nodes: a folder all nodes share, so a retried task resumes)"),
        click.option("--checkpoint-every", default="5min", show_default=True,
                     envvar="NOISYLABELS_CHECKPOINT_EVERY", show_envvar=True,
                     help="how often an unfinished run saves its state: minutes (5min) or epochs (2epochs)"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def groups_from_params(params_file: str, group: str | None) -> list:
    """The one group named, or every group of params.yaml, resolved (all checked first)."""
    params = load_params(params_file)
    return [resolve_group(params, name) for name in ([group] if group else group_names(params))]


def write_per_group(groups: list, one: bool, out, root: str, name, write, key=None) -> list[str]:
    """Call write(group, path) for the one group (path: `out`, or <root>/<name(group)>), or for
    every group into a fresh `root` folder that replaces the old one at the end, so a group
    no longer in params leaves nothing behind and a failure leaves the old folder whole.
    key(group): what the group's file is made from (memo.key); a group whose key is the same
    as when the old folder was written keeps its file from there (memo.Reuse). Returns the
    names of the groups kept."""
    check_writable(out or root)
    if one:
        write(groups[0], out or f"{root}/{name(groups[0])}")
        return []
    kept = []
    with atomic_dir(out or root) as tmp:
        reuse = memo.Reuse(out or root, tmp) if key else None
        for g in groups:
            group_key = key(g) if reuse else None
            if reuse and reuse.keep(name(g), group_key):
                kept.append(g.name)
                continue
            write(g, tmp / name(g))
            if reuse:
                reuse.made(name(g), group_key, [name(g)])
        if reuse:
            reuse.write()
    return kept


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled as Ctrl-C is (see stop_on_signals)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """In a child process (a worker, the MLflow client's helper): the kernel kills it when
    the stage process dies, even by SIGKILL (Linux's PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


@contextmanager
def stop_on_signals():
    """Within: SIGTERM and SIGHUP raise Stopped, so that `finally` and `except` blocks run
    (workers terminated, MLflow runs ended KILLED, temporary folders removed)."""
    def stop(signum, frame):
        raise Stopped(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def stage_errors():
    try:
        yield
    except (ConfigError, DataError, DivergenceError, ExecutorError, TrackingError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt as e:  # Ctrl-C, or Stopped: exit as the signal would, 128 + its number
        signum = getattr(e, "signum", signal.SIGINT)
        click.echo(f"error: stopped by {signal.Signals(signum).name}; nothing was written and the MLflow runs "
                   "of this stage are KILLED; rerun the stage to train again", err=True)
        sys.exit(128 + signum)
