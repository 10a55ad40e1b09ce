"""Outputs kept when what they are made from has not changed: the evaluate and report
stages make only the group metrics and figures whose inputs changed (`dvc exp run -S
loss.alpha=0.1` changes the main experiment's runs only: its metrics and its accuracy curves
are made again, the papers' figures are kept).

Each output (a group's metrics file, a figure with its CSV) has a key: the sha256 of what it
is made from (the contents of the files it reads, its resolved settings), of the package's
source (io.code_digest) and of the versions of the libraries that compute and draw it. A
stage's output folder holds _made_from.json: per output, its key and the sha256 of each of
its files. A stage run writes a fresh folder (io.atomic_dir) into which `Reuse.keep` copies
an output whose key and files are unchanged, and the stage makes the others. Either way the
bytes are the same, as each output is a deterministic function of what its key covers. DVC
leaves the old folder in place for this (`persist: true` in dvc.yaml); without one (first
run, or the folder deleted to make everything again) every output is made.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

from noisylabels.io import code_digest, sha256, write_json

MANIFEST = "_made_from.json"
# the libraries whose version can change an output's bytes (metrics, t-SNE, the PNG files)
LIBRARIES = ("numpy", "pandas", "scikit-learn", "scipy", "matplotlib", "seaborn", "torch")


def key(*parts) -> str:
    """The key of an output made from `parts` (JSON-able values, or anything whose repr is
    deterministic, such as a resolved group) by this package's code."""
    text = json.dumps([_made_by(), *parts], sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


@lru_cache(maxsize=None)
def _made_by() -> tuple:
    return code_digest(), {name: version(name) for name in LIBRARIES}


def _read_manifest(folder: Path) -> dict:
    try:
        entries = json.loads((folder / MANIFEST).read_text())
        return entries if isinstance(entries, dict) else {}
    except (OSError, ValueError):  # no folder yet, or a damaged manifest: everything is made
        return {}


class Reuse:
    """The outputs of the folder `old` that the fresh folder `new` can take over."""

    def __init__(self, old: str | Path, new: str | Path):
        self.old, self.new = Path(old), Path(new)
        self.before = _read_manifest(self.old)
        self.now: dict[str, dict] = {}

    def keep(self, name: str, output_key: str) -> bool:
        """True, and the output's files copied into `new`, when the output `name` was made
        from `output_key` and its files in `old` are the ones made then."""
        entry = self.before.get(name)
        if not isinstance(entry, dict) or entry.get("key") != output_key or not isinstance(entry.get("files"), dict):
            return False
        files = entry["files"]
        if not all((self.old / f).is_file() and sha256(self.old / f) == digest for f, digest in files.items()):
            return False
        for f in files:
            (self.new / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.old / f, self.new / f)
        self.now[name] = entry
        return True

    def made(self, name: str, output_key: str, files: list[str | Path]) -> None:
        """Record that `name` was made from `output_key` as these files (relative to `new`)."""
        self.now[name] = {"key": output_key, "files": {f: sha256(self.new / f)
                                                         for f in sorted(Path(f).as_posix() for f in files)}}

    def write(self) -> None:
        write_json(self.new / MANIFEST, dict(sorted(self.now.items())))
