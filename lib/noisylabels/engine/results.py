"""The training stages' on-disk format, which the next stage reads.

data/runs/<group.folder>/ (pretrain of a single-phase group: data/runs/<table>-<dataset>/<group>;
finetune of a two-phase one: data/runs/<group>) and data/phase1/<group>/ (pretrain of a
two-phase group) hold:
group.json   the group's resolved settings, and per run: name, setting, seed, the method's
             final metrics (e.g. D2L's turning epoch)
<run>.npz    the per-epoch history (history_<key>: loop.HISTORY_KEYS and the method's own),
             test_pred (epochs x n_test), val_pred (epochs x n_val), train_pred (fitted
             samples), transition_matrix when a Forward/Backward loss used one, and phase 1's
             artefacts: `labels` (fitted samples x K, the corrected label distributions of
             joint optimisation / PENCIL) or `score` (O2U's mean centred loss) and `keep`
             (the samples phase 2 trains on), in the fitted samples' order
<run>.pt     the final weights (a state dict, for inspection, or phase 2's `init: phase1`)
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from noisylabels.errors import DataError
from noisylabels.io import atomic_dir, read_json, write_json


def save(out_dir, group, results: dict) -> None:
    """The outputs hold no MLflow run id, time or path: the same training gives the same bytes
    (so DVC sees no change), and MLflow finds its parent run by their digest (the parent's
    `outputs` tag, tracking.py)."""
    import torch

    with atomic_dir(out_dir) as tmp:
        for name, r in results.items():
            matrix = {} if r.matrix is None else {"transition_matrix": r.matrix}
            np.savez_compressed(tmp / f"{name}.npz", test_pred=r.test_pred, val_pred=r.val_pred,
                                train_pred=r.train_pred, **matrix, **r.artefacts,
                                **{f"history_{k}": np.asarray(v) for k, v in r.history.items()})
            torch.save(r.state_dict, tmp / f"{name}.pt")
        write_json(tmp / "group.json", {
            "group": group.name, "table": group.table, "paper": group.paper, **group.values(),
            "overrides": group.changed_settings(),
            "settings": [s.name for s in group.settings], "seeds": list(group.seeds),
            "runs": [{"name": run.name, "setting": run.setting.name, "seed": run.seed,
                      "method_metrics": results[run.name].metrics}
                     for run in group.runs],
        })


def load_group(path, stage: str) -> dict:
    """group.json of a training stage's output; `stage`: the DVC stage that writes it."""
    return read_json(Path(path) / "group.json", f"dvc repro -f {stage}", keys=("runs",))


def load_run(path, name: str, stage: str) -> dict[str, np.ndarray]:
    """A run's arrays (<run>.npz, never unpickled); `stage`: the DVC stage that writes it."""
    file = Path(path) / f"{name}.npz"
    try:
        with np.load(file, allow_pickle=False) as f:
            return dict(f)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{file}: {'missing' if isinstance(e, FileNotFoundError) else 'unreadable'}; "
                        f"regenerate it with `dvc repro -f {stage}`") from None


ARTEFACTS = ("labels", "score", "keep")


def load_phase1(path, name: str, stage: str) -> dict:
    """A two-phase run's phase-1 artefacts."""
    run = load_run(path, name, stage)
    return {k: run[k] for k in ARTEFACTS if k in run}


def load_phase1_group(path, group) -> dict:
    """Phase 1's outputs for the finetune stage: run name -> its artefacts and, where its
    finetune section says init: phase1, its final weights as `state_dict`."""
    import torch

    out = {}
    for run in group.runs:
        out[run.name] = load_phase1(path, run.name, group.phase1_stage)
        if run.method.finetune.init == "phase1":
            weights = Path(path) / f"{run.name}.pt"
            try:
                out[run.name]["state_dict"] = torch.load(weights, weights_only=True)
            except (OSError, RuntimeError, ValueError, EOFError) as e:  # a bad zip is a RuntimeError
                raise DataError(f"{weights}: {'missing' if isinstance(e, FileNotFoundError) else 'unreadable'}; "
                                f"regenerate it with `dvc repro -f {group.phase1_stage}`") from None
    load_group(path, group.phase1_stage)  # checked: a damaged folder stops here
    return out
