"""MLflow conventions, in one place.

- Store: $MLFLOW_TRACKING_URI when set, else sqlite:///<root>/mlflow.db, where <root> is
  $DVC_ROOT (DVC sets it for every stage, and points it at the parent repository for queued
  experiments, which run in a temporary copy) or else the repository holding the current
  folder. Artifacts go under <root>/mlartifacts/<experiment> (MLflow records it as an
  absolute path: a moved or copied repository has its store's locations rewritten to its
  new folder when a stage next opens it, relocate_artifacts), or, with a tracking server
  (MLFLOW_TRACKING_URI=http://...), through its artifact proxy to wherever the server
  stores them.
- Experiments: one per table section ("sce_table1", ...) plus "main", tagged
  mlflow.experimentKind=custom_model_development, so that MLflow 3's UI opens them on the
  training runs rather than on its generative-AI overview.
- Runs: one parent run per run group and stage execution, named after the group (and the
  DVC experiment, `main (exp-name)`, inside `dvc exp run`), so one `dvc exp run` is one new,
  distinguishable row in the UI; nested under it, one run per trained model, named
  "<method>-<dataset>-<noise setting>-s<seed>". Tags: paper, table, group, method, dataset,
  dvc_stage, dvc_exp_name, dvc_exp_baseline (the commit an experiment starts from), git_commit,
  host, pid (+ noise_type, noise_rate, seed on a model run), and MLflow's own source name
  (the stage script), source type, user and git commit. A run ends FINISHED, FAILED (an
  error) or KILLED (Ctrl-C, SIGTERM, SIGHUP); one left RUNNING by a killed stage (SIGKILL, a
  lost machine) is marked FAILED when its group next trains on that host (`fail_abandoned`).
  A model run is created when its training starts (LiveRuns), with its params; its
  per-epoch metrics arrive while it trains, every LIVE_EVERY_S seconds, so curves grow in
  the UI; it ends when its training ends, with its final metrics. The parent has the data
  set as an MLflow dataset input (name, digest of its files).
  The parent of a training stage is also tagged `outputs`: the sha256 of the stage's output
  folder (io.dir_digest), which holds no run id, so DVC outputs stay deterministic; the
  report attaches its tables to the latest FINISHED parent with that digest (`find_parents`),
  and a phase-2 parent names its phase 1 by `phase1_outputs`. A parent holding its table's
  current files is tagged `attached` (their digest), and the report skips it (`attach`).
  Params: the resolved settings. A model run has per-epoch metrics (step = epoch) and its
  final metrics; the parent has the final metrics' mean and std over seeds per noise setting,
  and its table (.md, .csv) and figure as artifacts. A two-phase group has a parent per
  phase, tagged phase=1 (pretrain stage) and phase=2 (finetune stage).
mlflow is imported inside the functions: importing it and opening the store cost about 3 s.
The stages that log start that in a helper process first thing (`open_early`), so that it
runs beside their own imports and work; their Trackers then call MLflow's client there.
"""
from __future__ import annotations

import atexit
import gc
import getpass
import importlib
import multiprocessing
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import closing, contextmanager
from functools import lru_cache
from pathlib import Path

from noisylabels.errors import TrackingError
from noisylabels.io import files_digest


def project_root() -> Path:
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir() or (folder / ".git").exists():
            return folder
    return here


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def check_store(uri: str | None = None) -> str:
    """Fail with one line, before any training, when the tracking store is unusable."""
    uri = uri or tracking_uri()
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).close()
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise TrackingError(
                f"MLFLOW_TRACKING_URI={uri!r}: tracking server unreachable ({reason}); start it, "
                f"or unset MLFLOW_TRACKING_URI to use the repository's mlflow.db"
            ) from e
    elif uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.parent.is_dir() or not os.access(db.parent, os.W_OK):
            raise TrackingError(f"tracking uri {uri!r}: folder {db.parent} does not exist or is not writable")
        if db.exists():  # a truncated or garbled file: milliseconds with sqlite3, where MLflow takes seconds
            try:
                with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
                    con.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
            except sqlite3.Error as e:
                raise unusable(uri, e) from None
    return uri


