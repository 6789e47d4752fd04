"""The examples run as scripts and do what they claim.

Tests that need the real MNIST take the ``mnist_root`` fixture (they skip, saying why, without
it); the others make the little data they need. A subprocess timeout here is a hang guard, not a
speed check: HANG_GUARD times the run's normal time, measured on the project's 2-core machine
while loaded (load average 5-8), so a machine several times slower still passes.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from test_data import write_idx

sys.path.insert(0, str(REPO / "examples"))
import mnist_common as common  # noqa: E402
import mnist_sweep  # noqa: E402
import sweep_report  # noqa: E402
from test_sweep_report import PROVENANCE, SECTIONS, pdf_page_count, table_rows  # noqa: E402

HANG_GUARD = 10


def hang_guard_failure(what, normal):
    pytest.fail(f"hang guard: {what} did not end within {HANG_GUARD * normal:.0f} s, {HANG_GUARD}x its "
                f"normal {normal} s: it hangs (this limit is not a speed check)", pytrace=False)


def run_script(name, *args, normal, env=None):
    """Run examples/``name``; ``normal`` is its usual time in seconds (see HANG_GUARD)."""
    try:
        return subprocess.run([sys.executable, str(REPO / "examples" / name), *args], capture_output=True,
                              text=True, timeout=HANG_GUARD * normal, cwd=REPO, env=env)
    except subprocess.TimeoutExpired:
        hang_guard_failure(f"examples/{name} {' '.join(args)}", normal)


def _ctrl_c_stops_it():
    """In a child about to start: Ctrl-C's default action back. A shell that starts the test run
    in the background without job control (`pytest &` in a script) makes it ignore SIGINT, a child
    inherits that, and Python then installs no KeyboardInterrupt: the tests pressing Ctrl-C would
    wait in vain."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_example(name, *args, normal, env=None):
    result = run_script(name, *args, normal=normal, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def wait_until(condition, what, normal):
    deadline = time.monotonic() + HANG_GUARD * normal
    while not condition():
        if time.monotonic() > deadline:
            hang_guard_failure(what, normal)
        time.sleep(0.05)


def interrupt_at(command, line, what, normal, tmp_path):
    """Run ``command`` with its output going to files, press Ctrl-C once its stdout holds ``line``
    (``what``, within the hang guard of ``normal`` s), and return its exit code and stderr lines."""
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "w") as out_file, open(err, "w") as err_file:
        proc = subprocess.Popen(command, stdout=out_file, stderr=err_file, cwd=REPO,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"), preexec_fn=_ctrl_c_stops_it)
    try:
        wait_until(lambda: line in out.read_text(), what, normal)
        proc.send_signal(signal.SIGINT)
        returncode = proc.wait(timeout=HANG_GUARD * 5)
    finally:
        proc.kill()
        proc.wait()
    return returncode, err.read_text().strip().splitlines()


def test_xor_example_learns_xor():
    out = run_example("xor.py", normal=5)
    predictions = [float(v) for v in out.split("predictions:")[1].strip(" []\n").split(",")]
    assert [round(p) for p in predictions] == [0, 1, 1, 0]


# --- MNIST training -------------------------------------------------------------------------------
@pytest.mark.slow
def test_short_training_run_beats_90_percent(mnist_root):
    torch, nn, optim = common.load_engine("tinygrad_edu")
    torch.manual_seed(0)
    train, test = common.load_mnist(mnist_root)
    loader = torch.utils.data.DataLoader(train, batch_size=12, shuffle=True, seed=0)
    model = common.make_mlp(nn, common.hidden_units_for(2))
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    common.train_epoch(torch, model, loader, nn.CrossEntropyLoss(), optimizer, epoch=0, log_every=0)
    correct, total = common.evaluate(torch, model, torch.utils.data.DataLoader(test, batch_size=1000))
    assert total == 10000 and correct / total > 0.90


@pytest.mark.slow
def test_lecture_run_reaches_the_lectures_level(tmp_path, mnist_root):
    """The lecture's settings (10 epochs, batch 12, lr 0.01) with seed 0, the whole output format."""
    out = run_example("mnist_mlp.py", "--data-dir", str(mnist_root), "--out", str(tmp_path), "--seed", "0",
                      normal=300)
    assert "[10,  4000] loss:" in out and "Finished Training" in out and "GroundTruth" in out
    correct = int(out.split("/10000")[0].split()[-1])
    assert correct / 10000 >= 0.970
    assert f"Accuracy: {correct / 10000:.3f}" in out
    assert (tmp_path / "predictions_tinygrad_edu_seed0.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["tinygrad_edu", "torch"])
def test_lecture_script_runs_unchanged_on_both_engines(tmp_path, mnist_root, engine):
    """The same training lines on tinygrad_edu and on PyTorch: only the imports differ."""
    env = None
    if engine == "torch":
        pytest.importorskip("torch")
        # one OpenMP thread: on a loaded 2-core machine PyTorch's two threads spin at every barrier
        # (measured at load 8: one epoch 8 min 40 s, 240 s of CPU; with one thread 51 s)
        env = dict(os.environ, OMP_NUM_THREADS="1")
    out = run_example("mnist_mlp.py", "--engine", engine, "--epochs", "1", "--data-dir", str(mnist_root),
                      "--out", str(tmp_path), normal=60, env=env)
    assert "[1,  4000] loss:" in out and "Prediction" in out
    correct = int(out.split("/10000")[0].split()[-1])
    assert correct > 8500
    summary = json.loads((tmp_path / f"mnist_mlp_{engine}_seed0.json").read_text())
    assert summary["accuracy"] == correct / 10000 and len(summary["seconds_per_epoch"]) == 1
    figure = tmp_path / f"predictions_{engine}_seed0.png"   # per engine: the other's is not overwritten
    assert summary["figure"] == str(figure) and figure.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_lecture_script_stops_on_ctrl_c_with_one_line(tmp_path, mnist_root):
    returncode, err = interrupt_at([sys.executable, str(REPO / "examples" / "mnist_mlp.py"), "--data-dir",
                                    str(mnist_root), "--out", str(tmp_path)],
                                   "[1,  2000] loss:", "mnist_mlp.py's first loss line", 30, tmp_path)
    assert returncode == 130 and err == [
        "interrupted: the tinygrad_edu run stopped (its figure and summary are written only at the end)"]

# --- the CNN --------------------------------------------------------------------------------------
def write_small_mnist(folder, n_train=640, n_test=200):
    """Four IDX files of our own that a CNN learns in a few steps: digit k is a bright 6x6 square at
    the k-th of ten places, on faint noise. Returns (the test labels, {file name: MD5}), the MD5s
    for MNIST.resources, which otherwise accepts only the real files."""
    rng = np.random.default_rng(3)
    sums = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
        for image, k in zip(images, labels):
            top, left = 3 + 13 * (k // 5), 1 + 5 * (k % 5)
            image[top:top + 6, left:left + 6] = 255
        sums[f"{split}-images-idx3-ubyte"] = write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        sums[f"{split}-labels-idx1-ubyte"] = write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    return labels, sums


# mnist_cnn.py in a child that accepts the small files' checksums: argv is the MD5s (JSON), then the flags
RUN_CNN_ON_OWN_FILES = """
import json, sys
sys.path.insert(0, "examples")
from tinygrad_edu.vision.datasets import MNIST
MNIST.resources = json.loads(sys.argv[1])
import mnist_cnn
sys.exit(mnist_cnn.main(sys.argv[2:]))
"""


@pytest.fixture
def small_mnist(tmp_path):
    """(folder, test labels, command line of mnist_cnn.py on it without the flags)."""
    folder = tmp_path / "small_mnist"
    folder.mkdir()
    labels, sums = write_small_mnist(folder)
    return folder, labels, [sys.executable, "-c", RUN_CNN_ON_OWN_FILES, json.dumps(sums)]


def one_thread_torch(engine):
    """The environment for a run on ``engine``; PyTorch with one OpenMP thread (see
    test_lecture_script_runs_unchanged_on_both_engines); skips without PyTorch."""
    if engine != "torch":
        return None
    pytest.importorskip("torch")
    return dict(os.environ, OMP_NUM_THREADS="1")


@pytest.mark.parametrize("engine", ["tinygrad_edu", "torch"])
def test_cnn_example_learns_small_digits_in_the_lectures_format(tmp_path, small_mnist, engine):
    folder, test_labels, command = small_mnist
    out_dir = tmp_path / "out"
    try:
        result = subprocess.run([*command, "--engine", engine, "--data-dir", str(folder), "--out", str(out_dir),
                                 "--epochs", "4", "--log-every", "4", "--seed", "1"],
                                capture_output=True, text=True, timeout=HANG_GUARD * 20, cwd=REPO,
                                env=one_thread_torch(engine))
    except subprocess.TimeoutExpired:
        hang_guard_failure(f"mnist_cnn.py on small files ({engine})", 20)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # 640 images in batches of 64: 10 mini-batches an epoch, a loss line after the 4th and the 8th;
    # the loss value itself is "%.3f" (float() reads it)
    assert all(float(line.split(" loss: ")[1]) >= 0 for line in lines[:8])
    assert [line.split(" loss: ")[0] for line in lines[:8]] == [
        f"[{epoch}, {batch:5d}]" for epoch in (1, 2, 3, 4) for batch in (4, 8)]
    assert lines[8:11] == ["Finished Training", "GroundTruth", "    " + " ".join("%3s" % k for k in test_labels[:12])]
    assert lines[11] == "Prediction" and len(lines[12].split()) == 12
    correct = int(lines[13].removesuffix("/200"))
    assert lines[13] == f"{correct}/200" and lines[14] == f"Accuracy: {correct / 200:.3f}"
    assert correct / 200 > 0.9   # learned (chance is 0.1; 4 epochs reached 1.0 for seeds 0-3 on both engines)

    name = f"{engine}_seed1"
    figure, summary_path = out_dir / f"predictions_{name}.png", out_dir / f"mnist_cnn_{name}.json"
    assert lines[15:] == [f"saved {figure} and {summary_path}"]
    summary = json.loads(summary_path.read_text())
    assert summary["accuracy"] == correct / 200 and summary["figure"] == str(figure)
    assert summary["engine"] == engine and summary["seed"] == 1 and summary["epochs"] == 4
    assert summary["batch_size"] == 64 and summary["lr"] == 0.05 and len(summary["seconds_per_epoch"]) == 4
    assert summary["model"].startswith("Sequential(\n  (conv1): Conv2d(1, 20, kernel_size=(5, 5)")
    assert figure.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([figure.name, summary_path.name])  # no temporary files


def test_cnn_is_built_alike_on_both_engines():
    """make_cnn takes the engine's nn: the same layers, names and shapes, and on MNIST-shaped input
    64 x 4 x 4 = 1024 features reach the classifier."""
    pytest.importorskip("torch")
    torch_models = {}
    for engine in ("tinygrad_edu", "torch"):
        torch, nn, _ = common.load_engine(engine)
        model = common.make_cnn(nn)
        torch_models[engine] = (str(model), [(name, tuple(p.shape)) for name, p in model.named_parameters()])
        assert tuple(model(torch.zeros(2, 1, 28, 28)).shape) == (2, 10)
    assert torch_models["tinygrad_edu"] == torch_models["torch"]
    assert torch_models["torch"][1][-4:] == [("fc1.weight", (128, 1024)), ("fc1.bias", (128,)),
                                             ("fc2.weight", (10, 128)), ("fc2.bias", (10,))]


def test_cnn_example_stops_on_ctrl_c_with_one_line_and_writes_nothing(tmp_path, small_mnist):
    folder, _, command = small_mnist
    out_dir = tmp_path / "out"
    returncode, err = interrupt_at([*command, "--data-dir", str(folder), "--out", str(out_dir), "--epochs", "1000",
                                    "--log-every", "1"], "[1,     1] loss:", "mnist_cnn.py's first loss line",
                                   20, tmp_path)
    assert returncode == 130 and err == [
        "interrupted: the tinygrad_edu run stopped (its figure and summary are written only at the end)"]
    assert not out_dir.exists()


@pytest.mark.slow
def test_cnn_example_reaches_99_percent_with_its_defaults(tmp_path, mnist_root):
    """The defaults (3 epochs, batch 64, SGD with momentum, lr 0.05 halved every epoch), seed 0."""
    out = run_example("mnist_cnn.py", "--data-dir", str(mnist_root), "--out", str(tmp_path), normal=340)
    assert "[3,   800] loss:" in out and "Finished Training" in out and "GroundTruth" in out
    correct = int(out.split("/10000")[0].split()[-1])
    assert correct / 10000 >= 0.990
    assert f"Accuracy: {correct / 10000:.3f}" in out
    assert json.loads((tmp_path / "mnist_cnn_tinygrad_edu_seed0.json").read_text())["accuracy"] == correct / 10000


@pytest.mark.parametrize("use_mnist", [False, True])
def test_shallow_gradients_example_curves_coincide(tmp_path, request, use_mnist):
    data_dir = str(request.getfixturevalue("mnist_root")) if use_mnist else ""
    out = run_example("shallow_gradients.py", "--out", str(tmp_path), "--epochs", "50", "--data-dir", data_dir,
                      normal=30)
    assert out.count("hand form gradients_outer") == 2 and "deep MLP 20-16-8-4-2-10 (5 layers), float32" in out
    gap = float(out.split("largest gap between the curves ")[1].split(",")[0])
    assert gap < 1e-9 and ("MNIST 0 vs 1" in out) == use_mnist
    assert (tmp_path / "shallow_training.png").read_bytes()[:4] == b"\x89PNG"


# --- command lines and data ------------------------------------------------------------------
BOTH_SCRIPTS_REJECT = [
    (["--batch-size", "0"], "must be a positive integer"),
    (["--data-dir", "/nonexistent/mnist"], "--data-dir /nonexistent/mnist does not exist"),
    ([], "TINYGRAD_EDU_DATA /nonexistent/mnist does not exist"),
    (["--data-dir", "{a file}"], "is a file, not a folder"),
]


@pytest.mark.parametrize("script, flags, message", [
    ("mnist_sweep.py", ["--layers", "0"], "layers must be between 1 and 5"),
    ("mnist_sweep.py", ["--layers", "6"], "layers must be between 1 and 5"),
    ("mnist_sweep.py", ["--layers", "4", "--hidden", "512,256,128,64", "256,128"],
     "--layers: layers must be between 1 and 3 (one more than the 2 widths of --hidden 256,128), got 4"),
    ("mnist_sweep.py", ["--hidden", "256,x"], "--hidden: widths are positive integers separated by commas"),
    ("mnist_sweep.py", ["--hidden", "256,0"], "--hidden: widths must be positive, got '256,0'"),
    ("mnist_sweep.py", ["--seeds", "0"], "--seeds: '0' holds no seed"),
    ("mnist_sweep.py", ["--seeds", "3:1"], "--seeds: '3:1' holds no seed"),
    ("mnist_sweep.py", ["--seeds", "a"], "--seeds: seeds are N (seeds 0 .. N-1) or A:B"),
    ("mnist_sweep.py", ["--lr", "0.1", "0"], "--lr: must be a positive number, got 0.0"),
    ("mnist_sweep.py", ["--batch-size", "0"], "--batch-size: must be a positive integer, got 0"),
    ("mnist_sweep.py", ["--optimizer", "rmsprop"], "--optimizer: invalid choice: 'rmsprop'"),
    ("mnist_sweep.py", ["--activation", "gelu"], "--activation: invalid choice: 'gelu'"),
    ("mnist_sweep.py", ["--group-by", "seed"], "--group-by: invalid choice: 'seed'"),
    ("mnist_sweep.py", ["--executor", "spark"], "--executor: invalid choice: 'spark'"),
    ("mnist_sweep.py", ["--scheduler", "tcp://127.0.0.1:8786"], "--scheduler: needs --executor dask"),
    ("mnist_sweep.py", ["--engine", "jax"], "--engine: invalid choice: 'jax'"),
    ("mnist_cnn.py", ["--log-every", "0"], "--log-every: must be a positive integer, got 0"),
    ("mnist_cnn.py", ["--lr", "-0.1"], "--lr: must be a positive number, got -0.1"),
    ("mnist_cnn.py", ["--engine", "jax"], "--engine: invalid choice: 'jax'"),
    *[(script, flags, message) for script in ("mnist_sweep.py", "mnist_mlp.py", "mnist_cnn.py")
      for flags, message in BOTH_SCRIPTS_REJECT],
])
def test_examples_reject_bad_flags(tmp_path, script, flags, message):
    (tmp_path / "a file").write_text("not a folder")
    flags = [str(tmp_path / "a file") if flag == "{a file}" else flag for flag in flags]
    if "--data-dir" not in flags and message.startswith("TINYGRAD_EDU_DATA"):
        env = dict(os.environ, TINYGRAD_EDU_DATA="/nonexistent/mnist")
    else:
        env = dict(os.environ, TINYGRAD_EDU_DATA=str(tmp_path))
    result = run_script(script, *flags, normal=10, env=env)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def write_damaged_mnist(folder):
    """The four file names, the first with a wrong magic number."""
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (folder / name).write_bytes(b"\x00" * 16)


@pytest.mark.parametrize("script", ["mnist_sweep.py", "mnist_mlp.py", "mnist_cnn.py"])
@pytest.mark.parametrize("damaged", [False, True])
def test_missing_or_damaged_data_gets_one_paragraph_not_a_traceback(tmp_path, script, damaged):
    """Checked once, in the parent, before any worker starts; the advice is flags, never download=True."""
    data = tmp_path / "data"
    data.mkdir()
    if damaged:
        write_damaged_mnist(data)
    result = run_script(script, "--data-dir", str(data), "--out", str(tmp_path / "out"), normal=10)
    err = result.stderr
    assert result.returncode == 1 and "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    assert f"cannot use MNIST in {data}" in err
    assert "--data-dir" in err and "TINYGRAD_EDU_DATA" in err and "--download" in err and "download=True" not in err
    assert ("magic number" in err) if damaged else ("train-images-idx3-ubyte" in err)
    assert "to train" not in result.stdout   # no worker was started


@pytest.mark.parametrize("folder", ["missing", "a file", "empty"])
def test_shallow_gradients_says_when_it_falls_back_to_two_moons(tmp_path, folder):
    path = tmp_path / folder
    if folder == "a file":
        path.write_text("not a folder")
    elif folder == "empty":
        path.mkdir()
    out = run_example("shallow_gradients.py", "--data-dir", str(path), "--out", str(tmp_path), "--epochs", "2",
                      normal=15)
    why = {"missing": "does not exist", "a file": "is a file, not a folder", "empty": "holds no MNIST training files"}[folder]
    assert f"MNIST folder {path} {why}: training on two moons (2-D) instead" in out
    assert "training on two moons (2-D): 2 epochs" in out


# --- the sweep ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sweep_quick_writes_png_csv_json_and_the_report(tmp_path, mnist_root):
    out = run_example("mnist_sweep.py", "--quick", "--report", "--data-dir", str(mnist_root), "--out", str(tmp_path),
                      "--jobs", "2", normal=30)
    assert "4 runs: 0 already finished" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["layers"] for r in results] == [2, 3, 4, 5]
    assert [r["hidden_units"] for r in results] == [[512], [512, 256], [512, 256, 128], [512, 256, 128, 64]]
    for r in results:
        assert len(r["test_accuracy"]) == 1 and 0.1 < r["final_test_accuracy"] <= 1
        assert r["backend"] in ("c", "numpy") and not {*mnist_sweep.TIMING_FIELDS, "provenance"} & set(r)
    timings = json.loads((tmp_path / "timings.json").read_text())   # what differs from sweep to sweep
    assert list(timings) == [r["key"] for r in results]
    assert all(t["seconds"] > 0 and t["host"] and t["pid"] != os.getpid() for t in timings.values())
    # each run's provenance, taken in its worker: in its own file, and in provenance.json by run
    provenance = json.loads((tmp_path / "provenance.json").read_text())
    md5s = {str(path.relative_to(mnist_root)): sweep_report.file_md5(path) for path in sweep_report.mnist_files(mnist_root)}
    for r in results:
        saved = json.loads((tmp_path / "runs" / f"{r['key']}.json").read_text())
        assert saved == dict(r, **timings[r["key"]], provenance=provenance[r["key"]])
        assert saved["provenance"]["data_md5"] == md5s and saved["provenance"]["backend"] == r["backend"]
        assert saved["provenance"]["hostname"] == saved["host"]
    # the report: its table's numbers are results.json's, its wall times the runs' own
    md = (tmp_path / "report.md").read_text()
    assert [row[:4] for row in table_rows(md, "# layers")] == [
        [str(r["layers"]), "-".join(map(str, r["hidden_units"])), "1", f"{r['final_test_accuracy']:.4f}"]
        for r in results]
    assert {(row[0], row[3]) for row in table_rows(md, "run")} == {
        (key, f"{t['seconds']:.1f}") for key, t in timings.items()}
    assert "mnist_sweep.py --quick --report --data-dir" in md
    assert md.count("class MLP(nn.Module):") == 1 and all(f"\n## {section}\n" in md for section in SECTIONS)
    for png in ("report_accuracy.png", "report_epochs.png", "report_gradient_flow.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    assert pdf_page_count(tmp_path / "report.pdf") >= 2 and "report.pdf" in out.splitlines()[-1]
    assert results[0]["final_test_accuracy"] > 0.75   # 2 layers learn fast even on a fifth of the data
    for r in results:   # one epoch of gradient flow: a norm per Linear layer, two numbers per hidden one
        (norms,), (means,), (dead,) = (r[field] for field in mnist_sweep.FLOW_FIELDS)
        assert len(norms) == r["layers"] and len(means) == len(dead) == r["layers"] - 1
        assert all(n > 0 for n in norms) and all(m > 0 for m in means) and all(0 <= f < 1 for f in dead)
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("layers,hidden_units,activation,optimizer,lr") and len(csv_lines) == 5
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def quick_configs(tmp_path, *flags):
    return mnist_sweep.run_configs(mnist_sweep.parse_args(["--quick", "--data-dir", str(tmp_path), *flags]))


def fake_result(config, accuracy=0.5):
    """A finished run's file as the sweep writes it, with made-up numbers."""
    epochs, layers = config["epochs"], config["layers"]
    return dict(config, final_train_loss=0.4, test_accuracy=[accuracy] * epochs,
                final_test_accuracy=accuracy, seconds=1.0, backend="numpy", provenance=PROVENANCE,
                weight_grad_norm=[[0.1 * (i + 1) for i in range(layers)]] * epochs,
                hidden_mean_activation=[[0.5] * (layers - 1)] * epochs,
                dead_relu_fraction=[[0.01 * i for i in range(layers - 1)]] * epochs)


@pytest.mark.parametrize("make_text, reason", [
    (lambda own, other: "{}", "lacks the field(s)"),
    (lambda own, other: json.dumps(fake_result(other)), "is another configuration's run (layers 3"),
    (lambda own, other: json.dumps(fake_result(own))[:40], "is not valid JSON"),
    (lambda own, other: "[1, 2]", "holds a JSON list"),
    (lambda own, other: json.dumps(dict(fake_result(own), test_accuracy=[0.5, 0.6])), "test accuracies"),
    (lambda own, other: json.dumps({k: v for k, v in fake_result(own).items() if k != "dead_relu_fraction"}),
     "lacks the field(s) dead_relu_fraction"),   # a run file from before the probe: trained again
    (lambda own, other: json.dumps(dict(fake_result(own), weight_grad_norm=[[0.1]])),
     "has 1 epoch(s) of 2 layer(s) but weight_grad_norm [[0.1]]"),
    (lambda own, other: json.dumps(dict(fake_result(own), dead_relu_fraction=[["none"]])),
     "has 1 epoch(s) of 1 layer(s) but dead_relu_fraction"),
    (lambda own, other: json.dumps({k: v for k, v in fake_result(own).items() if k != "provenance"}),
     "lacks the field(s) provenance"),   # a run file from before provenance was recorded: trained again
    (lambda own, other: json.dumps(dict(fake_result(own), provenance="lab-1")), "has provenance 'lab-1', not the dict"),
])
def test_sweep_moves_aside_a_run_file_that_is_not_the_runs_result(tmp_path, capsys, make_text, reason):
    own, other = quick_configs(tmp_path, "--layers", "2", "3")
    run_dir = tmp_path / "runs"
    run_dir.mkdir()
    path = run_dir / f"{own['key']}.json"
    (run_dir / f"{path.name}.rejected-1").write_text("an earlier rejected file")
    path.write_text(text := make_text(own, other))
    assert mnist_sweep.load_finished(run_dir, own) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and reason in err and f"{path.name}.rejected-2" in err
    assert not path.exists() and (run_dir / f"{path.name}.rejected-2").read_text() == text   # kept, not deleted
    assert (run_dir / f"{path.name}.rejected-1").read_text() == "an earlier rejected file"


def test_sweep_accepts_its_own_finished_run_file(tmp_path, capsys):
    config, = quick_configs(tmp_path, "--layers", "4")
    path = tmp_path / f"{config['key']}.json"
    path.write_text(json.dumps(fake_result(config)))
    assert mnist_sweep.load_finished(tmp_path, config) == fake_result(config)
    assert path.exists() and capsys.readouterr().err == ""


def test_sweep_writes_its_report_by_default_but_not_with_quick(tmp_path):
    def report(*flags):
        return mnist_sweep.parse_args(["--data-dir", str(tmp_path), *flags]).report
    assert report() and not report("--no-report")
    assert not report("--quick") and report("--quick", "--report")
    # the report groups by the sweep's --group-by, under its own name of that setting
    runs = [fake_result(config) for config in quick_configs(tmp_path, "--layers", "2", "3")]
    for group_by, field in mnist_sweep.GROUP_BY.items():
        assert sweep_report.check_runs(runs, field)[0] == field, group_by


def test_quick_sweep_has_its_own_default_folder_and_says_quick_in_its_figure(tmp_path):
    """A smoke run once overwrote a real sweep's sweep.png, results.csv and results.json."""
    assert mnist_sweep.parse_args(["--data-dir", str(tmp_path)]).out == Path("runs/sweep")
    assert mnist_sweep.parse_args(["--quick", "--data-dir", str(tmp_path)]).out == Path("runs/sweep-quick")
    assert mnist_sweep.parse_args(["--quick", "--data-dir", str(tmp_path), "--out", "x"]).out == Path("x")
    quick = [fake_result(config) for config in quick_configs(tmp_path, "--layers", "2", "3")]
    real = [fake_result(config) for config in mnist_sweep.run_configs(
        mnist_sweep.parse_args(["--data-dir", str(tmp_path), "--layers", "2", "3"]))]
    assert "quick run (--quick): 12000 training and 2000 test images, 1 epoch(s)" in \
        mnist_sweep.sweep_figure(quick).get_suptitle()
    assert mnist_sweep.sweep_figure(real).get_suptitle() == ""


def test_sweep_figure_draws_gradient_flow_per_layer_and_depth_below_the_accuracy(tmp_path):
    results = [fake_result(config) for config in quick_configs(tmp_path, "--layers", "1", "3", "5", "--seeds", "2")]
    results[-1] = dict(results[-1], weight_grad_norm=[[0.01, 0.02, 0.03, 0.04, 0.05]])   # seeds are averaged
    fig = mnist_sweep.sweep_figure(results)
    accuracy, per_epoch, grads, dead = fig.axes
    assert "accuracy vs # layers" in accuracy.get_title() and "per epoch" in per_epoch.get_title()
    assert grads.get_yscale() == "log" and "gradient norm" in grads.get_title()
    assert [line.get_label() for line in grads.get_lines()] == ["1 layers", "3 layers", "5 layers"]
    assert [list(line.get_xdata()) for line in grads.get_lines()] == [[1], [1, 2, 3], [1, 2, 3, 4, 5]]
    np.testing.assert_allclose(grads.get_lines()[2].get_ydata(), [0.055, 0.11, 0.165, 0.22, 0.275])
    assert "dead units" in dead.get_title()
    assert [line.get_label() for line in dead.get_lines()] == ["3 layers", "5 layers"]   # 1 layer: no ReLU
    np.testing.assert_allclose(dead.get_lines()[1].get_ydata(), [0, 0.01, 0.02, 0.03])
    assert [line.get_color() for line in dead.get_lines()] == [line.get_color() for line in grads.get_lines()[1:]]


def test_gradient_flow_measures_the_probe_and_leaves_the_weights_gradients_alone(rng):
    import tinygrad_edu as tg
    from tinygrad_edu import nn
    tg.manual_seed(0)
    model = common.make_mlp(nn, [6, 5], in_dim=4, out_dim=3)
    first, second = model.l_layers[0], model.l_layers[1]
    with tg.no_grad():
        first.bias.data[2] = -100.0   # unit 2 of hidden layer 1: 0 on every image, a dead ReLU
    images = tg.tensor(rng.random((8, 4), dtype=np.float32))
    labels = tg.tensor(rng.integers(0, 3, 8))
    criterion = nn.CrossEntropyLoss()
    criterion(model(images), labels).backward()   # the training loop's last step left these
    kept = [p.grad for p in model.parameters()]
    kept_values = [g.numpy().copy() for g in kept]

    flow = mnist_sweep.gradient_flow(model, criterion, images, labels)

    assert [p.grad for p in model.parameters()] == kept   # the very same tensors, unchanged
    for g, values in zip(kept, kept_values):
        np.testing.assert_array_equal(g.numpy(), values)
    hidden1 = np.maximum(images.numpy() @ first.weight.data.T + first.bias.data, 0)
    hidden2 = np.maximum(hidden1 @ second.weight.data.T + second.bias.data, 0)
    np.testing.assert_allclose(flow["hidden_mean_activation"], [hidden1.mean(), hidden2.mean()], rtol=1e-5)
    assert flow["dead_relu_fraction"] == [(hidden1 == 0).all(axis=0).mean(), (hidden2 == 0).all(axis=0).mean()]
    assert flow["dead_relu_fraction"][0] >= 1 / 6
    model.zero_grad()
    criterion(model(images), labels).backward()   # the same loss, without hooks: the same gradients
    np.testing.assert_allclose(flow["weight_grad_norm"],
                               [np.linalg.norm(layer.weight.grad.numpy()) for layer in model.l_layers], rtol=1e-6)
    assert model.activation._forward_hooks == {}   # the probe's hook is gone


# --- the grid ---------------------------------------------------------------------------------------
def test_sweep_runs_the_product_of_its_settings_each_keyed_by_all_of_them(tmp_path):
    configs = quick_configs(tmp_path, "--layers", "3", "2", "--lr", "0.1", "0.01", "--optimizer", "adam", "sgd")
    assert [(c["layers"], c["optimizer"], c["lr"]) for c in configs] == [
        (2, "adam", 0.01), (2, "adam", 0.1), (2, "sgd", 0.01), (2, "sgd", 0.1),
        (3, "adam", 0.01), (3, "adam", 0.1), (3, "sgd", 0.01), (3, "sgd", 0.1)]   # numbers sorted, names as given
    assert len({c["key"] for c in configs}) == 8
    assert configs[0]["key"] == "layers2_hidden512_relu_adam_lr0.01_batch12_epochs1_seed0_quick"
    assert configs[0]["activation"] == "relu" and configs[0]["batch_size"] == 12 and configs[0]["seed"] == 0
    # any one setting changed: every run's key and stored configuration change with it
    defaults = quick_configs(tmp_path, "--layers", "2", "3")
    for flags in (["--activation", "tanh"], ["--batch-size", "13"], ["--epochs", "2"], ["--lr", "0.010000001"],
                  ["--hidden", "511,256"], ["--seeds", "1:2"], ["--optimizer", "adam"], ["--engine", "torch"]):
        changed = quick_configs(tmp_path, "--layers", "2", "3", *flags)
        assert not {c["key"] for c in changed} & {c["key"] for c in defaults}, flags
        assert all(c != d for c, d in zip(changed, defaults))
        result = fake_result(defaults[1])   # a stale run under the new run's name is not reused
        (tmp_path / f"{changed[1]['key']}.json").write_text(json.dumps(dict(result, key=changed[1]["key"])))
        assert mnist_sweep.load_finished(tmp_path, changed[1]) is None


def test_sweep_hidden_widths_are_prefixed_per_depth_and_seeds_are_ranges(tmp_path):
    configs = quick_configs(tmp_path, "--layers", "1", "3", "--hidden", "512,256,128,64", "32,16", "--seeds", "2", "5:7")
    assert [(c["hidden_units"], c["seed"]) for c in configs] == [
        ([], 0), ([], 1), ([], 5), ([], 6),   # one layer: no hidden width, so the two --hidden are one run
        ([512, 256], 0), ([512, 256], 1), ([512, 256], 5), ([512, 256], 6),
        ([32, 16], 0), ([32, 16], 1), ([32, 16], 5), ([32, 16], 6)]
    assert mnist_sweep.parse_args(["--data-dir", str(tmp_path)]).epochs == [10]   # the lecture's defaults
    lecture = mnist_sweep.run_configs(mnist_sweep.parse_args(["--data-dir", str(tmp_path)]))
    assert [(c["layers"], c["hidden_units"], c["lr"], c["batch_size"], c["optimizer"], c["activation"], c["seed"])
            for c in lecture] == [(n, list(common.LECTURE_HIDDEN[:n - 1]), 0.01, 12, "sgd", "relu", 0)
                                  for n in (2, 3, 4, 5)]


GRID_TOML = """
layers = [2, 3]
hidden = [[256, 128], [64, 32]]
lr = [0.01, 0.1]
optimizer = "adam"
engine = ["tinygrad_edu", "torch"]
seeds = "3:5"
batch_size = 20
"""


def test_sweep_grid_file_is_the_same_as_its_flags_and_flags_override_it(tmp_path):
    (tmp_path / "grid.toml").write_text(GRID_TOML)
    from_file = quick_configs(tmp_path, "--grid", str(tmp_path / "grid.toml"))
    from_flags = quick_configs(tmp_path, "--layers", "2", "3", "--hidden", "256,128", "64,32", "--lr", "0.01", "0.1",
                               "--optimizer", "adam", "--engine", "tinygrad_edu", "torch", "--seeds", "3:5",
                               "--batch-size", "20")
    assert from_file == from_flags and len(from_file) == 32
    overridden = quick_configs(tmp_path, "--lr", "0.5", "--grid", str(tmp_path / "grid.toml"))
    assert {c["lr"] for c in overridden} == {0.5} and {c["batch_size"] for c in overridden} == {20}


@pytest.mark.parametrize("text, message", [
    ("lr = [0.1, -1]\n", "argument --lr: must be a positive number, got -1.0"),
    ("momentum = 0.9\n", "grid.toml sets 'momentum', which is not a setting of the grid"),
    ("lr = [0.1\n", "grid.toml is not valid TOML"),
    ("layers = []\n", "layers must be a value or a list of values, got []"),
    ("activation = ['relu', 'swish']\n", "argument --activation: invalid choice: 'swish'"),
    (None, "argument --grid: cannot read"),
])
def test_sweep_grid_file_errors_name_the_setting(tmp_path, capsys, text, message):
    if text is not None:
        (tmp_path / "grid.toml").write_text(text)
    with pytest.raises(SystemExit) as stop:
        mnist_sweep.parse_args(["--data-dir", str(tmp_path), "--grid", str(tmp_path / "grid.toml")])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_sweep_groups_its_table_and_figure_by_the_chosen_setting(tmp_path):
    configs = quick_configs(tmp_path, "--layers", "2", "--lr", "0.01", "0.1", "--optimizer", "sgd", "adam",
                            "--seeds", "2")
    results = [fake_result(c, accuracy=0.9 if c["optimizer"] == "adam" else 0.8 + c["lr"] + 0.01 * c["seed"])
               for c in configs]
    table = mnist_sweep.summary_table(results, "lr").splitlines()
    assert table[0].split() == ["learning", "rate", "optimizer", "seeds", "mean", "sd", "per", "seed"]
    assert [line.split() for line in table[2:]] == [   # the settings that vary: lr first, then optimizer
        ["0.01", "adam", "2", "0.9000", "0.0000", "0:", "0.9000", "1:", "0.9000"],
        ["0.01", "sgd", "2", "0.8150", "0.0071", "0:", "0.8100", "1:", "0.8200"],
        ["0.1", "adam", "2", "0.9000", "0.0000", "0:", "0.9000", "1:", "0.9000"],
        ["0.1", "sgd", "2", "0.9050", "0.0071", "0:", "0.9000", "1:", "0.9100"]]
    varying = sweep_report.check_runs(results, "lr")   # the report's table: the same lines
    report_table = sweep_report.configuration_table(sweep_report.configurations(results, varying), varying)
    assert table == sweep_report.table_lines(*report_table)
    fig = mnist_sweep.sweep_figure(results, "lr")
    accuracy, per_epoch = fig.axes[:2]
    assert accuracy.get_title() == "MNIST test accuracy vs learning rate"
    assert [t.get_text() for t in accuracy.get_xticklabels()] == ["0.01", "0.1"]
    lines = {bars.get_label(): list(bars.lines[0].get_ydata()) for bars in accuracy.containers}
    assert lines == {"optimizer adam (mean ± sd)": pytest.approx([0.9, 0.9]),   # one line per optimizer,
                     "optimizer sgd (mean ± sd)": pytest.approx([0.815, 0.905])}   # lr along x
    assert sorted(line.get_label() for line in per_epoch.get_lines()) == [
        "learning rate 0.01, optimizer adam", "learning rate 0.01, optimizer sgd",
        "learning rate 0.1, optimizer adam", "learning rate 0.1, optimizer sgd"]
    by_depth = mnist_sweep.summary_table(results).splitlines()[0].split()   # the default: layers first
    assert by_depth[:3] == ["#", "layers", "optimizer"]


def test_sweep_engine_is_a_setting_of_the_grid_and_tinygrad_edu_keys_are_unchanged(tmp_path, capsys):
    configs = quick_configs(tmp_path, "--layers", "2", "--engine", "torch", "tinygrad_edu", "--seeds", "2")
    assert [(c["engine"], c["seed"]) for c in configs] == [   # each seed's PyTorch run beside tinygrad_edu's
        ("torch", 0), ("torch", 1), ("tinygrad_edu", 0), ("tinygrad_edu", 1)]
    assert [c["key"] for c in configs[::2]] == ["layers2_hidden512_relu_sgd_lr0.01_batch12_epochs1_seed0_torch_quick",
                                                "layers2_hidden512_relu_sgd_lr0.01_batch12_epochs1_seed0_quick"]
    assert quick_configs(tmp_path, "--layers", "2", "--seeds", "2") == configs[2:]   # tinygrad_edu: the default
    # a tinygrad_edu run saved before --engine existed (no engine field) is still that run's result
    config = configs[2]
    old = {field: value for field, value in fake_result(config).items() if field != "engine"}
    (tmp_path / f"{config['key']}.json").write_text(json.dumps(old))
    loaded = mnist_sweep.load_finished(tmp_path, config)
    assert loaded == fake_result(config) and list(loaded) == list(fake_result(config))   # in a new file's order
    assert capsys.readouterr().err == ""


def test_sweep_groups_by_engine_and_puts_pytorch_beside(tmp_path):
    configs = quick_configs(tmp_path, "--layers", "2", "3", "--engine", "tinygrad_edu", "torch", "--seeds", "2")
    results = [fake_result(c, accuracy=0.9 + 0.01 * c["layers"] + 0.04 * (c["engine"] == "torch") + 0.001 * c["seed"])
               for c in configs]
    by_depth = [line.split() for line in mnist_sweep.summary_table(results).splitlines()]
    assert by_depth[0][:6] == ["#", "layers", "hidden", "units", "engine", "seeds"]
    assert [row[:5] for row in by_depth[2:]] == [
        ["2", "512", "tinygrad_edu", "2", "0.9205"], ["2", "512", "PyTorch", "2", "0.9605"],
        ["3", "512-256", "tinygrad_edu", "2", "0.9305"], ["3", "512-256", "PyTorch", "2", "0.9705"]]
    by_engine = [line.split() for line in mnist_sweep.summary_table(results, "engine").splitlines()]
    assert by_engine[0][:3] == ["engine", "#", "layers"]
    assert [row[:2] for row in by_engine[2:]] == [["tinygrad_edu", "2"], ["tinygrad_edu", "3"],
                                                  ["PyTorch", "2"], ["PyTorch", "3"]]
    accuracy = mnist_sweep.sweep_figure(results, "engine").axes[0]
    assert [t.get_text() for t in accuracy.get_xticklabels()] == ["tinygrad_edu", "PyTorch"]
    assert sorted(bars.get_label() for bars in accuracy.containers) == ["2 layers (mean ± sd)", "3 layers (mean ± sd)"]


@pytest.mark.slow
def test_sweep_trains_both_engines_alike_and_reports_pytorch_beside(tmp_path, mnist_root):
    pytest.importorskip("torch")
    flags = ["--layers", "2", "--engine", "tinygrad_edu", "torch"]
    out = run_example("mnist_sweep.py", *quick_sweep_args(tmp_path / "workers", mnist_root, *flags, "--jobs", "2",
                                                          "--report"), normal=30)
    assert "2 runs: 0 already finished" in out and "with 2 worker(s)" in out
    results = json.loads((tmp_path / "workers" / "results.json").read_text())
    assert [r["engine"] for r in results] == ["tinygrad_edu", "torch"]
    assert results[0]["backend"] in ("c", "numpy") and results[1]["backend"] == "torch"
    assert results[1]["key"] == results[0]["key"].replace("_quick", "_torch_quick")
    for r in results:   # both learn, and the probe measured both (PyTorch's hooks work alike)
        assert r["final_test_accuracy"] > 0.75
        (norms,), (dead,) = r["weight_grad_norm"], r["dead_relu_fraction"]
        assert len(norms) == 2 and all(n > 0 for n in norms) and len(dead) == 1 and 0 <= dead[0] < 1
    assert results[0]["test_accuracy"] != results[1]["test_accuracy"]   # really two engines, not one twice
    provenance = json.loads((tmp_path / "workers" / "provenance.json").read_text())
    torch_run = provenance[results[1]["key"]]
    assert torch_run["torch_threads"] == 1 and torch_run["torch_version"]   # what the run trained on
    assert "torch_version" not in provenance[results[0]["key"]]
    md = (tmp_path / "workers" / "report.md").read_text()
    assert [row[:4] for row in table_rows(md, "# layers")] == [
        ["2", "tinygrad_edu", "1", f"{results[0]['final_test_accuracy']:.4f}"],
        ["2", "PyTorch", "1", f"{results[1]['final_test_accuracy']:.4f}"]]
    # the same sweep in the driver's own process (--jobs 1): the same numbers, byte for byte. The
    # driver keeps the threads it was started with (OpenBLAS reads its count once, at import: on the
    # NumPy backend its sums depend on it), so it is started as the workers are, one thread each
    one_thread = dict(os.environ, **{var: "1" for var in mnist_sweep.THREAD_LIMITS})
    run_example("mnist_sweep.py", *quick_sweep_args(tmp_path / "driver", mnist_root, *flags, "--jobs", "1"), normal=30,
                env=one_thread)
    assert (tmp_path / "driver" / "results.json").read_bytes() == (tmp_path / "workers" / "results.json").read_bytes()


def test_sweep_without_torch_says_to_install_it_before_anything_runs(tmp_path):
    fake = tmp_path / "no-torch" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'torch'\")\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake.parent), str(REPO), os.environ.get("PYTHONPATH", "")]))
    result = run_script("mnist_sweep.py", "--quick", "--engine", "tinygrad_edu", "torch", "--data-dir", str(tmp_path),
                        "--out", str(tmp_path / "out"), normal=10, env=env)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == "error: --engine torch needs PyTorch: pip install torch"
    assert not (tmp_path / "out").exists()   # refused before the data, the lock, any run


@pytest.mark.slow
def test_sweep_trains_other_activations_and_adam(tmp_path, mnist_root):
    out = run_example("mnist_sweep.py", *quick_sweep_args(tmp_path, mnist_root, "--layers", "2", "--activation",
                      "tanh", "sigmoid", "--optimizer", "adam", "--lr", "0.001", "--jobs", "1",
                      "--group-by", "activation"), normal=30)
    assert out.splitlines()[-5].split()[:2] == ["activation", "seeds"]   # the table, by activation
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["activation"], r["optimizer"]) for r in results] == [("tanh", "adam"), ("sigmoid", "adam")]
    assert all(r["final_test_accuracy"] > 0.8 for r in results)   # adam learns fast with either
    assert results[0]["final_train_loss"] != results[1]["final_train_loss"]
    assert 0 < results[1]["hidden_mean_activation"][0][0] < 1   # sigmoid's outputs; tanh's may be negative
    assert all(r["dead_relu_fraction"] == [[0.0]] for r in results)   # tanh, sigmoid: never exactly 0


def test_sweep_without_dask_says_which_extra_to_install(tmp_path):
    fake = tmp_path / "no-dask"
    for package in ("dask", "distributed"):
        (fake / package).mkdir(parents=True)
        (fake / package / "__init__.py").write_text(f"raise ImportError(\"No module named '{package}'\")\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake), str(REPO), os.environ.get("PYTHONPATH", "")]))
    result = run_script("mnist_sweep.py", "--quick", "--executor", "dask", "--data-dir", str(tmp_path),
                        "--out", str(tmp_path / "out"), normal=10, env=env)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == 'error: --executor dask needs Dask: pip install -e ".[distributed]"'


def test_sweep_retrains_runs_whose_files_are_wrong(tmp_path, mnist_root):
    """The reported symptoms: a depth silently missing from the table, a KeyError on every restart;
    and a run saved before provenance was recorded (which the report needs)."""
    layers2, layers3, layers4 = quick_configs(tmp_path, "--layers", "2", "3", "4")
    run_dir = tmp_path / "runs"
    run_dir.mkdir()
    (run_dir / f"{layers2['key']}.json").write_text("{}")
    (run_dir / f"{layers3['key']}.json").write_text(json.dumps(fake_result(dict(layers3, layers=4))))
    older = {field: value for field, value in fake_result(layers4).items() if field != "provenance"}
    (run_dir / f"{layers4['key']}.json").write_text(json.dumps(older))
    result = run_script("mnist_sweep.py", "--quick", "--data-dir", str(mnist_root), "--out", str(tmp_path),
                        "--jobs", "2", "--layers", "2", "3", "4", normal=30)
    assert result.returncode == 0, result.stderr
    assert "3 runs: 0 already finished" in result.stdout and result.stderr.count("moved to") == 3
    assert "lacks the field(s) provenance" in result.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["layers"] for r in results] == [2, 3, 4] and all(r["final_test_accuracy"] > 0.7 for r in results[:2])
    assert results[2]["final_test_accuracy"] > 0.2   # 4 layers learn slowly in one quick epoch, but learn
    assert (run_dir / f"{layers2['key']}.json.rejected-1").read_text() == "{}"
    assert json.loads((run_dir / f"{layers4['key']}.json").read_text())["provenance"]["data_md5"]
    assert not list(tmp_path.glob("report*")), "--quick writes no report unless asked"


# --- the sweep stopped: Ctrl-C, SIGTERM, kill -9, a killed worker, a second sweep ---------------------
needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                reason="finds the sweep's worker processes through Linux's /proc")


