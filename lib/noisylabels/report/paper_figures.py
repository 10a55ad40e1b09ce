"""Every figure: per table section its test accuracy per epoch, and the papers' own figures
on every data set their table sections ran on: reports/figures/<paper>/<figure>.png, a
paper figure with the plotted numbers in <figure>.csv beside it. Drawn by the report stage
(build.py), first:

    python stages/report.py                             # -> reports/figures/{main,sce,joint,gce,o2u}/, and the tables

Each figure names the table section, methods and noise settings it reads (FIGURES); a
figure whose runs are not in params.yaml (a shrunk grid) is skipped with a note. Class-wise
accuracies and prediction counts come from the predictions the training stages saved
(per epoch on the test set, at the end on the training set); t-SNE features and predicted
distributions from the saved final weights (seed 0), evaluated on the stored images.
Epochs of a run of E epochs are compared with the paper's at the same fraction of the run.
A figure whose inputs did not change since the old folder was drawn is kept from it (memo.py):
a paper figure's inputs are every paper table's groups on its data set (never the main
experiment's), an accuracy-curve figure's its table's curves.
"""
from __future__ import annotations

import multiprocessing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from noisylabels import memo
from noisylabels.engine import noise, results
from noisylabels.data import store
from noisylabels.io import atomic_dir, check_writable, dir_digest
from noisylabels.report import figures, tables
from noisylabels.report.published import PAPER_NAMES
from noisylabels.resolve import MAIN, group_names, resolve_group


class NotRun(Exception):
    """A figure's method or noise setting is not in params.yaml's groups: it is skipped."""


@dataclass
class Runs:
    """What the figures read: params.yaml's groups (resolved once), and the stages' outputs
    (each data set loaded once)."""

    params: dict
    raw: str
    noisy: str
    runs: str
    _all: list = field(init=False, repr=False)
    _data: dict = field(default_factory=dict, init=False, repr=False)
    _inputs: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        self._all = [resolve_group(self.params, name) for name in group_names(self.params)]

    def groups(self, table: str, dataset: str | None = None) -> list:
        """The groups of a table section (on one data set), in params order."""
        return [g for g in self._all if g.table == table and dataset in (None, g.dataset.name)]

    def group(self, table: str, method: str, dataset: str):
        found = [g for g in self.groups(table, dataset) if g.method == method]
        if not found:
            raise NotRun(f"no group of {table} with method {method!r} on {dataset}")
        return found[0]

    def datasets(self, table: str) -> list[str]:
        return list(dict.fromkeys(g.dataset.name for g in self.groups(table)))

    def runs_at(self, group, setting: str) -> list:
        """The group's runs at one setting, in seed order."""
        runs = [r for r in group.runs if r.setting.name == setting]
        if not runs:
            raise NotRun(f"group {group.name} has no setting {setting}")
        return runs

    def arrays(self, group, setting: str) -> list[dict]:
        """The saved arrays of the group's runs at one setting, in seed order."""
        return [results.load_run(f"{self.runs}/{group.folder}", r.name, group.stage)
                for r in self.runs_at(group, setting)]

    def data(self, dataset: str):
        if dataset not in self._data:
            self._data[dataset] = store.load(f"{self.raw}/{dataset}")
        return self._data[dataset]

    def paper_inputs(self, dataset: str) -> list:
        """What any paper figure on `dataset` may read: the settings, labels and runs of every
        group of a paper table there (not the main experiment's), and the data set (its
        store.Dataset.digest and class names)."""
        if dataset not in self._inputs:
            groups = [g for g in self._all if g.table != MAIN and g.dataset.name == dataset]
            data = self.data(dataset)
            self._inputs[dataset] = [data.digest, data.classes] + [
                (repr(g), dir_digest(f"{self.noisy}/{g.folder}"), dir_digest(f"{self.runs}/{g.folder}"))
                for g in groups]
        return self._inputs[dataset]


def _label(group, setting: str) -> str:
    return f"{PAPER_NAMES.get(group.method, group.method)}, {setting.replace('symmetric-', 'symmetric ')}"


