"""Checkpoints: a killed training stage resumes its unfinished runs where they stopped.

<folder>/<run>.pt       an unfinished run's full training state, saved atomically at the end
                        of an epoch every `--checkpoint-every` (epochs or minutes): the model,
                        the optimizer's buffers, every random generator (batch order,
                        augmentation draws, torch's global one, which dropout draws from), the
                        epoch, the optimizer step count, the history and predictions so far,
                        and the method's own state (methods.Standard.state)
<folder>/<run>.done.pt  a finished run's result, kept until the whole group is saved
Each file carries a fingerprint of its run: its settings, labels, phase-1 input and the
package's code. A file with another fingerprint (params or code changed since) is ignored.
The folder (default .checkpoints/<group>) lies outside DVC's outputs, which DVC deletes
before it runs a stage; the training stage removes it once the group is saved. Files are
written by this package and read with torch.load(weights_only=True).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from noisylabels.errors import ConfigError
from noisylabels.io import code_digest


def parse_every(text: str) -> tuple[int | None, float | None]:
    """'5min' -> (None, 5.0); '2epochs' or '1epoch' -> (2, None)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(min|epochs?)", text.strip())
    if not match or float(match[1]) <= 0 or (match[2] != "min" and not match[1].isdigit()):
        raise ConfigError(f"--checkpoint-every={text!r}: expected minutes or whole epochs above 0, e.g. 5min or 2epochs")
    return (int(match[1]), None) if match[2] != "min" else (None, float(match[1]))


def fingerprint(params: dict, kind: str, arrays: list[np.ndarray]) -> str:
    """What a checkpoint must match: the run's MLflow params, the kind of job, its input
    arrays (labels, held-out mask, phase-1 labels or mask) and the code."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode() + kind.encode() + code_digest().encode())
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _to_torch(obj):
    """numpy arrays as tensors (weights_only loading takes tensors, not arrays), recursively."""
    if isinstance(obj, np.ndarray):
        return {"__numpy__": torch.from_numpy(np.ascontiguousarray(obj))}
    if isinstance(obj, dict):
        return {k: _to_torch(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_torch(v) for v in obj]
    return obj


def _from_torch(obj):
    if isinstance(obj, dict):
        return obj["__numpy__"].numpy() if set(obj) == {"__numpy__"} else {k: _from_torch(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_torch(v) for v in obj]
    return obj


def _save(path: Path, fingerprint: str, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"fingerprint": fingerprint, "payload": _to_torch(payload)}, tmp)
    os.replace(tmp, path)  # atomic: a kill leaves the previous checkpoint or the new one


def _load(path: Path, fingerprint: str) -> dict | None:
    try:
        saved = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError):  # none yet, or not readable: start over
        return None
    return _from_torch(saved["payload"]) if saved.get("fingerprint") == fingerprint else None


@dataclass(frozen=True)
class Plan:
    """Where and when one run saves its state."""

    folder: Path
    run: str
    fingerprint: str
    every_epochs: int | None
    every_minutes: float | None

    @property
    def path(self) -> Path:
        return self.folder / f"{self.run}.pt"

    def due(self, epoch: int, since: float) -> bool:
        if self.every_epochs:
            return epoch % self.every_epochs == 0
        return time.monotonic() - since >= 60 * self.every_minutes

    def save(self, state: dict) -> None:
        _save(self.path, self.fingerprint, state)

    def load(self) -> dict | None:
        return _load(self.path, self.fingerprint)

    def save_result(self, result) -> None:
        """A finished run's result (loop.RunResult); its in-progress checkpoint is dropped."""
        _save(self.folder / f"{self.run}.done.pt", self.fingerprint, vars(result))
        self.path.unlink(missing_ok=True)

    def load_result(self) -> dict | None:
        """The fields of a finished run's saved loop.RunResult, or None."""
        return _load(self.folder / f"{self.run}.done.pt", self.fingerprint)


def remove(folder: Path) -> None:
    """A group's checkpoints, once the group is saved."""
    shutil.rmtree(folder, ignore_errors=True)