def process_state(pid):
    """(state letter, parent pid) from /proc, or None once the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def running(pid):
    state = process_state(pid)
    return state is not None and state[0] != "Z"   # a zombie has exited, its parent just has not reaped it


def children_of(pid):
    """{pid: command line} of the running children of ``pid``: the sweep's workers and
    multiprocessing's resource tracker."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (process_state(entry.name) or ("Z", 0))[1] == pid and running(entry.name):
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                pass
    return found


def workers_of(pid):
    return {child: cmd for child, cmd in children_of(pid).items() if "spawn_main" in cmd}


def still_running_soon_after(processes):
    """Those of ``processes`` ({pid: command line}) still running after a grace time (a process
    told to exit takes milliseconds; 60 s allows for a crawling machine). They are then killed,
    by pid, so that a failing test leaves nothing running."""
    deadline = time.monotonic() + 60
    while any(running(pid) for pid in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = {pid: command for pid, command in processes.items() if running(pid)}
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    return survivors


class Sweep:
    """mnist_sweep.py running in the background, its output going to files: not pipes, whose end
    of file would wait for every worker (and a test of orphaned workers would hang on them)."""

    def __init__(self, tmp_path, *args):
        self.out, self.err = tmp_path / "sweep.stdout", tmp_path / "sweep.stderr"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, str(REPO / "examples" / "mnist_sweep.py"), *args],
                                         stdout=out, stderr=err, text=True, cwd=REPO,
                                         preexec_fn=_ctrl_c_stops_it)

    def wait_for_output(self, text, normal):
        wait_until(lambda: text in self.out.read_text(), f"the sweep's line {text!r}", normal)

    def finish(self, normal):
        """(exit code, stdout, stderr) once the sweep has ended."""
        try:
            code = self.proc.wait(timeout=HANG_GUARD * normal)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            hang_guard_failure("the sweep", normal)
        return code, self.out.read_text(), self.err.read_text()


