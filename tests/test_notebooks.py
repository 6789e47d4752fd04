"""The notebooks in notebooks/ run headless, top to bottom, and show what they should.

Each notebook starts with a cell tagged ``parameters`` (papermill's convention). A run here puts a
cell after it, tagged ``injected-parameters``, that overrides them: a small slice of the data, one
epoch. Every notebook runs twice:

* on small fake MNIST files this test writes (``synthetic_digits``: the label picks a bright band,
  so a model can learn it), so the notebooks are checked on any machine, without the data; the
  injected cell also tells ``MNIST`` the fake files' checksums, as test_data.py's ``fake_sums`` does;
* on the real MNIST (the ``mnist_root`` fixture: it skips, saying why, where the data is missing).

The kernel imports this checkout (its folder leads PYTHONPATH) and runs in a temporary folder. The
cell timeout is a hang guard, not a speed check. Needs nbclient, nbformat and ipykernel; the
notebooks' graph cells need the ``viz`` extra (grandalf), and no Graphviz.
"""

import ast
import json
import math
import os
import re

import nbclient   # the test extra's, as is ipykernel (the kernel they run on)
import nbformat
import numpy as np
import pytest

from conftest import MNIST_FILES, REPO
from test_data import write_idx
from test_lecture import synthetic_digits

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 300      # seconds for one cell: a hang guard (the slowest takes ~10 s here)
FAKE_SIZES = {"train": 600, "t10k": 200}
REAL_SLICE = {"train_size": 2000, "test_size": 500}
RUNS = {   # each notebook's overrides beyond the data: one epoch, few batches, two depths
    "01_shallow_network.ipynb": {"epochs": 1},
    "02_mnist_mlp.ipynb": {"epochs": 1, "print_every": 50},
    "03_depth_sweep.ipynb": {"epochs": 1, "depths": [2, 3], "probe_size": 64},
}
LECTURE_BATCH_SIZE = 12   # the notebooks' default, which no run overrides
NO_TEST_SET = {"01_shallow_network.ipynb"}   # it trains on the 0s and 1s and tests nothing
# The last cell of a run of 03: what the gradient-flow panel plots, for the test to check.
REPORT_GRAD_NORMS = ("import json\n"
                     "print('grad_norms:', json.dumps({str(d): n for d, n in grad_norms.items()}))")


def test_every_notebook_has_a_run():
    assert sorted(path.name for path in NOTEBOOKS) == sorted(RUNS)


# --- the notebooks as committed ------------------------------------------------------------------
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_committed_notebook_is_valid_and_has_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code_cells[0].metadata.get("tags") == ["parameters"], "the first code cell holds the parameters"
    for cell in code_cells:
        assert cell.outputs == [] and cell.execution_count is None, \
            f"{path.name}: strip the outputs before committing (a cell starting {cell.source[:40]!r})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_overrides_name_parameters_the_notebook_has(path):
    """An override of a name the parameters cell lacks would change nothing, silently."""
    cell = parameters_cell(nbformat.read(path, as_version=4))
    names = {target.id for node in ast.parse(cell.source).body for target in node.targets}
    data_names = {"data_root", "train_size"} | (set() if path.name in NO_TEST_SET else {"test_size"})
    assert data_names | {"epochs", "batch_size"} | set(RUNS[path.name]) <= names


# --- running them ----------------------------------------------------------------------------------
def parameters_cell(nb):
    return next(cell for cell in nb.cells if "parameters" in cell.metadata.get("tags", []))


def run_notebook(name, overrides, workdir, setup="", last_cell=""):
    """Execute notebooks/``name`` with ``overrides`` (and ``setup`` code) injected after its
    parameters; returns the executed notebook."""
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    injected = "\n".join([setup] + [f"{key} = {value!r}" for key, value in overrides.items()]).strip()
    cell = nbformat.v4.new_code_cell(injected, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(nb.cells.index(parameters_cell(nb)) + 1, cell)
    if last_cell:
        nb.cells.append(nbformat.v4.new_code_cell(last_cell))
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path}
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, startup_timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute(env=env)
    except nbclient.exceptions.CellExecutionError as error:   # its message is a coloured traceback
        failure = f"{name}: {error.ename}: {error.evalue}"
    else:
        return nb
    failed = next(cell for cell in nb.cells
                  if any(output.output_type == "error" for output in cell.get("outputs", [])))
    pytest.fail(f"{failure}\nin the cell:\n{failed.source}", pytrace=False)


def outputs_of(nb):
    """(all the text the notebook printed or showed, the MIME types of everything it displayed,
    one per output: a figure shown twice counts twice)."""
    text, mime_types = [], []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream" and output.name == "stdout":   # stderr: warnings, bars
                text.append(output.text)
            elif output.output_type in ("display_data", "execute_result"):
                mime_types.extend(output.data)
                text.append(output.data.get("text/plain", "") + "\n")
    return "".join(text), mime_types


