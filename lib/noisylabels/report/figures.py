"""Plots of the report stage's figures: each function draws one kind of figure from a tidy
DataFrame and writes the PNG (atomically): the tables' accuracy curves, and the papers'
figures (report/paper_figures.py builds their data). Where a table's curves go is
tables.curves_path."""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server or in CI
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402


def _save(figure, path: Path, title: str) -> None:
    figure.suptitle(textwrap.fill(title, 110), y=1.02)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}")
    figure.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(figure)
    tmp.replace(path)


def test_accuracy_curves(curves: pd.DataFrame, path: Path, title: str, phase1_epochs: int = 0) -> None:
    """curves: one row per (method, setting, seed, epoch) with test_acc in %. phase1_epochs:
    shaded, where two-phase methods train their phase 1 (their curves start after it)."""
    n_panels = curves["setting"].nunique()
    grid = sns.relplot(
        data=curves, x="epoch", y="test_acc", hue="method", col="setting",
        col_wrap=min(4, n_panels), kind="line", errorbar="sd", height=2.6, aspect=1.2,
        facet_kws={"sharey": False},
    )
    grid.set_axis_labels("epoch", "test accuracy (%)")
    grid.set_titles("{col_name}")
    if phase1_epochs:
        for ax in grid.axes.flat:
            ax.axvspan(0.5, phase1_epochs + 0.5, color="grey", alpha=0.15, lw=0)
        title += f"; shaded: the two-phase methods' phase 1 (epochs 1-{phase1_epochs})"
    _save(grid.figure, path, title)


def epoch_curves(data: pd.DataFrame, path: Path, title: str) -> None:
    """data: panel, epoch, line, value (%), one row per seed: mean ± sd per line."""
    grid = sns.relplot(data=data, x="epoch", y="value", hue="line", col="panel", kind="line", errorbar="sd",
                       height=2.8, aspect=1.2, facet_kws={"sharey": False})
    grid.set_axis_labels("epoch", "accuracy (%)")
    grid.set_titles("{col_name}")
    _save(grid.figure, path, title)


def classwise_curves(data: pd.DataFrame, path: Path, title: str) -> None:
    """data: panel, epoch, line (a class, or 'overall': drawn bold), value: test accuracy (%)."""
    panels = list(dict.fromkeys(data["panel"]))
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.8), sharey=True, squeeze=False)
    for ax, panel in zip(axes[0], panels):
        part = data[data["panel"] == panel]
        for cls, line in part.groupby("line", sort=False):
            bold = cls == "overall"
            ax.plot(line["epoch"], line["value"], lw=2.5 if bold else 0.9, color="black" if bold else None,
                    label=cls, zorder=3 if bold else 2)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("epoch")
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][-1].legend(fontsize=6, ncol=2, loc="lower right")
    _save(figure, path, title)


def classwise_bars(data: pd.DataFrame, path: Path, title: str) -> None:
    """data: panel, series (the bars' colour: an epoch, or a method), class, test_acc (%)."""
    grid = sns.catplot(data=data, x="class", y="test_acc", hue="series", col="panel", kind="bar", height=2.8,
                       aspect=1.5)
    grid.legend.set_title(None)
    grid.set_axis_labels("class", "test accuracy (%)")
    grid.set_titles("{col_name}")
    _save(grid.figure, path, title)


def tsne(data: pd.DataFrame, path: Path, title: str) -> None:
    """data: panel, x, y, class."""
    grid = sns.relplot(data=data, x="x", y="y", hue="class", col="panel", s=8, linewidth=0, height=2.6,
                       facet_kws={"sharex": False, "sharey": False})
    grid.set(xticks=[], yticks=[], xlabel="", ylabel="")
    grid.set_titles("{col_name}")
    _save(grid.figure, path, title)


def confidence_bars(data: pd.DataFrame, path: Path, title: str) -> None:
    """data: panel, class, kind, value: bars per class, coloured by kind."""
    grid = sns.catplot(data=data, x="class", y="value", hue="kind", col="panel", col_wrap=2, kind="bar",
                       height=2.6, aspect=1.5, sharey=False)
    grid.set_titles("{col_name}")
    _save(grid.figure, path, title)