def quick_sweep_args(tmp_path, mnist_root, *flags):
    return ["--quick", "--data-dir", str(mnist_root), "--out", str(tmp_path), *flags]


def kill_after_the_first_run_then_resume(tmp_path, args, normal, killed=lambda children: None):
    """Start a sweep of three runs, SIGKILL it once its first run is saved (``killed`` gets its
    children as they were just before), then run it again: the finished runs are reused as they
    were, not retrained, and the rest completed."""
    sweep = Sweep(tmp_path, *args)
    run_dir = tmp_path / "runs"
    wait_until(lambda: any(run_dir.glob("*.json")), "the sweep's first run", normal)
    children = children_of(sweep.proc.pid) if os.path.isdir("/proc") else {}
    sweep.proc.send_signal(signal.SIGKILL)
    sweep.finish(normal=5)
    killed(children)
    finished = {p.name: p.read_text() for p in run_dir.glob("*.json")}
    assert 1 <= len(finished) < 3, "the sweep should have been killed part-way"
    out = run_example("mnist_sweep.py", *args, normal=normal)
    assert f"3 runs: {len(finished)} already finished" in out
    for name, text in finished.items():
        assert (run_dir / name).read_text() == text
    assert len(json.loads((tmp_path / "results.json").read_text())) == 3