def unusable(uri: str, e: Exception) -> TrackingError:
    reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
    return TrackingError(f"tracking store {uri!r}: unusable ({reason}); move the file aside (a new store is "
                         "created) or point MLFLOW_TRACKING_URI at a working one")


@lru_cache(maxsize=None)  # one `git rev-parse` per process, not one per run
def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def run_name(run) -> str:
    return f"{run.group.method}-{run.group.dataset.name}-{run.name}"


def parent_name(group) -> str:
    """The group's name, and inside `dvc exp run` the experiment's: rows tell runs apart."""
    exp = os.environ.get("DVC_EXP_NAME")
    return f"{group.name} ({exp})" if exp else group.name


def group_tags(group) -> dict[str, str]:
    commit = _git_commit(project_root())
    return {
        "paper": group.paper, "table": group.table, "group": group.name, "method": group.method,
        "dataset": group.dataset.name, "dvc_stage": os.environ.get("DVC_STAGE", ""),
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
        "dvc_exp_baseline": os.environ.get("DVC_EXP_BASELINE_REV", ""), "git_commit": commit,
        # which process owns the run while it is RUNNING (Tracker.fail_abandoned)
        "host": socket.gethostname(), "pid": str(os.getpid()),
        # MLflow's own columns: Source, User, and the commit on the run page
        "mlflow.source.name": sys.argv[0], "mlflow.source.type": "LOCAL", "mlflow.user": getpass.getuser(),
        "mlflow.source.git.commit": commit,
    }


def run_tags(run) -> dict[str, str]:
    # named as the report columns that hold them
    return {**group_tags(run.group), "noise_type": run.setting.type, "noise_rate": run.setting.level,
            "seed": str(run.seed)}


