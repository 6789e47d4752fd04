"""examples/sweep_report.py: the sweep's report (report.pdf, report.md) and the runs' provenance.

The runs are made by hand here (no training, no MNIST): random accuracies whose means and
standard deviations the tests compute again with NumPy and look for in the report.
"""

import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import matplotlib
import numpy as np
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "examples"))
import mnist_common as common  # noqa: E402
import sweep_report  # noqa: E402
from tinygrad_edu import backend, nn  # noqa: E402

PROVENANCE = {"tinygrad_edu_version": "0.1.0", "git_commit": "a" * 40, "python": "3.11.7", "numpy": "2.4.6",
              "backend": "c", "isa": "avx2", "threads": 1, "cpu": "Test CPU", "hostname": "lab-1",
              "data_dir": "/data/mnist", "data_md5": {"train-images-idx3-ubyte.gz": "f" * 32}}
SECTIONS = ["Test accuracy per epoch", "Gradient flow after the last epoch", "Results per configuration",
            "Model source", "Provenance"]
SOURCE = sweep_report.model_source(common.make_mlp)


def make_run(rng, layers, seed, epochs=3, flow=True, provenance=None, **settings):
    """A finished run as the sweep saves it, with random accuracies (and gradient flow)."""
    accuracies = [float(a) for a in np.sort(rng.uniform(0.80, 0.98, epochs))]
    run = dict(key=f"layers{layers}_seed{seed}" + "".join(f"_{k}{v}" for k, v in settings.items()),
               layers=layers, hidden_units=list(common.hidden_units_for(layers)), seed=seed, epochs=epochs,
               batch_size=12, lr=0.01, quick=False, **{"activation": "relu", "optimizer": "sgd", **settings},
               final_train_loss=0.1, test_accuracy=accuracies,
               final_test_accuracy=accuracies[-1], seconds=float(rng.uniform(10, 20)), backend="c",
               provenance=dict(provenance or PROVENANCE))
    if flow:
        run["weight_grad_norm"] = [list(rng.uniform(0.01, 1, layers)) for _ in range(epochs)]
        run["dead_relu_fraction"] = [list(rng.uniform(0, 0.2, layers - 1)) for _ in range(epochs)]
    return run


@pytest.fixture
def runs(rng):
    return [make_run(rng, layers, seed) for layers in (2, 3, 5) for seed in range(3)]


def write(results, out, **kwargs):
    kwargs.setdefault("model_source", SOURCE)
    return sweep_report.write_report(results, out, command_line=["examples/mnist_sweep.py", "--seeds", "3"],
                                     **kwargs)