@pytest.mark.slow
def test_sweep_resumes_after_kill_without_recomputing(tmp_path, mnist_root):
    args = quick_sweep_args(tmp_path, mnist_root, "--jobs", "1", "--layers", "2", "3", "4")
    kill_after_the_first_run_then_resume(tmp_path, args, normal=30)


@needs_proc
def test_sweep_killed_with_sigkill_leaves_no_worker_running(tmp_path, mnist_root):
    """Before, the workers trained on and then blocked for ever, and a restart trained the same runs."""
    sweep = Sweep(tmp_path, *quick_sweep_args(tmp_path, mnist_root, "--epochs", "20", "--jobs", "2", "--layers", "2", "3"))
    sweep.wait_for_output("epoch 1 test accuracy", normal=30)   # the workers are training
    children = children_of(sweep.proc.pid)
    assert len(workers_of(sweep.proc.pid)) == 2
    sweep.proc.send_signal(signal.SIGKILL)
    sweep.finish(normal=5)
    assert not still_running_soon_after(children), "these outlived the killed sweep"


@needs_proc
@pytest.mark.slow
@pytest.mark.parametrize("stop, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_sweep_stops_on_ctrl_c_or_sigterm_and_keeps_finished_runs(tmp_path, mnist_root, stop, code):
    args = quick_sweep_args(tmp_path, mnist_root, "--epochs", "3", "--jobs", "2", "--layers", "2", "3", "4")
    sweep = Sweep(tmp_path, *args)
    run_dir = tmp_path / "runs"
    wait_until(lambda: any(run_dir.glob("*.json")), "the sweep's first run", 30)
    children = children_of(sweep.proc.pid)
    sweep.proc.send_signal(stop)
    returncode, _, err = sweep.finish(normal=5)
    assert not still_running_soon_after(children)   # workers stopped, multiprocessing's resource tracker gone
    saved = len(list(run_dir.glob("*.json")))
    assert returncode == code and err.strip().splitlines() == [
        f"interrupted: {saved} finished run(s) are saved in {run_dir}; run the same command again to continue"]
    assert 1 <= saved < 3
    out = run_example("mnist_sweep.py", *args, normal=30)
    assert f"3 runs: {saved} already finished" in out and (tmp_path / "results.json").exists()


@pytest.mark.parametrize("stop, raised", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, mnist_sweep.Terminated)],
                         ids=["ctrl-c", "sigterm"])