def classwise_per_epoch(test_pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """epochs x classes: the test accuracy of every class after every epoch."""
    return np.stack([[np.mean(epoch[labels == c] == c) for c in range(num_classes)] for epoch in test_pred])


def _classwise(ctx: Runs, group, setting: str, data) -> np.ndarray:
    """epochs x classes, mean over seeds."""
    return np.mean([classwise_per_epoch(a["test_pred"], data.test_labels, data.num_classes)
                    for a in ctx.arrays(group, setting)], axis=0)


def sce_classwise_curves(ctx: Runs, dataset: str, table="sce_table1"):
    """SCE Fig. 1: class-wise test accuracy per epoch, CE clean and CE, LSR, SL at 40%."""
    panels = [(ctx.group(table, m, dataset), s) for m, s in (("ce", "symmetric-0"), ("ce", "symmetric-0.4"),
                                                              ("lsr", "symmetric-0.4"), ("sl", "symmetric-0.4"))]
    data, rows = ctx.data(dataset), []
    for g, setting in panels:
        acc = _classwise(ctx, g, setting, data)
        overall = np.mean([np.mean(a["test_pred"] == data.test_labels, axis=1) for a in ctx.arrays(g, setting)], 0)
        for e, (per_class, all_) in enumerate(zip(acc, overall), start=1):
            rows += [{"panel": _label(g, setting), "epoch": e, "line": data.classes[c], "value": 100 * v}
                     for c, v in enumerate(per_class)]
            rows.append({"panel": _label(g, setting), "epoch": e, "line": "overall", "value": 100 * all_})
    return pd.DataFrame(rows), figures.classwise_curves


def sce_classwise_at_epochs(ctx: Runs, dataset: str, table="sce_table1"):
    """SCE Fig. 3: class-wise test accuracy of CE at an early, middle and late epoch (10, 50
    and 100 of the paper's 120), clean and at 40% symmetric noise."""
    g = ctx.group(table, "ce", dataset)
    data, rows = ctx.data(dataset), []
    for setting in ("symmetric-0", "symmetric-0.4"):
        acc = _classwise(ctx, g, setting, data)
        for paper_epoch in (10, 50, 100):
            e = max(1, round(len(acc) * paper_epoch / 120))
            rows += [{"panel": _label(g, setting), "series": f"epoch {e} (paper: {paper_epoch} of 120)",
                      "class": data.classes[c], "test_acc": 100 * v} for c, v in enumerate(acc[e - 1])]
    return pd.DataFrame(rows), figures.classwise_bars


def sce_classwise_last(ctx: Runs, dataset: str, table="sce_table1"):
    """SCE Fig. 5: class-wise test accuracy of CE and SL at 60% symmetric noise (last epoch)."""
    groups = [ctx.group(table, m, dataset) for m in ("ce", "sl")]
    data, rows = ctx.data(dataset), []
    for g in groups:
        acc = _classwise(ctx, g, "symmetric-0.6", data)[-1]
        rows += [{"panel": "symmetric 0.6, last epoch", "series": PAPER_NAMES[g.method], "class": data.classes[c],
                  "test_acc": 100 * v} for c, v in enumerate(acc)]
    return pd.DataFrame(rows), figures.classwise_bars


def _penultimate(model, x):
    """The inputs of the model's last linear layer (the representation it classifies)."""
    import torch

    from noisylabels.engine import methods

    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    captured = []
    hook = head.register_forward_hook(lambda mod, inputs, out: captured.append(inputs[0].flatten(1)))
    with torch.no_grad():
        logits = methods.logits(model, x)
    hook.remove()
    return torch.cat(captured).numpy(), torch.softmax(logits.float(), 1).numpy()


def _model_outputs(ctx: Runs, group, setting: str, data, split: str):
    """(penultimate features, predicted distributions) of the first seed's run on the test or
    training images, from its saved weights. torch is imported here, not at the top: a figures
    stage that only draws accuracy curves (the others kept, memo.py) does without its 2 s."""
    import torch

    from noisylabels.engine import loop, models

    torch.set_num_threads(1)  # as in the training workers: a figure does not depend on the core count
    run = ctx.runs_at(group, setting)[0]
    tensors = loop.to_tensors(data, torch.device("cpu"), group.train)
    model = models.build_model(group.model, tensors.train_x.shape[1:], data.num_classes)
    model.load_state_dict(torch.load(Path(ctx.runs) / group.folder / f"{run.name}.pt", weights_only=True))
    x = tensors.test_x if split == "test" else tensors.train_x
    return _penultimate(model, x[torch.arange(len(x))])


def sce_tsne(ctx: Runs, dataset: str, table="sce_table1"):
    """SCE Fig. 2 and 7: t-SNE of the penultimate-layer features of the test set, coloured by
    true class: CE clean, CE and SL at 40%, CE and SL at 60%."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    panels = [(ctx.group(table, m, dataset), s) for m, s in (("ce", "symmetric-0"), ("ce", "symmetric-0.4"),
                                                              ("sl", "symmetric-0.4"), ("ce", "symmetric-0.6"),
                                                              ("sl", "symmetric-0.6"))]
    for g, setting in panels:
        ctx.runs_at(g, setting)  # every panel's runs exist before any is computed
    data, rows = ctx.data(dataset), []
    for g, setting in panels:
        features, _ = _model_outputs(ctx, g, setting, data, "test")
        perplexity = min(30.0, len(features) - 1)  # sklearn's default, below the sample count
        with threadpool_limits(1):  # one OpenMP thread: a figure does not depend on the core count (the
            # other drawing process has the other core; two threads each were 1.7x slower here)
            xy = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=0).fit_transform(features)
        rows += [{"panel": _label(g, setting), "x": a, "y": b, "class": data.classes[c]}
                 for (a, b), c in zip(xy, data.test_labels)]
    out = pd.DataFrame(rows)
    out["class"] = pd.Categorical(out["class"], categories=data.classes)  # the legend in class order
    return out, figures.tsne


def sce_confidence(ctx: Runs, dataset: str, table="sce_table1"):
    """SCE Fig. 4 and 6, CE and SL at 40%: (a) the mean predicted distribution of the
    correctly labelled training samples of the hard class (the class CE learns worst on the
    test set), (b) per class, the training predictions and the true positives among them."""
    groups = [ctx.group(table, m, dataset) for m in ("ce", "sl")]
    data, rows = ctx.data(dataset), []
    hard = int(np.argmin(_classwise(ctx, groups[0], "symmetric-0.4", data)[-1]))
    for g in groups:
        method = g.method
        run = ctx.runs_at(g, "symmetric-0.4")[0]
        labels = noise.load(f"{ctx.noisy}/{g.folder}", g, len(data.train_labels)).for_run(run)
        fit = ~labels.val
        true, noisy = data.train_labels[fit], labels.noisy[fit]
        _, probs = _model_outputs(ctx, g, "symmetric-0.4", data, "train")
        probs = probs[fit]
        clean_hard = (true == hard) & (noisy == hard)
        rows += [{"panel": f"{PAPER_NAMES[method]}: mean prediction, correctly labelled '{data.classes[hard]}'",
                  "class": data.classes[c], "kind": "probability", "value": p}
                 for c, p in enumerate(probs[clean_hard].mean(0))]
        pred = results.load_run(f"{ctx.runs}/{g.folder}", run.name, g.stage)["train_pred"]
        for c in range(data.num_classes):
            counts = (("predictions", np.sum(pred == c)), ("true positives", np.sum((pred == c) & (true == c))))
            rows += [{"panel": f"{PAPER_NAMES[method]}: training predictions per class", "class": data.classes[c],
                      "kind": kind, "value": int(v)} for kind, v in counts]
    return pd.DataFrame(rows), figures.confidence_bars


def _loss_label(group) -> str:
    """A line's name from its loss settings (for sweeps whose method keys are not names)."""
    loss = group.written.loss
    if loss.name == "gce":
        return f"Lq (q={loss.q:g})"
    if loss.name == "sl":
        return f"alpha={loss.alpha:g}, A={loss.A:g}"
    return PAPER_NAMES.get(group.method, group.method)


def _curves(ctx: Runs, group, setting: str, panel: str, line: str, key="history_test_acc") -> list[dict]:
    """One row per seed and epoch of a history key (in %)."""
    return [{"panel": panel, "epoch": e, "line": line, "seed": seed, "value": 100 * v}
            for seed, arrays in zip(group.seeds, ctx.arrays(group, setting)) for e, v in enumerate(arrays[key], 1)]


def sce_parameters(ctx: Runs, dataset: str, table="sce_params"):
    """SCE Fig. 8: SL's test accuracy per epoch at 60% symmetric noise, (a) alpha in {0.01,
    0.1, 0.5, 1} with A = -6, (b) A in {-8, -6, -4, -2} with alpha 0.1, (c) the same with
    alpha 1 (every group of the sce_params section, placed by its loss settings)."""
    rows = []
    for g in ctx.groups(table, dataset):
        loss = g.written.loss
        for panel, member, line in (("(a) alpha, A = -6", loss.A == -6, f"alpha={loss.alpha:g}"),
                                    ("(b) A, alpha = 0.1", loss.alpha == 0.1, f"A={loss.A:g}"),
                                    ("(c) A, alpha = 1", loss.alpha == 1, f"A={loss.A:g}")):
            if member:
                rows += _curves(ctx, g, "symmetric-0.6", panel, line)
    return pd.DataFrame(rows), figures.epoch_curves


def sce_ablation(ctx: Runs, dataset: str, table="sce_ablation"):
    """SCE Fig. 9a: test accuracy per epoch at 60% symmetric noise of CE and SL (sce_table1)
    and of SL without its CE term (RCE), upscaled CE (2CE, 5CE) and upscaled RCE (5RCE)."""
    rows = []
    for g in [ctx.group("sce_table1", m, dataset) for m in ("ce", "sl")] + ctx.groups(table, dataset):
        rows += _curves(ctx, g, "symmetric-0.6", "symmetric 0.6", PAPER_NAMES.get(g.method, g.method))
    return pd.DataFrame(rows), figures.epoch_curves


def joint_finetune_curves(ctx: Runs, dataset: str, table="joint_table"):
    """Seed 002 Fig. 3: the fine-tuning step of Ours (improved), test accuracy and training
    accuracy (on the training samples' true labels) per epoch, at 90% symmetric and 30%
    asymmetric noise."""
    g = ctx.group(table, "improved", dataset)
    rows = []
    for setting in ("symmetric-all-0.9", "asymmetric-0.3"):
        panel = setting.replace("-0.", " 0.")
        rows += _curves(ctx, g, setting, panel, "test")
        rows += _curves(ctx, g, setting, panel, "training (true labels)", "history_train_pass_acc_true")
    return pd.DataFrame(rows), figures.epoch_curves


def gce_clean_curves(ctx: Runs, dataset: str, table="gce_clean"):
    """GCE slides: test accuracy per epoch on clean labels of CCE, the Lq family and MAE
    (MAE converges much more slowly; Lq between them)."""
    rows = []
    for g in ctx.groups(table, dataset):
        rows += _curves(ctx, g, "symmetric-0", "clean labels", _loss_label(g))
    return pd.DataFrame(rows), figures.epoch_curves


# paper -> figure name -> (the table section it reads, the function building its data and
# choosing its plot, the title)
FIGURES = {
    "sce": {
        "fig1_classwise_curves": ("sce_table1", sce_classwise_curves, "SCE Fig. 1: class-wise test accuracy per epoch"),
        "fig2_7_tsne": ("sce_table1", sce_tsne, "SCE Fig. 2 and 7: t-SNE of the test set's penultimate-layer "
                                                "features (seed 0)"),
        "fig3_classwise_epochs": ("sce_table1", sce_classwise_at_epochs, "SCE Fig. 3: class-wise test accuracy of "
                                                                        "CE at an early, middle and late epoch"),
        "fig4_6_confidence": ("sce_table1", sce_confidence, "SCE Fig. 4 and 6: training-set predictions of CE and SL "
                                                            "at 40% symmetric noise (seed 0)"),
        "fig5_classwise_60": ("sce_table1", sce_classwise_last, "SCE Fig. 5: class-wise test accuracy of CE and SL"),
        "fig8_parameters": ("sce_params", sce_parameters, "SCE Fig. 8: SL's alpha and A at 60% symmetric noise"),
        "fig9a_ablation": ("sce_ablation", sce_ablation, "SCE Fig. 9a: ablation of SL at 60% symmetric noise"),
    },
    "joint": {"fig3_finetune_curves": ("joint_table", joint_finetune_curves,
                                       "Seed 002 Fig. 3: the fine-tuning step of Ours (improved)")},
    "gce": {"slides_clean_curves": ("gce_clean", gce_clean_curves,
                                    "GCE slides: CCE, the Lq family and MAE on clean labels")},
}


def build(params: dict, curves: pd.DataFrame, raw: str, noisy: str, runs: str, out: str,
          workers: int = 1) -> list[str]:
    """Every figure into a fresh `out` folder that replaces the old one at the end: every paper
    figure on every data set its table ran on, then per table its accuracy curves
    (out/<paper>/<table>_test_acc.png). A figure made from the same inputs as the one in the
    old folder is kept from there (memo.py). Returns the lines to print (what was written,
    kept or skipped). The figures are drawn by `workers` processes side by side (drawing is
    most of this stage's time); each draws in one thread, so a figure is the same for any
    `workers`. params, curves: the report's, read and checked before anything is drawn
    (resolve.load_params, tables.collect)."""
    ctx = Runs(params, raw, noisy, runs)
    check_writable(out)
    lines, todo = [], []  # todo: (name, key, job)
    with atomic_dir(out) as tmp:
        reuse = memo.Reuse(out, tmp)
        # the paper figures first: t-SNE, a third of the drawing time, then starts at once
        for paper, figs in FIGURES.items():
            for name, spec in figs.items():
                datasets = ctx.datasets(spec[0])
                if not datasets:
                    lines.append(f"figures: {paper}/{name} skipped: no group of table {spec[0]!r} in params.yaml")
                for dataset in datasets:
                    todo.append((f"{paper}/{name}_{dataset}", memo.key(paper, name, ctx.paper_inputs(dataset)),
                                 partial(_paper_figure, ctx, paper, name, spec, dataset, tmp, out)))
        for table, part in curves.groupby("table", sort=False):
            path = tables.curves_path("", table, params)
            todo.append((path.with_suffix("").as_posix(),
                         memo.key(table, tables.title(table, params), _phase1_epochs(ctx, table), part.to_csv()),
                         partial(_accuracy_curves, ctx, table, part, tmp, out)))
        kept = [name for name, key, _ in todo if reuse.keep(name, key)]  # copied into tmp
        todo = [item for item in todo if item[0] not in kept]
        for (name, key, _), (said, files) in zip(todo, _run_all([job for _, _, job in todo], workers)):
            lines += said
            if files:
                reuse.made(name, key, files)
        reuse.write()
    if kept:
        lines.append(f"figures: kept {len(kept)} of {len(kept) + len(todo)} figures, their inputs unchanged "
                     f"({memo.MANIFEST})")
    return lines


def _phase1_epochs(ctx: Runs, table: str) -> int:
    return max((g.written.pretrain.total_epochs for g in ctx.groups(table) if g.two_phase), default=0)


def _accuracy_curves(ctx: Runs, table: str, part: pd.DataFrame, tmp: Path, out: str):
    """(the line to print, the files written, relative to tmp)."""
    path = tables.curves_path(tmp, table, ctx.params)
    named = part.assign(method=part["method"].map(lambda m: PAPER_NAMES.get(m, m)))
    figures.test_accuracy_curves(named, path, f"{tables.title(table, ctx.params)}: test accuracy per epoch "
                                 "(mean ± sd over seeds)", _phase1_epochs(ctx, table))
    # the same numbers in the paper figures' layout (a DVC plot: dvc_plots/curves.json)
    named.rename(columns={"setting": "panel", "method": "line", "test_acc": "value"})[
        ["panel", "line", "seed", "epoch", "value"]].to_csv(path.with_suffix(".csv"), index=False,
                                                            float_format="%.4f")
    return [f"figures: {tables.curves_path(out, table, ctx.params)}"], _png_and_csv(path, tmp)


def _paper_figure(ctx: Runs, paper: str, name: str, spec: tuple, dataset: str, tmp: Path, out: str):
    """(the lines to print, the files written, relative to tmp: none when skipped)."""
    _, make, title = spec
    try:
        data, plot = make(ctx, dataset)
    except NotRun as e:
        return [f"figures: {paper}/{name} on {dataset} skipped: {e}"], []
    path = tmp / paper / f"{name}_{dataset}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    data.to_csv(path.with_suffix(".csv"), index=False, float_format="%.4f")
    plot(data, path, f"{title} ({dataset})")
    return [f"figures: {Path(out) / paper / path.name}"], _png_and_csv(path, tmp)


def _png_and_csv(path: Path, tmp: Path) -> list[Path]:
    """A figure's files, relative to tmp (what memo.Reuse records)."""
    return [path.relative_to(tmp), path.with_suffix(".csv").relative_to(tmp)]


_jobs: list = []  # the figures to draw, inherited by the forked processes that draw them


def _run_job(i: int):
    return _jobs[i]()


def _run_all(jobs: list, workers: int) -> list:
    """Each job's result, in job order. The processes are forked: they inherit the jobs, with
    the runs and data sets they read. Without fork, or with one worker, the jobs run here."""
    _jobs[:] = jobs
    try:
        processes = min(workers, len(jobs))
        if processes <= 1 or "fork" not in multiprocessing.get_all_start_methods():
            return [_run_job(i) for i in range(len(jobs))]
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            return pool.map(_run_job, range(len(jobs)), chunksize=1)
    finally:
        _jobs.clear()
