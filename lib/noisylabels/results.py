"""The pretrain stage's on-disk format, data/runs/<group>/, which the evaluate stage reads.

group.json   the group's resolved settings, its MLflow parent run id, and per run: name,
             setting, seed, mlflow_run_id, the method's final metrics (e.g. D2L's turning epoch)
<run>.npz    the per-epoch history (history_<key>: engine.HISTORY_KEYS and the method's own),
             test_pred (epochs x n_test), val_pred (epochs x n_val), train_pred (fitted
             samples), and transition_matrix when a Forward/Backward loss used one
<run>.pt     the final weights (a state dict, for inspection or reuse)
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from noisylabels.io import atomic_dir, write_json


def save(out_dir, group, results: dict, run_ids: dict[str, str], parent_run_id: str) -> None:
    import torch

    with atomic_dir(out_dir) as tmp:
        for name, r in results.items():
            matrix = {} if r.matrix is None else {"transition_matrix": r.matrix}
            np.savez_compressed(tmp / f"{name}.npz", test_pred=r.test_pred, val_pred=r.val_pred,
                                train_pred=r.train_pred, **matrix,
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
    return json.loads((Path(path) / "group.json").read_text())


def load_run(path, name: str) -> dict[str, np.ndarray]:
    with np.load(Path(path) / f"{name}.npz") as f:
        return dict(f)