@pytest.fixture(scope="module")
def fake_mnist_folder(tmp_path_factory):
    """Four gzipped IDX files of synthetic digits, and their MD5s for ``MNIST.resources``."""
    folder = tmp_path_factory.mktemp("fake_mnist")
    sums = {}
    for seed, (split, n) in enumerate(FAKE_SIZES.items()):
        images, labels = synthetic_digits(n, seed)
        for name, array in ((f"{split}-images-idx3-ubyte", images),
                            (f"{split}-labels-idx1-ubyte", labels.astype(np.uint8))):
            sums[name] = write_idx(folder / (name + ".gz"), array)
    assert sorted(sums) == sorted(MNIST_FILES)
    return folder, sums


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.slow)])   # real: 5-20 s each
def data(request):
    """(overrides, setup code, number of training images, number of test images) for a run."""
    if request.param == "fake":
        folder, sums = request.getfixturevalue("fake_mnist_folder")
        setup = ("from tinygrad_edu.vision.datasets import MNIST\n"
                 f"MNIST.resources.update({sums!r})   # the test's fake files, not the real MNIST")
        return {"data_root": str(folder)}, setup, FAKE_SIZES["train"], FAKE_SIZES["t10k"]
    root = request.getfixturevalue("mnist_root")
    return {"data_root": str(root), **REAL_SLICE}, "", REAL_SLICE["train_size"], REAL_SLICE["test_size"]


def number(pattern, text):
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"no line matching {pattern!r} in the notebook's output:\n{text}"
    return float(match.group(1))


def test_shallow_network(data, tmp_path):
    overrides, setup, n_train, _ = data
    overrides = {key: value for key, value in overrides.items() if key != "test_size"}   # see NO_TEST_SET
    nb = run_notebook("01_shallow_network.ipynb", {**overrides, **RUNS["01_shallow_network.ipynb"]},
                      tmp_path, setup)
    text, mime_types = outputs_of(nb)
    rows = re.findall(r"^(W1|b1|W2|b2)\s+\(([\d, ]*)\)\s+(\S+)\s+(\S+)$", text, re.MULTILINE)
    assert [row[0] for row in rows] == ["W1", "b1", "W2", "b2"], text
    assert all(float(relative) < 1e-10 for *_, relative in rows), f"hand and autograd disagree:\n{text}"
    assert number(r"lecture's loop vs autograd: largest relative difference (\S+)", text) < 1e-10
    assert number(r"largest gap between the two curves: (\S+)", text) < 1e-8
    assert number(r"^(\d+) images of 0s and 1s", text) > 0
    assert {"image/png", "image/svg+xml"} <= set(mime_types)


def test_mnist_mlp(data, tmp_path):
    overrides, setup, n_train, n_test = data
    run = RUNS["02_mnist_mlp.ipynb"]
    nb = run_notebook("02_mnist_mlp.ipynb", {**overrides, **run}, tmp_path, setup)
    text, mime_types = outputs_of(nb)
    losses = re.findall(r"^\[1, +(\d+)\] loss: (\d+\.\d{3})$", text, re.MULTILINE)
    batches = math.ceil(n_train / LECTURE_BATCH_SIZE)
    every = run["print_every"]
    assert [int(i) for i, _ in losses] == list(range(every, batches + 1, every)), text
    assert all(0 < float(loss) < 10 for _, loss in losses)
    assert "Finished Training" in text
    for title in ("GroundTruth", "Prediction"):
        labels = re.search(rf"^{title}\n +(.*)$", text, re.MULTILINE)
        digits = labels.group(1).split() if labels else []
        assert len(digits) == LECTURE_BATCH_SIZE and set(digits) <= set("0123456789"), text
    correct, total = map(int, re.search(r"^(\d+)/(\d+)$", text, re.MULTILINE).groups())
    assert total == n_test
    assert number(r"^Accuracy: (\d\.\d{3})$", text) == round(correct / total, 3)
    assert {"image/png", "image/svg+xml"} <= set(mime_types)


def test_depth_sweep(data, tmp_path):
    overrides, setup, _, _ = data
    run = RUNS["03_depth_sweep.ipynb"]
    nb = run_notebook("03_depth_sweep.ipynb", {**overrides, **run}, tmp_path, setup, REPORT_GRAD_NORMS)
    text, mime_types = outputs_of(nb)
    accuracies = {int(depth): float(acc) for depth, acc in
                  re.findall(r"^(\d) layers: accuracy (\d\.\d{3})$", text, re.MULTILINE)}
    assert sorted(accuracies) == run["depths"], text
    assert all(0 <= acc <= 1 for acc in accuracies.values())
    grad_norms = json.loads(re.search(r"^grad_norms: (.*)$", text, re.MULTILINE).group(1))
    for depth in run["depths"]:   # before training and after each epoch, one positive norm per layer
        assert len(grad_norms[str(depth)]) == run["epochs"] + 1
        assert all(len(norms) == depth and all(0 < norm < math.inf for norm in norms)
                   for norms in grad_norms[str(depth)])
        before = grad_norms[str(depth)][0]   # what the notebook explains: smaller at each step down
        assert all(lower < upper for lower, upper in zip(before, before[1:])), before
    assert mime_types.count("image/png") == 2, "the accuracy plot and the gradient-flow panel"