def test_a_stop_while_a_worker_starts_waits_until_the_worker_is_registered(stop, raised):
    """CI once sent SIGTERM while a worker was being spawned: the stop was raised halfway through
    writing the worker's start-up data, and the unregistered worker died with a traceback."""
    # Ctrl-C as in a terminal: a process started in the background of a script inherits SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        steps = []
        with pytest.raises(raised), mnist_sweep.sigterm_stops_like_ctrl_c():
            with mnist_sweep.stops_held_back():
                signal.raise_signal(stop)   # to this thread: Python's handler runs at the next bytecode
                steps.append("worker registered")
        assert steps == ["worker registered"]
        assert {s: signal.getsignal(s) for s in handlers} == handlers
    finally:
        signal.signal(signal.SIGINT, ignored)


@pytest.mark.slow
@needs_proc
def test_sweep_with_a_worker_killed_by_the_os_ends_in_one_line_and_resumes(tmp_path, mnist_root):
    args = quick_sweep_args(tmp_path, mnist_root, "--epochs", "3", "--jobs", "2", "--layers", "2", "3")
    sweep = Sweep(tmp_path, *args)
    sweep.wait_for_output("epoch 1 test accuracy", normal=30)
    children = children_of(sweep.proc.pid)
    os.kill(max(workers_of(sweep.proc.pid)), signal.SIGKILL)   # as the OS's out-of-memory killer does
    returncode, _, err = sweep.finish(normal=5)
    assert not still_running_soon_after(children)
    assert returncode == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: the worker training layers") and "was killed by SIGKILL" in err
    assert "run the same command again to continue" in err
    saved = len(list((tmp_path / "runs").glob("*.json")))
    out = run_example("mnist_sweep.py", *args, normal=30)
    assert f"2 runs: {saved} already finished" in out and len(json.loads((tmp_path / "results.json").read_text())) == 2


