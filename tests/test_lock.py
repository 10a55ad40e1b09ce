"""The committed dvc.lock: one entry per stage of dvc.yaml, none left over from stages that no
longer exist (DVC keeps those until they are removed; `dvc repro` never drops them)."""
import subprocess
import sys

import yaml

from conftest import REPO


def test_dvc_lock_has_exactly_the_stages_of_dvc_yaml():
    listed = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    locked = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    assert set(locked) == set(listed.stdout.split())
