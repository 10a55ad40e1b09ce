"""The training stages' on-disk format, which the next stage reads.

data/runs/<group>/ (pretrain of a single-phase group, finetune of a two-phase one) and
data/phase1/<group>/ (pretrain of a two-phase group) hold:
group.json   the group's resolved settings, its MLflow parent run id, and per run: name,
             setting, seed, mlflow_run_id, the method's final metrics (e.g. D2L's turning epoch)
<run>.npz    the per-epoch history (history_<key>: engine.HISTORY_KEYS and the method's own),
             test_pred (epochs x n_test), val_pred (epochs x n_val), train_pred (fitted
             samples), transition_matrix when a Forward/Backward loss used one, and phase 1's
             artefacts: `labels` (fitted samples x K, the corrected label distributions of
             joint optimisation / PENCIL) or `score` (O2U's mean centred loss) and `keep`
             (the samples phase 2 trains on), in the fitted samples' order
<run>.pt     the final weights (a state dict, for inspection, or phase 2's `init: phase1`)
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from noisylabels.data.sources import DataError
from noisylabels.io import atomic_dir, write_json


def save(out_dir, group, results: dict, run_ids: dict[str, str], parent_run_id: str) -> None:
    import torch

    with atomic_dir(out_dir) as tmp:
        for name, r in results.items():
            matrix = {} if r.matrix is None else {"transition_matrix": r.matrix}
            np.savez_compressed(tmp / f"{name}.npz", test_pred=r.test_pred, val_pred=r.val_pred,
                                train_pred=r.train_pred, **matrix, **r.artefacts,
                                **{f"history_{k}": np.asarray(v) for k, v in r.history.items()})
            torch.save(r.state_dict, tmp / f"{name}.pt")
        write_json(tmp / "group.json", {
            **{k: v for k, v in dataclasses.asdict(group).items() if k not in ("settings", "seeds")},
            "settings": [s.name for s in group.settings], "seeds": list(group.seeds),
            "mlflow_parent_run_id": parent_run_id,
            "runs": [{"name": run.name, "setting": run.setting.name, "seed": run.seed,
                      "mlflow_run_id": run_ids[run.name], "method_metrics": results[run.name].metrics}
                     for run in group.runs],
        })


def load_group(path) -> dict:
    if not (Path(path) / "group.json").is_file():
        raise DataError(f"{path}: no group.json; run the group's training stage first")
    return json.loads((Path(path) / "group.json").read_text())


def load_run(path, name: str) -> dict[str, np.ndarray]:
    with np.load(Path(path) / f"{name}.npz") as f:
        return dict(f)


ARTEFACTS = ("labels", "score", "keep")


def load_phase1(path, name: str, weights: bool = False) -> dict:
    """A two-phase run's phase-1 artefacts (and its final weights, as `state_dict`)."""
    import torch

    run = load_run(path, name)
    out = {k: run[k] for k in ARTEFACTS if k in run}
    if weights:
        out["state_dict"] = torch.load(Path(path) / f"{name}.pt", weights_only=True)
    return out