def test_two_sweeps_on_one_folder_do_not_both_train(tmp_path):
    args = ["--quick", "--layers", "2", "--data-dir", str(tmp_path), "--out", str(tmp_path), "--jobs", "1"]
    config, = quick_configs(tmp_path, "--layers", "2")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / f"{config['key']}.json").write_text(json.dumps(fake_result(config)))
    with mnist_sweep.one_sweep_at_a_time(tmp_path):   # this process, as a sweep running on the folder
        second = run_script("mnist_sweep.py", *args, normal=10)
    assert second.returncode == 1 and "runs:" not in second.stdout
    assert second.stderr.strip() == (f"error: another sweep (pid {os.getpid()}) is running on {tmp_path}; "
                                     f"wait for it to end, or give this one another --out")
    after = run_script("mnist_sweep.py", *args, normal=10)   # the lock went with its holder
    assert after.returncode == 0 and "1 runs: 1 already finished" in after.stdout, after.stderr


# --- figures and reports ------------------------------------------------------------------------
NOTEBOOK_SESSION = """
import json, sys
import matplotlib.pyplot as plt
import numpy as np
sys.path.insert(0, "examples")
import benchmark_report, mnist_sweep, shallow_gradients
from tinygrad_edu.vision.utils import save_prediction_figure

out, runs = sys.argv[1], json.loads(sys.argv[2])
mine = plt.figure()                    # the user's own figure, to show later
before = dict(backend=plt.get_backend(), figures=plt.get_fignums())
save_prediction_figure(np.zeros((3, 1, 28, 28), np.float32), [1, 2, 3], [1, 2, 4], out + "/pred.png")
mnist_sweep.plot(runs, out + "/plot.png")
mnist_sweep.main(["--quick", "--report", "--layers", "2", "3", "--data-dir", out, "--out", out, "--jobs", "1"])
shallow_gradients.save_figure(out + "/shallow.png", "t", np.ones(3), np.ones(3), None, np.ones((4, 3)), np.ones(4))
benchmark_report.bar_chart([dict(group="g", case="c", impl="i", vs_torch=0.5, vs_numpy=None)], out + "/bench.png")
after = dict(backend=plt.get_backend(), figures=plt.get_fignums())
print(json.dumps(dict(before=before, after=after, current_is_mine=plt.gcf() is mine)))
"""


