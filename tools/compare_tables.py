"""Compare two versions of reports/tables/: did a change move the numbers beyond seed noise?

    python tools/compare_tables.py OLD_DIR [NEW_DIR]        # NEW_DIR defaults to reports/tables
    git worktree add /tmp/old <rev> && python tools/compare_tables.py /tmp/old/reports/tables

For an engine change that should change results only in the last bits (e.g. stacking runs),
prints per table the mean absolute change of test_acc_last (mean over seeds, per cell) next
to the mean seed std of those cells, and lists every cell that moved by more than two of its
stds (the larger of its old and new std).
"""
from pathlib import Path

import click
import pandas as pd

KEYS = ["dataset", "method", "setting"]


@click.command()
@click.argument("old_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("new_dir", default="reports/tables", type=click.Path(exists=True, file_okay=False))
@click.option("--metric", default="test_acc_last", show_default=True)
def main(old_dir, new_dir, metric):
    mean, std = f"{metric}_mean", f"{metric}_std"
    for new_csv in sorted(Path(new_dir).glob("*.csv")):
        old_csv = Path(old_dir) / new_csv.name
        if not old_csv.is_file():
            click.echo(f"{new_csv.stem}: not in {old_dir}")
            continue
        cells = pd.read_csv(old_csv).merge(pd.read_csv(new_csv), on=KEYS, suffixes=("_old", "_new"))
        change = (cells[f"{mean}_new"] - cells[f"{mean}_old"]).abs()
        noise = cells[[f"{std}_old", f"{std}_new"]].max(axis=1)
        moved = cells[change > 2 * noise]
        click.echo(f"{new_csv.stem}: {len(cells)} cells, mean |change| {change.mean():.2f}, "
                   f"mean seed std {cells[[f'{std}_old', f'{std}_new']].mean(axis=None):.2f}, "
                   f"{len(moved)} moved by more than 2 stds")
        for _, r in moved.iterrows():
            click.echo(f"  {r['dataset']} {r['method']} {r['setting']}: {r[f'{mean}_old']:.2f} ± {r[f'{std}_old']:.2f}"
                       f" -> {r[f'{mean}_new']:.2f} ± {r[f'{std}_new']:.2f}")


if __name__ == "__main__":
    main()
