"""Small file helpers: atomic writes (temporary name, then rename), checksums, and reads of
intermediate files that turn damage into one line.

Every stage writes its outputs through these, so a failure never leaves a half-written file
where DVC or the next stage would take it for a finished one. `read_json` and `read_npy`
name the file and the command that regenerates it when it is missing, truncated or
garbled; `check_writable` finds an unwritable output folder before any work.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np

from noisylabels.errors import DataError


# mkstemp/mkdtemp create private (0600/0700) entries; outputs get the usual permissions.
# os.umask can only be read by setting it, so set it and put it straight back.
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK
_DIR_MODE = 0o777 & ~_UMASK


@contextmanager
def atomic_dir(path: str | Path):
    """Yield a fresh temporary folder beside `path`; on success it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, _DIR_MODE)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_digest(named: list[tuple[str, Path]]) -> str:
    """sha256 of files under the given names, in the given order (a name and the sha256 of
    its contents a line)."""
    h = hashlib.sha256()
    for name, f in named:
        h.update(f"{name}\0{sha256(f)}\n".encode())
    return h.hexdigest()


def dir_digest(path: str | Path) -> str:
    """sha256 of a folder's files (relative names and contents, in name order): the same
    bytes give the same digest on any machine, in any checkout."""
    path = Path(path)
    return files_digest([(f.relative_to(path).as_posix(), f) for f in sorted(p for p in path.rglob("*") if p.is_file())])


@lru_cache(maxsize=None)
def code_digest() -> str:
    """sha256 of this package's source (every .py file under lib/noisylabels): what a
    checkpoint or a kept output (memo.py) was made by."""
    package, h = Path(__file__).resolve().parent, hashlib.sha256()
    for f in sorted(package.rglob("*.py")):
        h.update(f.relative_to(package).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def _damaged(path: Path, error: Exception, regenerate: str) -> DataError:
    reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:120]}" if str(error).strip() else \
        type(error).__name__
    what = "missing" if isinstance(error, FileNotFoundError) else f"unreadable ({reason})"
    return DataError(f"{path}: {what}; regenerate it with `{regenerate}`")


def read_json(path: str | Path, regenerate: str, keys: tuple[str, ...] = ()) -> dict:
    """A JSON object with at least `keys`; DataError naming `regenerate` otherwise."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
        missing = [k for k in keys if k not in obj]
        if missing:
            raise KeyError(missing[0])
        return obj
    except (OSError, ValueError, KeyError, TypeError) as e:  # JSONDecodeError and UnicodeError are ValueErrors
        raise _damaged(path, e, regenerate) from None


def read_npy(path: str | Path, regenerate: str, shape: tuple | None = None) -> np.ndarray:
    """A .npy array (of `shape`, where given; None in it matches any size); never unpickled."""
    path = Path(path)
    try:
        array = np.load(path, allow_pickle=False)
        if shape is not None and (array.ndim != len(shape) or any(
                want is not None and got != want for got, want in zip(array.shape, shape))):
            raise ValueError(f"shape {array.shape}, expected {shape}")
        return array
    except (OSError, ValueError, EOFError) as e:
        raise _damaged(path, e, regenerate) from None


def check_writable(path: str | Path) -> None:
    """DataError if `path` could not be created or replaced (its nearest existing folder is
    not writable): found before training, not after."""
    folder = Path(path).absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise DataError(f"{path}: cannot be written ({folder} is not a writable folder)")