def table_rows(markdown, first_header):
    """The rows (lists of cells) of the markdown table whose first column is ``first_header``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def pdf_page_count(path):
    return len(re.findall(rb"/Type\s*/Page\b", path.read_bytes()))


# --- the report ----------------------------------------------------------------------------------
def test_report_has_every_section_and_the_right_numbers(runs, tmp_path):
    paths = write(runs, tmp_path)
    assert paths == {"pdf": tmp_path / "report.pdf", "md": tmp_path / "report.md"}
    md = paths["md"].read_text()
    assert md.startswith("# MNIST: test accuracy vs # layers")
    for section in SECTIONS:
        assert f"\n## {section}\n" in md
    rows = table_rows(md, "# layers")
    assert [row[0] for row in rows] == ["2", "3", "5"]
    for row, layers in zip(rows, (2, 3, 5)):
        final = np.array([r["final_test_accuracy"] for r in runs if r["layers"] == layers])
        assert row[1] == "-".join(map(str, common.hidden_units_for(layers)))
        assert row[2:5] == ["3", f"{final.mean():.4f}", f"{final.std(ddof=1):.4f}"]
        assert row[5] == "  ".join(f"{seed}: {a:.4f}" for seed, a in enumerate(final))
    for name in ("report_accuracy.png", "report_epochs.png", "report_gradient_flow.png"):
        assert f"]({name})" in md
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    assert f"```python\n{SOURCE.rstrip()}\n```" in md
    assert "examples/mnist_sweep.py --seeds 3" in md


def test_pdf_is_valid_with_all_its_pages(runs, tmp_path):
    path = write(runs, tmp_path)["pdf"]
    data = path.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    blocks = sweep_report.build_report(runs, ["x"], "layers", SOURCE)
    expected = len(sweep_report.pdf_pages(blocks))
    assert expected >= 2 and pdf_page_count(path) == expected
    # no date in it: the same runs give the same file, byte for byte
    assert write(runs, tmp_path / "again")["pdf"].read_bytes() == data


def test_pdf_text_holds_the_sections_numbers_and_source(runs, tmp_path):
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed: the PDF's text is not checked")
    path = write(runs, tmp_path)["pdf"]
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout
    for section in SECTIONS:
        assert section in text
    final = np.array([r["final_test_accuracy"] for r in runs if r["layers"] == 5])
    assert f"{final.mean():.4f}" in text and f"{final.std(ddof=1):.4f}" in text
    assert "class MLP(nn.Module):" in text and "self.l_layers[-1](a)" in text
    assert PROVENANCE["git_commit"] in text and PROVENANCE["cpu"] in text


def test_a_single_seed_has_no_sd(rng, tmp_path):
    md = write([make_run(rng, 2, 0), make_run(rng, 4, 0)], tmp_path)["md"].read_text()
    assert [row[4] for row in table_rows(md, "# layers")] == ["-", "-"]


def test_group_by_another_setting(rng, tmp_path):
    results = [make_run(rng, layers, seed, optimizer=opt)
               for opt in ("sgd", "adam") for layers in (2, 3) for seed in range(2)]
    assert sweep_report.series_fields(results, "optimizer", sweep_report.check_runs(results, "optimizer")) \
        == ["layers"]   # hidden_units follows from layers: not a line of its own
    md = write(results, tmp_path, group_by="optimizer")["md"].read_text()
    assert md.startswith("# MNIST: test accuracy vs optimizer")
    rows = table_rows(md, "optimizer")
    assert [row[:2] for row in rows] == [["adam", "2"], ["adam", "3"], ["sgd", "2"], ["sgd", "3"]]
    final = np.array([r["final_test_accuracy"] for r in results if r["optimizer"] == "sgd" and r["layers"] == 3])
    assert rows[3][4] == f"{final.mean():.4f}"


def test_depth_alone_is_one_line(runs):
    assert sweep_report.series_fields(runs, "layers", sweep_report.check_runs(runs, "layers")) == []


def test_pytorch_numbers_beside(rng, tmp_path):
    results = [make_run(rng, layers, seed, engine=engine, flow=engine != "torch")
               for engine in ("torch", "tinygrad_edu") for layers in (2, 3) for seed in range(2)]
    md = write(results, tmp_path)["md"].read_text()
    rows = table_rows(md, "# layers")
    assert [(row[0], row[2]) for row in rows] == [("2", "tinygrad_edu"), ("2", "PyTorch"),
                                                  ("3", "tinygrad_edu"), ("3", "PyTorch")]
    torch_final = np.array([r["final_test_accuracy"] for r in results if r["engine"] == "torch" and r["layers"] == 3])
    assert rows[3][4] == f"{torch_final.mean():.4f}"
    assert "2 configuration(s) without these numbers are left out" in md   # PyTorch's runs: no gradient flow

    from matplotlib.figure import Figure
    fig = Figure()
    configs = sweep_report.configurations(results, sweep_report.check_runs(results, "layers"))
    sweep_report.draw_accuracy(fig, (0, 0, 1, 1), configs, "layers", ["engine"])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(label.startswith("PyTorch") for label in labels)
    assert any(label.startswith("tinygrad_edu") for label in labels)


def test_the_report_leaves_pyplot_alone(runs, tmp_path):
    backend_before = matplotlib.get_backend()
    figures_before = sys.modules["matplotlib.pyplot"].get_fignums() if "matplotlib.pyplot" in sys.modules else []
    write(runs, tmp_path)
    assert matplotlib.get_backend() == backend_before
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == figures_before


def test_a_failure_leaves_no_half_file(runs, tmp_path, monkeypatch):
    from matplotlib.backends.backend_pdf import PdfPages

    (tmp_path / "report.pdf").write_bytes(b"the old report")
    saved = []

    def savefig_then_fail(self, figure=None, **kwargs):
        if saved:
            raise OSError("disk full")
        saved.append(figure)
        return real_savefig(self, figure, **kwargs)

    real_savefig = PdfPages.savefig
    monkeypatch.setattr(PdfPages, "savefig", savefig_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write(runs, tmp_path)
    assert (tmp_path / "report.pdf").read_bytes() == b"the old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.pdf"]   # no .part, no report.md


# --- provenance in the report --------------------------------------------------------------------
def test_provenance_all_equal(runs, tmp_path):
    equal, differing = sweep_report.compare_provenance(runs)
    assert differing == []
    assert equal["data_md5 train-images-idx3-ubyte.gz"] == "f" * 32
    md = write(runs, tmp_path)["md"].read_text()
    assert f"Equal in all {len(runs)} runs:\n" in md
    assert ["hostname", "lab-1"] in table_rows(md, "field")
    run_rows = table_rows(md, "run")
    assert len(run_rows) == len(runs) and all(len(row) == 4 for row in run_rows)
    assert {(row[0], row[3]) for row in run_rows} == {(r["key"], f"{r['seconds']:.1f}") for r in runs}


def test_provenance_fields_that_differ_are_listed_per_run(runs, tmp_path):
    runs[1]["provenance"]["hostname"] = "lab-2"
    del runs[4]["provenance"]["git_commit"]
    runs[7]["provenance"]["data_md5"] = {"train-images-idx3-ubyte.gz": "0" * 32}
    del runs[0]["provenance"]["isa"]   # missing in the first run: differing too
    equal, differing = sweep_report.compare_provenance(runs)
    assert differing == ["git_commit", "isa", "hostname", "data_md5 train-images-idx3-ubyte.gz"]
    assert "hostname" not in equal and "git_commit" not in equal and equal["python"] == "3.11.7"
    md = write(runs, tmp_path)["md"].read_text()
    assert "below: git commit, ISA of the C kernels, hostname, MD5 of train-images-idx3-ubyte.gz" in md
    assert "git commit" not in [row[0] for row in table_rows(md, "field")]
    by_key = {row[0]: row for row in table_rows(md, "run")}
    assert by_key[runs[0]["key"]][4:] == ["a" * 40, "(missing)", "lab-1", "f" * 32]
    assert by_key[runs[1]["key"]][4:] == ["a" * 40, "avx2", "lab-2", "f" * 32]
    assert by_key[runs[4]["key"]][4:] == ["(missing)", "avx2", "lab-1", "f" * 32]
    assert by_key[runs[7]["key"]][4:] == ["a" * 40, "avx2", "lab-1", "0" * 32]


# --- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("spoil, error, message", [
    (lambda runs: runs.clear(), ValueError, "non-empty list"),
    (lambda runs: runs[0].pop("provenance"), ValueError, "layers2_seed0 lacks the field.s. provenance.*again"),
    (lambda runs: runs[2].pop("seconds"), ValueError, "layers2_seed2 lacks the field.s. seconds"),
    (lambda runs: runs[1].update(provenance="c"), ValueError, "provenance must be the dict"),
    (lambda runs: runs[3].update(test_accuracy=[0.5]), ValueError, "layers3_seed0 has 3 epoch.s. but test_accuracy"),
    (lambda runs: runs.append(dict(runs[0], key="copy")), ValueError, "same settings and seed"),
    (lambda runs: runs.__setitem__(0, "run"), TypeError, r"results\[0\] must be a run's dict"),
])
def test_bad_runs_are_refused_and_nothing_is_written(runs, tmp_path, spoil, error, message):
    spoil(runs)
    with pytest.raises(error, match=message):
        write(runs, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(group_by="width"), ValueError, "group_by='width' is not a setting of every run"),
    (dict(model_source=""), TypeError, "model_source must be"),
    (dict(command_line="python sweep.py"), TypeError, "command_line must be a list of str"),
])
def test_bad_arguments_are_refused(runs, tmp_path, kwargs, error, message):
    kwargs.setdefault("model_source", SOURCE)
    kwargs.setdefault("command_line", ["sweep.py"])
    with pytest.raises(error, match=message):
        sweep_report.write_report(runs, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


# --- model_source --------------------------------------------------------------------------------
def test_model_source_is_the_trained_class():
    trained = type(common.make_mlp(nn, [4]))
    assert SOURCE == textwrap.dedent(inspect.getsource(trained))
    assert SOURCE.startswith("class MLP(nn.Module):") and "def forward(self, x):" in SOURCE
    assert sweep_report.model_source(trained) == SOURCE   # the class itself works too


def test_model_source_refuses_what_is_not_one_model_class():
    def two_classes():
        class A:
            pass

        class B:
            pass

    with pytest.raises(ValueError, match="defines 2 classes"):
        sweep_report.model_source(two_classes)
    with pytest.raises(TypeError, match="must be a function"):
        sweep_report.model_source("MLP")


# --- provenance() --------------------------------------------------------------------------------
def fake_mnist(folder):
    """Four files under MNIST's names, in torchvision's layout, one gzipped: what is hashed is
    the bytes, so they need not be real IDX files."""
    raw = folder / "MNIST" / "raw"
    raw.mkdir(parents=True)
    names = {"train-images-idx3-ubyte.gz": b"images", "train-labels-idx1-ubyte": b"labels",
             "t10k-images-idx3-ubyte": b"test images", "t10k-labels-idx1-ubyte": b"test labels"}
    for name, data in names.items():
        (raw / name).write_bytes(data)
    return {f"MNIST/raw/{name}": hashlib.md5(data).hexdigest() for name, data in names.items()}


def test_provenance_fields(tmp_path):
    expected_md5 = fake_mnist(tmp_path)
    prov = sweep_report.provenance(tmp_path)
    assert json.loads(json.dumps(prov)) == prov
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert prov["git_commit"] == "unknown" if head.returncode else prov["git_commit"].startswith(head.stdout.strip())
    assert prov["data_md5"] == expected_md5 and prov["data_dir"] == str(tmp_path.resolve())
    assert prov["python"] == ".".join(map(str, sys.version_info[:3])) and prov["numpy"] == np.__version__
    assert prov["backend"] == backend.name()
    if backend.name() == "c":
        assert prov["isa"] == backend.c_kernels.isa() and prov["threads"] == backend.c_kernels.THREADS
    assert prov["cpu"] and prov["hostname"]
    if os.path.exists("/proc/cpuinfo"):
        assert prov["cpu"] in open("/proc/cpuinfo").read()


def test_provenance_threads_follow_the_environment(tmp_path):
    fake_mnist(tmp_path)
    code = ("import json, sys; sys.path.insert(0, 'examples'); import sweep_report; "
            f"print(json.dumps(sweep_report.provenance({str(tmp_path)!r})))")
    env = dict(os.environ, TINYGRAD_EDU_NUM_THREADS="1", TINYGRAD_EDU_BACKEND="c")
    prov = json.loads(subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                                     text=True, check=True).stdout)
    assert prov["threads"] == 1 and prov["backend"] == "c"


def test_md5_is_cached_until_the_file_changes(tmp_path):
    fake_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    first = sweep_report.file_md5(path)
    stat = path.stat()
    path.write_bytes(b"TEST LABELS")                      # same size, and the same time put back:
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert sweep_report.file_md5(path) == first           # not read again
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert sweep_report.file_md5(path) == hashlib.md5(b"TEST LABELS").hexdigest()


def test_provenance_without_the_data_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no MNIST file .* in {re.escape(str(tmp_path))}"):
        sweep_report.provenance(tmp_path)


def test_git_commit_outside_git_is_unknown(tmp_path, monkeypatch):
    assert sweep_report.git_commit(tmp_path) == "unknown"
    monkeypatch.setenv("PATH", str(tmp_path))   # no git at all
    assert sweep_report.git_commit(REPO) == "unknown"
