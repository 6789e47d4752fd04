"""The examples run as scripts and do what they claim."""

import subprocess
import sys

from conftest import REPO


def run_example(name, *args, timeout=600):
    result = subprocess.run([sys.executable, str(REPO / "examples" / name), *args],
                            capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_xor_example_learns_xor():
    out = run_example("xor.py")
    predictions = [float(v) for v in out.split("predictions:")[1].strip(" []\n").split(",")]
    assert [round(p) for p in predictions] == [0, 1, 1, 0]
