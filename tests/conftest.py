"""Shared fixtures: float64 random inputs and the MNIST directory.

Tests that need the real MNIST take the ``mnist_root`` fixture (or call ``require_mnist()``). It
looks in ``mnist_folders()``: $TINYGRAD_EDU_DATA, then ../shared/mnist beside the repository, then
the library's download folder (~/.cache/tinygrad_edu/mnist). If none holds the four IDX files, it
tries once per session to download them there, for at most DOWNLOAD_SECONDS (a machine without
network gives up at once); failing that, the test skips with one reason saying why and how to
provide the data, and the summary at the end counts these skips. With TINYGRAD_EDU_REQUIRE_DATA=1
(CI sets it) the test fails instead. Tests of the reader itself write small IDX files of their own
and run everywhere.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinygrad_edu as tg
from tinygrad_edu.vision import datasets

REPO = Path(__file__).resolve().parent.parent
MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
NO_MNIST = "needs MNIST"   # every skip for want of the data starts with this
DOWNLOAD_SECONDS = 60      # the whole session's download attempt, a hung DNS lookup included
DOWNLOAD_ADVICE = ("download them on a machine with internet access with `python -c \"from "
                   "tinygrad_edu.vision.datasets import MNIST; MNIST(download=True)\"` (into "
                   "$TINYGRAD_EDU_DATA, else ~/.cache/tinygrad_edu/mnist), or copy the four IDX files "
                   "(gzipped or not) into a folder and set TINYGRAD_EDU_DATA to it")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def leaf(rng, *shape, positive=False):
    """A float64 leaf that requires grad (gradcheck's favourite input)."""
    x = rng.standard_normal(shape)
    if positive:
        x = np.abs(x) + 0.5
    return tg.tensor(x, requires_grad=True)


def mnist_folders():
    """Where the tests look for MNIST, in order."""
    from_env = [Path(os.environ["TINYGRAD_EDU_DATA"])] if os.environ.get("TINYGRAD_EDU_DATA") else []
    return from_env + [REPO.parent / "shared" / "mnist", datasets.cache_root()]


def has_mnist(folder):
    """Whether ``folder`` (or its torchvision-style MNIST/raw) holds the four files, gzipped or not."""
    return all(any((where / (name + ext)).is_file()
                   for where in (folder, folder / "MNIST" / "raw") for ext in (".gz", ""))
               for name in MNIST_FILES)


def mnist_dir():
    """The first of ``mnist_folders()`` that holds MNIST, else the first of them (no download:
    tests that need the data take ``mnist_root``)."""
    return next((folder for folder in mnist_folders() if has_mnist(folder)), mnist_folders()[0])


# The child writes nothing until a file is complete and checked (MNIST.download is atomic); killed
# at the deadline, it leaves at most .part files, which the next download removes.
_DOWNLOAD = """
import sys
from tinygrad_edu.vision.datasets import MNIST
MNIST.mirrors = sys.argv[2:] or MNIST.mirrors
try:
    MNIST(sys.argv[1], download=True)
except Exception as error:
    lines = str(error).splitlines()   # 'could not download X from any mirror:' and the first cause
    sys.exit(" ".join(line.strip() for line in lines[:2]))
"""


def download_mnist(folder, seconds, mirrors=()):
    """Download MNIST into ``folder`` in a child process given ``seconds`` in all. Returns None on
    success, else why not, in one line."""
    try:
        child = subprocess.run([sys.executable, "-c", _DOWNLOAD, str(folder), *mirrors], cwd=REPO,
                               capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        return f"the download did not finish within {seconds} s"
    if child.returncode:
        lines = child.stderr.strip().splitlines()
        return lines[-1] if lines else f"the download exited with status {child.returncode}"
    return None


_download_failure = []   # the session's one download attempt: [] before it, else [None or why not]


def require_mnist():
    """The folder holding MNIST, fetched if need be; without it, skip the calling test with one
    reason saying why and how to provide the data (fail instead under TINYGRAD_EDU_REQUIRE_DATA)."""
    found = [folder for folder in mnist_folders() if has_mnist(folder)]
    if found:
        return found[0]
    if not _download_failure:
        _download_failure.append(download_mnist(datasets.cache_root(), DOWNLOAD_SECONDS))
    if _download_failure[0] is None and has_mnist(datasets.cache_root()):
        return datasets.cache_root()
    why_not = _download_failure[0] or "it ended without the four files"
    reason = (f"{NO_MNIST}: its four IDX files are in none of {', '.join(map(str, mnist_folders()))}, "
              f"and downloading them failed ({why_not}); {DOWNLOAD_ADVICE}")
    if os.environ.get("TINYGRAD_EDU_REQUIRE_DATA", "") not in ("", "0"):
        pytest.fail(f"TINYGRAD_EDU_REQUIRE_DATA is set, but this test {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mnist_root():
    """The folder with the real MNIST files; the test skips (with the reason) without them."""
    return require_mnist()


def pytest_terminal_summary(terminalreporter):
    skipped = [report for report in terminalreporter.stats.get("skipped", [])
               if NO_MNIST in str(report.longrepr)]
    if skipped:
        reason = str(skipped[0].longrepr[2]).partition(f"{NO_MNIST}: ")[2]
        terminalreporter.write_line(f"{len(skipped)} tests skipped for want of MNIST: {reason}",
                                    yellow=True)
