"""Tables: per-run metrics -> mean ± std over seeds, laid out like the papers' tables.

`collect` builds the list of expected runs from params.yaml (never from a glob of files), so
a shrunk grid leaves no stale rows and a missing run is an error, not a silent gap.
Accuracies and shares are in % (AUROC stays in [0, 1]); std is the sample standard
deviation over seeds (metrics.mean_std). Two-phase methods add their label-correction or
noise-detection metrics, each as its own table.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from noisylabels.errors import DataError
from noisylabels.io import read_json
from noisylabels.resolve import MAIN, group_names, resolve_group
from noisylabels.engine.metrics import DETECTION, LABEL_CORRECTION, SEED_SUMMARY, mean_std
from noisylabels.report.published import PAPER_NAMES, PUBLISHED, UNPUBLISHED

METRICS = (*SEED_SUMMARY, *LABEL_CORRECTION, *DETECTION)
NOT_PERCENT = ("realized_noise_rate", "detect_auroc")
# the tables of a data set, in order: metric -> heading
SHOWN = {
    "test_acc_last": "test accuracy (%), last epoch",
    "test_acc_best": "test accuracy (%), best epoch",
    "label_acc_corrected": "accuracy of the corrected labels (%)",
    "label_fixed": "wrong labels fixed by the correction (%)",
    "label_broken": "right labels broken by the correction (%)",
    "detect_precision": "noise detection precision (%): wrong labels among the removed samples",
    "detect_recall": "noise detection recall (%): removed samples among the wrong labels",
    "detect_auroc": "noise detection AUROC of the O2U ranking",
}


def collect(params: dict, metrics_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per run, one row per run and epoch) for every run group in params."""
    metrics_dir = Path(metrics_dir)
    rows, curves = [], []
    for name in group_names(params):
        g = resolve_group(params, name)
        path = metrics_dir / f"{name}.json"
        saved = read_json(path, "dvc repro -f evaluate", keys=("runs",))
        by_run, offset = {r["run"]: r for r in saved["runs"]}, saved.get("epoch_offset", 0)
        for run in g.runs:
            if run.name not in by_run:
                raise DataError(f"{path}: has no run {run.name!r}; rerun the evaluate stage of {name!r}")
            rec = by_run[run.name]
            keys = {"group": name, "table": g.table, "dataset": g.dataset.name, "method": g.method,
                    "setting": run.setting.name, "noise_type": run.setting.type,
                    "noise_rate": run.setting.rate, "seed": run.seed}
            rows.append({**keys, "best_epoch": rec["best_epoch"],
                         **{m: rec.get(m, np.nan) * (1 if m in NOT_PERCENT else 100) for m in METRICS}})
            # a two-phase method's final training follows its phase 1 on the epoch axis
            curves += [{**keys, "epoch": e, "test_acc": 100 * acc}
                       for e, acc in enumerate(rec["test_acc_per_epoch"], start=1 + offset)]
    return pd.DataFrame(rows), pd.DataFrame(curves)


def curves_path(folder, table: str, params: dict) -> Path:
    """Where a table's test accuracy curves are drawn (paper_figures.py) and found (build.py,
    which attaches them in MLflow): <folder>/<the table's paper, or main>/<table>_test_acc.png."""
    return Path(folder) / ("main" if table == MAIN else params[table]["paper"]) / f"{table}_test_acc.png"


