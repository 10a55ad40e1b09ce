"""Tables: per-run metrics -> mean ± std over seeds, laid out like the papers' tables.

`collect` builds the list of expected runs from params.yaml (never from a glob of files), so
a shrunk grid leaves no stale rows and a missing run is an error, not a silent gap.
Accuracies are in %; std is the sample standard deviation over seeds (metrics.mean_std).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from noisylabels.config import group_names, resolve_group
from noisylabels.data.sources import DataError
from noisylabels.metrics import SEED_SUMMARY, mean_std
from noisylabels.report.published import PUBLISHED, UNPUBLISHED

PERCENT = ("test_acc_last", "test_acc_best", "train_acc_noisy", "train_acc_true")


def collect(params: dict, metrics_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per run, one row per run and epoch) for every run group in params."""
    metrics_dir = Path(metrics_dir)
    rows, curves = [], []
    for name in group_names(params):
        g = resolve_group(params, name)
        path = metrics_dir / f"{name}.json"
        if not path.is_file():
            raise DataError(f"{path}: missing; run the evaluate stage of group {name!r} first")
        by_run = {r["run"]: r for r in json.loads(path.read_text())["runs"]}
        for run in g.runs:
            if run.name not in by_run:
                raise DataError(f"{path}: has no run {run.name!r}; rerun the evaluate stage of {name!r}")
            rec = by_run[run.name]
            keys = {"group": name, "table": g.table, "dataset": g.dataset, "method": g.method,
                    "setting": run.setting.name, "noise_type": run.setting.type,
                    "noise_rate": run.setting.rate, "seed": run.seed}
            rows.append({**keys, "best_epoch": rec["best_epoch"],
                         **{m: rec[m] * (100 if m in PERCENT else 1) for m in SEED_SUMMARY}})
            curves += [{**keys, "epoch": e, "test_acc": 100 * acc}
                       for e, acc in enumerate(rec["test_acc_per_epoch"], start=1)]
    return pd.DataFrame(rows), pd.DataFrame(curves)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of every (table, data set, method, setting), in params order."""
    keys = ["table", "dataset", "method", "setting", "noise_type", "noise_rate"]
    grouped = runs.groupby(keys, sort=False)
    out = grouped.size().rename("n_seeds").reset_index()
    for m in SEED_SUMMARY:
        stats = grouped[m].apply(mean_std).tolist()
        out[f"{m}_mean"], out[f"{m}_std"] = [s[0] for s in stats], [s[1] for s in stats]
    return out


def _cell(mean, std) -> str:
    return "–" if np.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def _pivot(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Methods as rows, noise settings as columns, 'mean ± std' cells."""
    settings = list(dict.fromkeys(summary["setting"]))
    methods = list(dict.fromkeys(summary["method"]))
    table = pd.DataFrame(index=methods, columns=[s.replace("-", " ", 1) for s in settings])
    for r in summary.itertuples():
        table.loc[r.method, r.setting.replace("-", " ", 1)] = _cell(getattr(r, f"{metric}_mean"), getattr(r, f"{metric}_std"))
    table.index.name = "method"
    return table.fillna("–")


def published_for(table: str, dataset: str):
    """(published data set name, {method: {setting: (mean, std)}}, source) or None."""
    entry = PUBLISHED.get(table)
    if not entry:
        return None
    shown = dataset if dataset in entry["datasets"] else entry["stand_in"].get(dataset)
    if shown not in entry["datasets"]:
        return None
    return shown, entry["datasets"][shown], entry["source"]


def _published_pivot(summary: pd.DataFrame, rows: dict) -> pd.DataFrame:
    settings = list(dict.fromkeys(summary["setting"]))
    methods = [m for m in dict.fromkeys(summary["method"]) if m in rows]
    table = pd.DataFrame(
        [[_cell(*rows[m].get(s, (np.nan, np.nan))) for s in settings] for m in methods],
        index=methods, columns=[s.replace("-", " ", 1) for s in settings])
    table.index.name = "method"
    return table


def table_markdown(title: str, summary: pd.DataFrame, seeds: list[int]) -> str:
    """The Markdown report of one table section: ours (last, best) and published, per data set."""
    parts = [f"# {title}", "",
             f"Test accuracy (%), mean ± sample std over seeds {', '.join(map(str, seeds))}. "
             "*Last*: after the final epoch. *Best*: at the epoch with the highest accuracy on "
             "the held-out split of the noisy training labels (never chosen on the test set).", ""]
    for dataset, part in summary.groupby("dataset", sort=False):
        parts += [f"## {dataset}: ours, last epoch", "", _pivot(part, "test_acc_last").to_markdown(), "",
                  f"## {dataset}: ours, best epoch", "", _pivot(part, "test_acc_best").to_markdown(), ""]
        table = part["table"].iloc[0]
        pub = published_for(table, dataset)
        if table in UNPUBLISHED:
            parts += [f"*{UNPUBLISHED[table]}*", ""]
        if pub:
            shown, rows, source = pub
            note = "" if shown == dataset else f" ({shown}, shown for reference: not the same data set as ours)"
            parts += [f"## published: {source}, {shown}{note}", "",
                      _published_pivot(part, rows).to_markdown(), ""]
    return "\n".join(parts)


def table_csv(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with the published numbers, where there are any, as extra columns."""
    out = summary.copy()
    out["published_dataset"], out["published_mean"], out["published_std"] = "", np.nan, np.nan
    for i, r in out.iterrows():
        pub = published_for(r["table"], r["dataset"])
        if pub and r["setting"] in pub[1].get(r["method"], {}):
            out.loc[i, "published_dataset"] = pub[0]
            out.loc[i, ["published_mean", "published_std"]] = pub[1][r["method"]][r["setting"]]
    return out


def metrics_summary(summary: pd.DataFrame) -> dict:
    """reports/metrics.json for `dvc exp show`: the main experiment in full, tables' last-epoch means."""
    out = {}
    for r in summary.itertuples():
        if r.table == "main":
            out["main"] = {"setting": r.setting, "n_seeds": int(r.n_seeds),
                           **{f"{m}{s}": round(float(getattr(r, f"{m}_{stat}")), 4)
                              for m in SEED_SUMMARY for s, stat in (("", "mean"), ("_std", "std"))}}
        else:
            out.setdefault(r.table, {}).setdefault(r.dataset, {}).setdefault(r.method, {})[r.setting] = round(
                float(r.test_acc_last_mean), 4)
    return out