def flat(values: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: the params.yaml key path of every value."""
    out = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        out.update(flat(v, f"{key}.") if isinstance(v, dict) and v else {key: v})
    return out


def group_params(group) -> dict[str, str]:
    """The group's resolved settings (parent run): its method as written, the changed
    settings' methods and the grid."""
    values = {**flat(group.values()), "noise.settings": [s.name for s in group.settings],
              "noise.seeds": list(group.seeds)}
    overrides = group.changed_settings()
    if overrides:
        values["overrides"] = overrides
    return {k: str(v) for k, v in values.items()}


def run_params(run) -> dict[str, str]:
    """One trained model's resolved settings: its method for its setting, noise setting and seed."""
    values = {**flat(run.group.values(run.method)), "noise.type": run.setting.type, "noise.rate": run.setting.level,
              "seed": run.seed}
    return {k: str(v) for k, v in values.items()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return pid > 0


def end_status(error: BaseException) -> str:
    """KILLED for Ctrl-C, SIGTERM or SIGHUP (cli.Stopped is a KeyboardInterrupt), else FAILED."""
    return "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"


EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def relocate_artifacts(db: Path, root: Path) -> list[str]:
    """Point the store's experiments made here (artifacts in <some folder>/mlartifacts/<name>)
    and their runs at <root>/mlartifacts/<name>, if they point elsewhere: the repository,
    its mlflow.db and mlartifacts/ were moved or copied together, and without this MLflow
    would keep writing the artifacts into the old folder (or recreate it). MLflow stores
    those locations as absolute URIs and has no API to change them (mlflow/mlflow#3719,
    #3144), so this rewrites its two columns in place. Returns the experiments moved."""
    base = (root / "mlartifacts").as_uri() + "/"
    moved = []
    try:
        with closing(sqlite3.connect(db)) as con, con:  # one transaction
            for exp_id, location in con.execute("SELECT experiment_id, artifact_location FROM experiments").fetchall():
                old_base, found, name = (location or "").rpartition("/mlartifacts/")
                if not found or not old_base.startswith("file://") or "/" in name or location == base + name:
                    continue
                con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (base + name, exp_id))
                con.execute("UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) WHERE experiment_id = ? "
                            "AND substr(artifact_uri, 1, ?) = ?", (base + name, len(location) + 1, exp_id,
                                                                   len(location), location))
                moved.append(name)
    except sqlite3.Error as e:
        raise TrackingError(f"tracking store {db}: could not update its artifact locations ({e})") from None
    return moved


class _Client:
    """MlflowClient behind calls that take and return plain Python values (ids, dicts,
    tuples), so that a stage whose client lives in the helper process (`open_early`) never
    imports mlflow itself. Tracker calls it; `open` comes first."""

    def open(self, uri: str) -> None:
        from mlflow.tracking import MlflowClient

        try:  # a store that check_store passed and MLflow cannot open (its schema, say)
            self.client = MlflowClient(tracking_uri=uri)
            self.client.search_experiments(max_results=1)
        except Exception as e:  # MLflow's and SQLAlchemy's many error types: all one line here
            raise unusable(uri, e) from None

    def experiment(self, name: str) -> tuple[str, dict] | None:
        """(id, tags) of the experiment `name`, or None."""
        exp = self.client.get_experiment_by_name(name)
        return None if exp is None else (exp.experiment_id, dict(exp.tags))

    def create_experiment(self, name: str, location: str | None, tags: dict) -> str:
        return self.client.create_experiment(name, artifact_location=location, tags=tags)

    def set_experiment_tag(self, exp_id: str, key: str, value: str) -> None:
        self.client.set_experiment_tag(exp_id, key, value)

    def search_runs(self, exp_id: str, filter_string: str, order_by: list | None = None,
                    max_results: int = 10_000) -> list[tuple[str, dict]]:
        """(id, tags) of each run found."""
        found = self.client.search_runs([exp_id], filter_string, order_by=order_by, max_results=max_results)
        return [(run.info.run_id, dict(run.data.tags)) for run in found]

    def find_parents(self, wanted: list[tuple[str, str, str]]) -> list[tuple[str, dict] | None]:
        """For each (experiment, group, outputs digest): (id, tags) of the latest FINISHED
        parent run of the group that wrote outputs with that digest, or None (outputs pulled
        from a DVC remote, or trained against another store). One search per digest, whose
        cost does not grow with the parent runs that an experiment gathers over many `dvc exp
        run`s: the report's 44 took 0.7-1.3 s in a store of 6000 runs, where one search per
        experiment for all its parents took 1.4-2 s."""
        experiments, found = {}, []
        for experiment, group, outputs in wanted:
            if experiment not in experiments:  # looked up, not created: nothing to find then
                experiments[experiment] = self.client.get_experiment_by_name(experiment)
            exp = experiments[experiment]
            runs = [] if exp is None else self.client.search_runs(
                [exp.experiment_id], f"tags.outputs = '{outputs}' and attributes.status = 'FINISHED'",
                order_by=["attributes.start_time DESC"], max_results=10)
            # the digest covers group.json, which names the group: this only guards the lookup
            found.append(next(((r.info.run_id, dict(r.data.tags)) for r in runs if r.data.tags.get("group") == group),
                              None))
        return found

    def submit(self, name: str, args: tuple):
        """As _Helper.submit, here: the call made now."""
        value = getattr(self, name)(*args)
        return lambda: value

    def create_run(self, exp_id: str, name: str, tags: dict, start_ms: int | None) -> str:
        return self.client.create_run(exp_id, run_name=name, tags=tags, start_time=start_ms).info.run_id

    def log_batch(self, run_id: str, params: dict, metrics: list[tuple[str, float, int, int]]) -> None:
        """Params, and metrics as (key, value, timestamp ms, step), in batches within MLflow's
        limits (100 params, 1000 entries a call)."""
        from mlflow.entities import Metric, Param

        items, metrics = [Param(k, v) for k, v in params.items()], [Metric(*m) for m in metrics]
        while items or metrics:
            batch_params, items = items[:100], items[100:]
            batch_metrics, metrics = metrics[: 1000 - len(batch_params)], metrics[1000 - len(batch_params):]
            self.client.log_batch(run_id, params=batch_params, metrics=batch_metrics)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

    def log_dataset(self, run_id: str, name: str, digest: str, source: str) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        self.client.log_inputs(run_id, [DatasetInput(Dataset(name, digest, "local", source),
                                                     [InputTag("mlflow.data.context", "training")])])

    def log_artifacts(self, run_id: str, paths: list[str]) -> None:
        for path in paths:
            self.client.log_artifact(run_id, path)

    def set_terminated(self, run_id: str, status: str, end_ms: int | None) -> None:
        self.client.set_terminated(run_id, status=status, end_time=end_ms)


# The signals on which a stage ends its runs through the helper (Ctrl-C; SIGTERM and SIGHUP,
# cli.stop_on_signals): the helper ignores them and lives until the stage has ended (or dies
# with it).
_HELPER_IGNORES = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_helper = None  # this process's _Helper, once open_early started it


def open_early() -> None:
    """Start MLflow's client in a helper process now, so that its imports and SQLAlchemy
    (about 3 s on this CPU) run beside what the stage does first (torch's 2 s of imports, the
    data, training; pandas and the tables in the report) instead of after it: 1-2 s less per
    training stage here. Called by the stages that log, first thing, before they import
    torch; the Trackers of this process then talk to that client (`_Helper`; a second
    Tracker reopens it). Without it (tests, a notebook, a platform without fork) a Tracker
    opens MLflow in its own process."""
    global _helper
    if _helper is None and "fork" in multiprocessing.get_all_start_methods():
        _helper = _Helper()


def _serve(conn, stage_end, parent_pid: int) -> None:
    """The helper process: imports mlflow at once, then answers the stage's calls of
    _Client methods, one at a time, until the stage closes its end or dies."""
    from noisylabels.cli import die_with_parent

    stage_end.close()  # the fork's copy: with it open, the stage's closing it would never be seen
    die_with_parent(parent_pid)
    for s in _HELPER_IGNORES:
        signal.signal(s, signal.SIG_IGN)
    # now, while the stage does its first work; in a thread, so that the helper of a stage
    # that stops early (a bad value) ends at once rather than after the imports
    # (the SQLite store's module too: a second of SQLAlchemy and alembic; opening the store
    # waits for the stage's call, as it would create mlflow.db before the stage checked a thing)
    modules = ("mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store")

    def load():
        for m in modules:
            importlib.import_module(m)
        # the 270,000 objects of those modules left out of the garbage collector's full passes,
        # each of which took 0.15 s (three in the report's 44 parent lookups)
        gc.freeze()

    loading = threading.Thread(target=load, daemon=True)
    loading.start()
    client = _Client()
    while True:
        try:
            seq, name, args = conn.recv()
        except (EOFError, OSError):  # the stage ended (OSError: with an answer left unread, a reset)
            return
        loading.join()
        try:
            reply = (seq, True, getattr(client, name)(*args))
        except Exception as e:
            reply = (seq, False, e)
        try:
            conn.send(reply)
        except OSError:  # the stage ended (an error) before it read this answer
            return
        except Exception:  # an exception that does not pickle: its one line instead
            conn.send((seq, False, TrackingError(f"{type(reply[2]).__name__}: {reply[2]}")))


class _Helper:
    """The stage's end of the helper process: a _Client whose calls run there."""

    def __init__(self):
        context = multiprocessing.get_context("fork")
        self.conn, child = context.Pipe()
        context.Process(target=_serve, args=(child, self.conn, os.getpid()), name="mlflow-client").start()
        child.close()
        self.seq = 0
        # the helper ends when it reads the end of the pipe: closed at exit, before
        # multiprocessing's own exit handler (registered earlier, so run later) joins it
        atexit.register(self.conn.close)

    def __getattr__(self, name: str):
        return lambda *args: self.submit(name, args)()

    def submit(self, name: str, args: tuple):
        """Send the call of _Client.`name` now; return a function that waits for its answer,
        so that the stage works meanwhile. Read it before the next call: a later call's
        answer follows it, and that call discards it."""
        self.seq += 1
        seq = self.seq
        # a signal's exception waits until the request is sent whole (a half-sent one would
        # garble the pipe); while the answer is awaited it interrupts at once
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _HELPER_IGNORES)
        try:
            self.conn.send((seq, name, args))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return lambda: self._answer(seq)

    def _answer(self, seq: int):
        while True:
            try:
                got, ok, value = self.conn.recv()
            except EOFError:
                raise TrackingError("the MLflow client process ended unexpectedly; rerun the stage") from None
            if got == seq:  # earlier ones: answers to calls that a signal cut short
                break
        if not ok:
            raise value
        return value