def test_figures_leave_the_users_matplotlib_backend_and_figures_alone(tmp_path):
    """As in a notebook: the session's backend (svg here, inline in Jupyter) and pyplot's figures
    are the same after drawing the examples' figures, so the user's next plt.show() still shows."""
    runs = [fake_result(config, accuracy) for config, accuracy in
            zip(quick_configs(tmp_path, "--layers", "2", "3"), (0.9, 0.8))]
    for run in runs:
        (tmp_path / "runs").mkdir(exist_ok=True)
        (tmp_path / "runs" / f"{run['key']}.json").write_text(json.dumps(run))
    try:
        result = subprocess.run([sys.executable, "-c", NOTEBOOK_SESSION, str(tmp_path), json.dumps(runs)],
                                capture_output=True, text=True, cwd=REPO, timeout=HANG_GUARD * 15,
                                env=dict(os.environ, MPLBACKEND="svg"))
    except subprocess.TimeoutExpired:
        hang_guard_failure("the notebook session", 15)
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout.splitlines()[-1])
    assert state["before"]["backend"] == "svg" and state["after"] == state["before"] and state["current_is_mine"]
    for name in ("pred", "plot", "sweep", "shallow", "bench", "report_accuracy"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_benchmark_report_renders_ratios_and_a_chart(tmp_path):
    def bench(group, impl, seconds, **params):
        return dict(group=group, params=dict(impl=impl, **params),
                    stats=dict(min=seconds, median=seconds * 1.1), extra_info=dict(flops=2e6, threads=1))
    data = dict(machine_info=dict(cpu=dict(brand_raw="test CPU", count=2), python_version="3.11"),
                benchmarks=[bench("gemm", "c", 1e-5, case="fwd"), bench("gemm", "numpy", 2e-5, case="fwd"),
                            bench("gemm", "c-avx2", 4e-5, case="fwd"),
                            bench("train-step", "tinygrad_edu-c", 3e-4, batch=12),
                            bench("train-step", "torch", 6e-4, batch=12)])
    path, torch_path = tmp_path / "bench.json", tmp_path / "bench-torch.json"
    slower_rerun = bench("train-step", "tinygrad_edu-c", 9e-4, batch=12)   # the fastest run counts
    torch_path.write_text(json.dumps(dict(data, benchmarks=data["benchmarks"][-1:] + [slower_rerun])))
    path.write_text(json.dumps(dict(data, benchmarks=data["benchmarks"][:-1])))
    out = run_example("benchmark_report.py", str(path), str(torch_path), "--png", str(tmp_path / "chart.png"),
                      normal=10)
    lines = {line.split("|")[3].strip(): line for line in out.splitlines() if line.startswith("| gemm") or line.startswith("| train")}
    assert "| 0.50 |" in lines["c"] and "| 2.00 |" in lines["c-avx2"]        # vs NumPy
    assert "| 0.50 |" in lines["tinygrad_edu-c"]                             # vs PyTorch
    assert "200.0" in lines["c"]                                             # GFLOP/s
    assert (tmp_path / "chart.png").stat().st_size > 1000