def title(table: str, params: dict) -> str:
    """A table section's title (params `<table>.title`), as its report and figures show it."""
    return "Main experiment" if table == MAIN else params[table].get("title", table)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of every (table, data set, method, setting), in params order."""
    keys = ["table", "dataset", "method", "setting", "noise_type", "noise_rate"]
    grouped = runs.groupby(keys, sort=False)
    out = grouped.size().rename("n_seeds").reset_index()
    for m in METRICS:  # a metric no run has (e.g. detection in an SCE table) stays NaN
        stats = grouped[m].apply(mean_std).tolist() if m in runs else [(np.nan, np.nan)] * len(out)
        out[f"{m}_mean"], out[f"{m}_std"] = [s[0] for s in stats], [s[1] for s in stats]
    return out


def _cell(mean, std, digits: int = 2) -> str:
    """'mean ± std'; the mean alone where the std is unknown (the paper gives none) or
    undefined (a single seed)."""
    if mean is None or np.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if std is None or np.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def setting_label(setting: str) -> str:
    """'symmetric-all-0.3' -> 'symmetric-all 0.3': the noise type, then the rate."""
    return " ".join(setting.rsplit("-", 1))


def _pivot(summary: pd.DataFrame, metric: str, published: dict | None = None) -> pd.DataFrame:
    """Methods (as the papers name them) as rows, noise settings as columns, 'mean ± std'
    cells, each followed by the published number in brackets where `published` (method ->
    {setting: (mean, std)}) has one."""
    settings = list(dict.fromkeys(summary["setting"]))
    rows = summary[summary[f"{metric}_mean"].notna()]
    methods = list(dict.fromkeys(rows["method"]))
    table = pd.DataFrame(index=[PAPER_NAMES.get(m, m) for m in methods], columns=[setting_label(s) for s in settings])
    digits = 3 if metric == "detect_auroc" else 2
    for r in rows.itertuples():
        cell = _cell(getattr(r, f"{metric}_mean"), getattr(r, f"{metric}_std"), digits)
        paper = (published or {}).get(r.method, {}).get(r.setting)
        if paper:
            cell += f" [{_cell(*paper)}]"
        table.loc[PAPER_NAMES.get(r.method, r.method), setting_label(r.setting)] = cell
    table.index.name = "method"
    return table.fillna("–")


def published_for(table: str, dataset: str):
    """(published data set name, {metric: {method: {setting: (mean, std)}}}, source) or None."""
    entry = PUBLISHED.get(table)
    if not entry:
        return None
    shown = dataset if dataset in entry["datasets"] else entry["stand_in"].get(dataset)
    if shown not in entry["datasets"]:
        return None
    return shown, entry["datasets"][shown], entry["source"]


def table_markdown(title: str, summary: pd.DataFrame, seeds: list[int], notes: list[str] = ()) -> str:
    """The Markdown report of one table section: per data set and metric, ours with the
    published number beside it in the same cell, labelled in the line above the table."""
    parts = [f"# {title}", "",
             f"Ours: mean ± sample std over seeds {', '.join(map(str, seeds))} (the mean alone with one seed). "
             "*Last*: after the final epoch. *Best*: at the epoch with the highest accuracy on the held-out split "
             "of the noisy training labels (never chosen on the test set). Label and detection metrics are on the "
             "fitted training samples, against their true labels.", "", *[f"*{n}*\n" for n in notes]]
    for dataset, part in summary.groupby("dataset", sort=False):
        table = part["table"].iloc[0]
        pub = published_for(table, dataset)
        shown, by_metric, source = pub if pub else (None, {}, None)
        if table in UNPUBLISHED:
            parts += [f"*{UNPUBLISHED[table]}*", ""]
        for metric, heading in SHOWN.items():
            if not part[f"{metric}_mean"].notna().any():
                continue
            parts += [f"## {dataset}: {heading}", ""]
            if metric in by_metric:
                stand_in = "" if shown == dataset else ", shown for reference: not the same data set as ours"
                parts += [f"In brackets: published, {shown} ({source}{stand_in}).", ""]
            parts += [_pivot(part, metric, by_metric.get(metric)).to_markdown(disable_numparse=True), ""]
            if metric == "label_acc_corrected":  # what the correction started from
                noisy = part[part["label_acc_noisy_mean"].notna()].drop_duplicates("setting")
                parts += ["Accuracy of the noisy labels themselves (%): " + ", ".join(
                    f"{setting_label(r.setting)} {r.label_acc_noisy_mean:.2f}" for r in noisy.itertuples()), ""]
    return "\n".join(parts)


def shared_phase1(groups: list) -> list[str]:
    """Notes for a table: two-phase methods of one data set with the same phase-1 settings
    (e.g. O2U-Net and O2U-Net + APL) train the same phase 1, so their label or detection
    numbers are the same."""
    by_phase1: dict = {}
    for g in groups:
        if g.two_phase:
            by_phase1.setdefault((g.dataset.name, g.written.pretrain), []).append(g.method)
    return [f"{' and '.join(PAPER_NAMES.get(m, m) for m in methods)} share phase 1 on {dataset} (the same pretrain "
            "settings): their label-correction or detection numbers are those of the same phase 1."
            for (dataset, _), methods in by_phase1.items() if len(methods) > 1]


def table_csv(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary (metrics without a value in this table dropped) with the published numbers,
    where there are any, as extra columns published_<metric>_mean / _std."""
    out = summary.loc[:, [c for c in summary.columns if not summary[c].isna().all()]].copy()
    out["published_dataset"] = ""
    for i, r in out.iterrows():
        pub = published_for(r["table"], r["dataset"])
        if not pub:
            continue
        out.loc[i, "published_dataset"] = pub[0]
        for metric, rows in pub[1].items():
            mean, std = rows.get(r["method"], {}).get(r["setting"], (np.nan, None))
            out.loc[i, [f"published_{metric}_mean", f"published_{metric}_std"]] = mean, np.nan if std is None else std
    return out


def metrics_summary(summary: pd.DataFrame) -> dict:
    """reports/metrics.json for `dvc exp show`: the main experiment in full and, per table, data
    set and method, one headline number: test_acc_last averaged over the table's noise settings
    (its "average" column; the per-setting numbers are in reports/tables/<table>.csv). About 60
    metric columns in `dvc exp show`, where one per setting made 200."""
    out = {}
    for r in summary.itertuples():
        if r.table == "main":
            out["main"] = {"setting": r.setting, "n_seeds": int(r.n_seeds),
                           **{f"{m}{s}": _number(getattr(r, f"{m}_{stat}"))
                              for m in SEED_SUMMARY for s, stat in (("", "mean"), ("_std", "std"))}}
    paper_tables = summary[summary["table"] != "main"]
    means = paper_tables.groupby(["table", "dataset", "method"], sort=False)["test_acc_last_mean"].mean()
    for (table, dataset, method), value in means.items():
        out.setdefault(table, {}).setdefault(dataset, {})[method] = _number(value)
    return out


def _number(value) -> float | None:
    """A JSON number, rounded; None (null) for NaN, which JSON has not (a single seed's std)."""
    return None if np.isnan(value) else round(float(value), 4)
