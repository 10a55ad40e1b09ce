"""Damaged or missing intermediate files: each stage that reads one stops with one line that
names the file and the command regenerating it, exit code 2, and writes nothing.

A pristine workspace (download, noise, pretrain and evaluate of the main group on the tiny
params) is built once; each case damages a copy of it and runs one stage there. Marked slow
(about a minute); CI runs it too.
"""
import json
import shutil

import numpy as np
import pytest

from conftest import TINY_PARAMS, run_stage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    import yaml

    root = tmp_path_factory.mktemp("pristine")
    params = {**TINY_PARAMS, "groups": {}, "train_stages": {}, "two_phase_groups": {}}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"}
    for script, *args in (("download.py", "--dataset", "digits"), ("noise.py",), ("pretrain.py", "--group", "main"),
                          ("evaluate.py",)):
        r = run_stage(script, *args, cwd=root, env=env)
        assert r.returncode == 0, r.stderr
    return root


def _garble(path):
    path.write_bytes(b"\x93NUMPY garbage" if path.suffix == ".npy" else b"{not json")


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _meta_without_checksums(path):
    meta = json.loads(path.read_text())
    del meta["sha256"]
    path.write_text(json.dumps(meta))


def _other_seeds(path):
    info = json.loads(path.read_text())
    info["seeds"] = [7, 8]
    path.write_text(json.dumps(info))


def _wrong_shape(path):
    np.save(path, np.zeros((1, 2, 3), dtype=np.int64))


CASES = [  # (file, damage, stage and its arguments, output it must not write, expected text)
    ("data/raw/digits/meta.json", _garble, ("noise.py",), "data/noisy",
     "data/raw/digits/meta.json: unreadable (JSONDecodeError"),
    ("data/raw/digits/meta.json", _meta_without_checksums, ("noise.py",), "data/noisy",
     "data/raw/digits/meta.json: unreadable (KeyError: 'sha256')"),
    ("data/raw/digits/train_labels.npy", _truncate, ("noise.py",), "data/noisy",
     "train_labels.npy: checksum does not match meta.json (corrupt or edited); regenerate it with "
     "`dvc repro -f download@digits`"),
    ("data/noisy/main/noisy.npy", _truncate, ("pretrain.py", "--group", "main"), "data/runs/main",
     "data/noisy/main/noisy.npy: unreadable"),
    ("data/noisy/main/noisy.npy", _wrong_shape, ("pretrain.py", "--group", "main"), "data/runs/main",
     "shape (1, 2, 3), expected (1, 2, 1258)"),
    ("data/noisy/main/noise.json", _garble, ("pretrain.py", "--group", "main"), "data/runs/main",
     "data/noisy/main/noise.json: unreadable"),
    ("data/noisy/main/noise.json", _other_seeds, ("pretrain.py", "--group", "main"), "data/runs/main",
     "but the group has ['symmetric-0.4'] and [0, 1]"),
    ("data/noisy/main/val.npy", lambda p: p.unlink(), ("evaluate.py",), "reports/metrics",
     "data/noisy/main/val.npy: missing"),
    ("data/runs/main/symmetric-0.4-s1.npz", _truncate, ("evaluate.py",), "reports/metrics",
     "data/runs/main/symmetric-0.4-s1.npz: unreadable; regenerate it with `dvc repro -f pretrain-main`"),
    ("data/runs/main/group.json", _garble, ("report.py",), "reports/tables",
     "data/runs/main/group.json: unreadable"),
    ("reports/metrics/main.json", _truncate, ("report.py",), "reports/tables",
     "reports/metrics/main.json: unreadable"),
    ("mlflow.db", _garble, ("pretrain.py", "--group", "main"), "data/runs/main",
     "mlflow.db': unusable"),
    ("mlflow.db", _garble, ("report.py",), "reports/figures",  # stops before a figure is drawn
     "mlflow.db': unusable"),
    ("data/runs", lambda p: (shutil.rmtree(p), p.write_text("a file, not a folder")),
     ("pretrain.py", "--group", "main"), "data/runs/main", "data/runs/main: cannot be written"),
]
REGENERATE = {"data/raw": "dvc repro -f download@digits", "data/noisy": "dvc repro -f noise",
              "data/runs/main/": "dvc repro -f pretrain-main", "reports/metrics": "dvc repro -f evaluate"}


@pytest.mark.parametrize("file,damage,stage,output,expect", CASES, ids=[f"{c[0]}-{c[1].__name__}" for c in CASES])
def test_a_damaged_file_stops_its_reader_with_one_line(workspace, tmp_path, file, damage, stage, output, expect):
    root = tmp_path / "ws"
    shutil.copytree(workspace, root)
    shutil.rmtree(root / output) if (root / output).is_dir() else None  # whatever is there now must stay absent
    damage(root / file)
    r = run_stage(*stage, cwd=root, env={"MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], r.stderr
    regenerate = next((cmd for prefix, cmd in REGENERATE.items() if file.startswith(prefix)), None)
    assert regenerate is None or f"regenerate it with `{regenerate}`" in lines[0] or "checksum" in lines[0]
    assert not (root / output).exists()
