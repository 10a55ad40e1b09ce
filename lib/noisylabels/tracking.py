"""MLflow conventions, in one place.

- Store: $MLFLOW_TRACKING_URI when set, else sqlite:///<root>/mlflow.db, where <root> is
  $DVC_ROOT (DVC sets it for every stage, and points it at the parent repository for queued
  experiments, which run in a temporary copy) or else the repository holding the current
  folder. Artifacts go under the absolute <root>/mlartifacts/<experiment>, or, with a
  tracking server (MLFLOW_TRACKING_URI=http://...), through its artifact proxy to wherever
  the server stores them.
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
  A model run is logged when its training ends, with the training's real start and end
  times; the parent has the data set as an MLflow dataset input (name, digest of its files).
  The parent of a training stage is also tagged `outputs`: the sha256 of the stage's output
  folder (io.dir_digest), which holds no run id, so DVC outputs stay deterministic; the
  report attaches its tables to the latest FINISHED parent with that digest (`find_parent`),
  and a phase-2 parent names its phase 1 by `phase1_outputs`.
  Params: the resolved settings. A model run has per-epoch metrics (step = epoch) and its
  final metrics; the parent has the final metrics' mean and std over seeds per noise setting,
  and its table (.md, .csv) and figure as artifacts. A two-phase group has a parent per
  phase, tagged phase=1 (pretrain stage) and phase=2 (finetune stage).
mlflow is imported inside the functions: importing it costs about 2 s.
"""
from __future__ import annotations

import getpass
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from noisylabels.errors import TrackingError


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
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingError(f"tracking uri {uri!r}: folder {folder} does not exist or is not writable")
    return uri


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


class Tracker:
    """A thin MlflowClient wrapper that applies the conventions above."""

    def __init__(self, uri: str | None = None):
        from mlflow.tracking import MlflowClient

        self.uri = check_store(uri)
        self.root = project_root()
        try:  # a truncated or garbled store fails here, before any training
            self.client = MlflowClient(tracking_uri=self.uri)
            self.client.search_experiments(max_results=1)
        except Exception as e:  # MLflow's and SQLAlchemy's many error types: all one line here
            reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise TrackingError(f"tracking store {self.uri!r}: unusable ({reason}); move the file aside (a new "
                                "store is created) or point MLFLOW_TRACKING_URI at a working one") from None
        self._experiment_ids: dict[str, str] = {}  # one lookup per experiment, not one per run

    def experiment_id(self, name: str) -> str:
        if name not in self._experiment_ids:
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                # a tracking server stores artifacts where it is told to (its artifact proxy,
                # `mlflow server --artifacts-destination`), not in a folder of this machine
                server = self.uri.startswith(("http://", "https://"))
                location = None if server else (self.root / "mlartifacts" / name).as_uri()
                exp_id = self.client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
            else:
                exp_id = exp.experiment_id
                for key, value in EXPERIMENT_TAGS.items():  # a store made before the tag existed
                    if exp.tags.get(key) != value:
                        self.client.set_experiment_tag(exp_id, key, value)
            self._experiment_ids[name] = exp_id
        return self._experiment_ids[name]

    def fail_abandoned(self, experiment: str, group: str) -> list[str]:
        """Mark FAILED the runs of `group` left RUNNING by a stage process of this host that
        no longer exists (killed, or its machine restarted); return their ids. A run of a
        live process (a queued experiment training the same group) is left alone."""
        from mlflow.entities import RunStatus

        ids = []
        filter_string = f"tags.group = '{group}' and attributes.status = 'RUNNING'"
        for run in self.client.search_runs([self.experiment_id(experiment)], filter_string, max_results=10_000):
            tags = run.data.tags
            if tags.get("host") == socket.gethostname() and not _alive(int(tags.get("pid", "0"))):
                self.client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
                ids.append(run.info.run_id)
        return ids

    def start_run(self, experiment: str, name: str, tags: dict, params: dict, start_ms: int | None = None) -> str:
        """Create a run with its params; return its id."""
        run_id = self.client.create_run(self.experiment_id(experiment), run_name=name, tags=tags,
                                        start_time=start_ms).info.run_id
        self._log(run_id, params, [])
        return run_id

    def log_run(self, experiment: str, name: str, tags: dict, params: dict, history: dict[str, list[float]],
                final: dict[str, float], parent_id: str, span_ms: tuple[int | None, int | None] = (None, None)) -> str:
        """A finished model run in one go: params, per-epoch metrics (step = epoch, from 1) and
        final metrics (step 0) in as few calls as MLflow allows (each call is a database
        transaction, about 10 ms); span_ms: when it trained (its start and end in the UI).
        Returns its id."""
        run_id = self.start_run(experiment, name, {**tags, "mlflow.parentRunId": parent_id}, {}, span_ms[0])
        metrics = self._metrics(history, first_step=1) + self._metrics({k: [v] for k, v in final.items()}, 0)
        with self.ended_on_error(run_id):  # Ctrl-C while logging: the run does not stay RUNNING
            self._log(run_id, params, metrics)
        self.finish(run_id, end_ms=span_ms[1])
        return run_id

    def log_dataset(self, run_id: str, name: str, digest: str, source: str) -> None:
        """The data set a run trained on, as an MLflow dataset input (the run's Datasets column)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        self.client.log_inputs(run_id, [DatasetInput(Dataset(name, digest, "local", source),
                                                     [InputTag("mlflow.data.context", "training")])])

    @contextmanager
    def ended_on_error(self, run_id: str):
        """Within: an exception or a signal ends the run KILLED or FAILED (end_status)."""
        try:
            yield
        except BaseException as e:
            self.finish(run_id, end_status(e))
            raise

    @staticmethod
    def _metrics(series: dict[str, list[float]], first_step: int) -> list:
        """Each key's values at steps first_step, first_step + 1, ..."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        return [Metric(key, float(v), ts, step) for key, values in series.items()
                for step, v in enumerate(values, start=first_step)]

    def _log(self, run_id: str, params: dict, metrics: list) -> None:
        """Params and metrics in batches within MLflow's limits (100 params, 1000 entries a call)."""
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        while items or metrics:
            batch_params, items = items[:100], items[100:]
            batch_metrics, metrics = metrics[: 1000 - len(batch_params)], metrics[1000 - len(batch_params):]
            self.client.log_batch(run_id, params=batch_params, metrics=batch_metrics)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

    def find_parent(self, experiment: str, group: str, outputs: str) -> str | None:
        """The latest FINISHED parent run of `group` that wrote outputs with this digest, or
        None (outputs pulled from a DVC remote, or trained against another store)."""
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            return None
        found = self.client.search_runs(
            [exp.experiment_id], f"tags.group = '{group}' and tags.outputs = '{outputs}' and "
            "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"], max_results=1)
        return found[0].info.run_id if found else None

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        """Final (single-value) metrics, at step 0."""
        self._log(run_id, {}, self._metrics({k: [v] for k, v in metrics.items()}, first_step=0))

    def log_artifacts(self, run_id: str, files: list[Path]) -> None:
        for f in files:
            self.client.log_artifact(run_id, str(f))

    def finish(self, run_id: str, status: str = "FINISHED", end_ms: int | None = None) -> None:
        self.client.set_terminated(run_id, status=status, end_time=end_ms)
