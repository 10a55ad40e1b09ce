"""Figures: test accuracy per epoch, one panel per noise setting, one line per method."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server or in CI
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402


def test_accuracy_curves(curves: pd.DataFrame, path: Path, title: str) -> None:
    """curves: one row per (method, setting, seed, epoch) with test_acc in %."""
    n_panels = curves["setting"].nunique()
    grid = sns.relplot(
        data=curves, x="epoch", y="test_acc", hue="method", col="setting",
        col_wrap=min(4, n_panels), kind="line", errorbar="sd", height=2.6, aspect=1.2,
        facet_kws={"sharey": False},
    )
    grid.set_axis_labels("epoch", "test accuracy (%)")
    grid.set_titles("{col_name}")
    grid.figure.suptitle(title, y=1.02)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}")
    grid.figure.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(grid.figure)
    tmp.replace(path)