class Tracker:
    """The conventions above, on MLflow's client (_Client: in the helper process when the
    stage started one, else in this process)."""

    def __init__(self, uri: str | None = None):
        self.uri = check_store(uri)
        self.root = project_root()
        self.client = _helper if _helper is not None else _Client()
        self.client.open(self.uri)
        if self.uri.startswith("sqlite:///"):
            db = Path(self.uri.removeprefix("sqlite:///"))
            if db.parent.resolve() == self.root and db.exists():  # the repository's own store
                relocate_artifacts(db, self.root)
        self._experiment_ids: dict[str, str] = {}  # one lookup per experiment, not one per run

    def experiment_id(self, name: str) -> str:
        if name not in self._experiment_ids:
            exp = self.client.experiment(name)
            if exp is None:
                # a tracking server stores artifacts where it is told to (its artifact proxy,
                # `mlflow server --artifacts-destination`), not in a folder of this machine
                server = self.uri.startswith(("http://", "https://"))
                location = None if server else (self.root / "mlartifacts" / name).as_uri()
                exp_id = self.client.create_experiment(name, location, EXPERIMENT_TAGS)
            else:
                exp_id, tags = exp
                for key, value in EXPERIMENT_TAGS.items():  # a store made before the tag existed
                    if tags.get(key) != value:
                        self.client.set_experiment_tag(exp_id, key, value)
            self._experiment_ids[name] = exp_id
        return self._experiment_ids[name]

    def fail_abandoned(self, experiment: str, group: str) -> list[str]:
        """Mark FAILED the runs of `group` left RUNNING by a stage process of this host that
        no longer exists (killed, or its machine restarted); return their ids. A run of a
        live process (a queued experiment training the same group) is left alone."""
        ids = []
        filter_string = f"tags.group = '{group}' and attributes.status = 'RUNNING'"
        for run_id, tags in self.client.search_runs(self.experiment_id(experiment), filter_string):
            if tags.get("host") == socket.gethostname() and not _alive(int(tags.get("pid", "0"))):
                self.finish(run_id, "FAILED")
                ids.append(run_id)
        return ids

    def start_run(self, experiment: str, name: str, tags: dict, params: dict, start_ms: int | None = None) -> str:
        """Create a run with its params; return its id."""
        run_id = self.client.create_run(self.experiment_id(experiment), name, tags, start_ms)
        self.log_batch(run_id, params, [])
        return run_id

    def log_dataset(self, run_id: str, name: str, digest: str, source: str) -> None:
        """The data set a run trained on, as an MLflow dataset input (the run's Datasets column)."""
        self.client.log_dataset(run_id, name, digest, source)

    @contextmanager
    def ended_on_error(self, runs: str | dict[str, str]):
        """Within: an exception or a signal ends the run KILLED or FAILED (end_status); runs:
        a run id, or a dict whose values are run ids (those in it when the error comes)."""
        try:
            yield
        except BaseException as e:
            for run_id in [runs] if isinstance(runs, str) else list(runs.values()):
                self.finish(run_id, end_status(e))
            raise

    def log_batch(self, run_id: str, params: dict, metrics: list[tuple[str, float, int, int]]) -> None:
        """Params, and metrics as (key, value, timestamp ms, step)."""
        self.client.log_batch(run_id, params, metrics)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.set_tags(run_id, tags)

    def find_parents(self, wanted: list[tuple[str, str, str]]):
        """_Client.find_parents, asked now; returns a function that waits for the answer, so
        that the stage works while the helper process searches (the report draws its figures
        meanwhile). Read it before this Tracker's next call (_Helper.submit)."""
        return self.client.submit("find_parents", (wanted,))

    def attach(self, parent: tuple[str, dict], files: list[Path]) -> bool:
        """Log `files` as artifacts of `parent` (find_parents') unless it holds these bytes
        already (its `attached` tag: their digest; a rerun report rewrites no unchanged table,
        e.g. the 43 of 44 that `dvc exp run -S loss.alpha=0.1` leaves alone); True when logged."""
        run_id, tags = parent
        digest = files_digest([(f.name, f) for f in files])
        if tags.get("attached") == digest:
            return False
        self.log_artifacts(run_id, files)
        self.set_tags(run_id, {"attached": digest})
        return True

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        """Final (single-value) metrics, at step 0."""
        ts = int(time.time() * 1000)
        self.log_batch(run_id, {}, [(key, float(v), ts, 0) for key, v in metrics.items()])

    def log_artifacts(self, run_id: str, files: list[Path]) -> None:
        # absolute: the helper process reads them from the folder it was started in
        self.client.log_artifacts(run_id, [str(Path(f).resolve()) for f in files])

    def finish(self, run_id: str, status: str = "FINISHED", end_ms: int | None = None) -> None:
        self.client.set_terminated(run_id, status, end_ms)


LIVE_EVERY_S = 5.0  # how often the curves of the runs in training are written to MLflow


class LiveRuns:
    """The model runs of a stage (one group, or several of one table) as they train (runner.py feeds it the workers' progress).

    `add` takes loop.train's progress events: ("start", run, ms) creates the run (its real
    start time, tags, params); ("epoch", run, {key: (step, value)}) is buffered and written
    every LIVE_EVERY_S seconds, one call per run. `finish` writes what is not there yet (the
    epochs since the last write, or all of them for a run finished by an earlier, killed
    stage) and the final metrics, and ends the run at its training's end. A run whose Ray
    task was lost and retried shows as a FAILED run and the retried one."""

    def __init__(self, tracker: Tracker, experiment: str, runs: dict[str, tuple[str, dict, dict, str]]):
        self.tracker, self.experiment = tracker, experiment
        self.runs = runs  # run (resolve.Run.key) -> (MLflow run name, tags, params, parent run id)
        self.ids: dict[str, str] = {}
        self.logged: dict[str, set] = {}  # run -> the (key, step) pairs written
        self.pending: dict[str, list] = {}  # run -> (key, value, ms, step) entries not written yet
        self.finished: set[str] = set()
        self.last_write = time.monotonic()

    def _create(self, run: str, start_ms: int | None) -> str:
        name, tags, params, parent = self.runs[run]
        self.ids[run] = self.tracker.start_run(self.experiment, name, {**tags, "mlflow.parentRunId": parent},
                                               params, start_ms)
        self.logged[run] = set()
        return self.ids[run]

    def add(self, events: list) -> None:
        ts = int(time.time() * 1000)
        for kind, run, what in events:
            if run in self.finished:  # late news of a run already complete
                continue
            if kind == "start":
                if run in self.ids:  # a Ray task retried after its node or process was lost
                    self.tracker.finish(self.ids[run], "FAILED")
                self._create(run, what)
                self.pending.pop(run, None)
            else:
                self.pending.setdefault(run, []).extend((k, float(v), ts, step) for k, (step, v) in what.items())
        if time.monotonic() - self.last_write >= LIVE_EVERY_S:
            self._write_pending()

    def _write_pending(self) -> None:
        for run, metrics in self.pending.items():
            if run in self.ids and metrics:
                self.tracker.log_batch(self.ids[run], {}, metrics)
                self.logged[run].update((key, step) for key, _, _, step in metrics)
        self.pending = {}
        self.last_write = time.monotonic()

    def finish(self, run: str, history: dict[str, list[float]], final: dict[str, float],
               span_ms: tuple[int | None, int | None]) -> str:
        """The run complete: its history's steps not written yet (step = epoch, from 1) and
        final metrics (step 0); span_ms: when it trained. Returns its id."""
        run_id = self.ids.get(run) or self._create(run, span_ms[0])
        self.pending.pop(run, None)
        ts = int(time.time() * 1000)
        metrics = [(key, float(v), ts, step) for key, values in history.items()
                   for step, v in enumerate(values, start=1) if (key, step) not in self.logged[run]]
        metrics += [(key, float(v), ts, 0) for key, v in final.items()]
        with self.tracker.ended_on_error(run_id):  # Ctrl-C while logging: the run does not stay RUNNING
            self.tracker.log_batch(run_id, {}, metrics)
        self.tracker.finish(run_id, end_ms=span_ms[1])
        self.finished.add(run)
        return run_id

    @contextmanager
    def ended_on_error(self):
        """Within: an exception or a signal ends the runs still training KILLED or FAILED."""
        try:
            yield
        except BaseException as e:
            for run, run_id in self.ids.items():
                if run not in self.finished:
                    self.tracker.finish(run_id, end_status(e))
            raise
