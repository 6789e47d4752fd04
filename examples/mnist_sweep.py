"""Programming Assignment 3: MNIST test accuracy against the number of layers (2, 3, 4, 5), and
any other grid of settings.

    python examples/mnist_sweep.py                    # the lecture's settings, one seed
    python examples/mnist_sweep.py --seeds 3          # mean +- std over seeds 0, 1, 2
    python examples/mnist_sweep.py --quick            # a smoke run in well under a minute
    python examples/mnist_sweep.py --layers 3 --lr 0.01 0.1 --optimizer sgd adam --group-by lr
    python examples/mnist_sweep.py --grid grid.toml   # the same settings from a file
    python examples/mnist_sweep.py --engine tinygrad_edu torch   # PyTorch's numbers beside
    python examples/mnist_sweep.py --executor dask    # on a Dask LocalCluster (or --scheduler ADDRESS)

Each run trains the lecture's MLP, hidden sizes a prefix of 512, 256, 128, 64 (batch 12, SGD lr
0.01, ReLU, 10 epochs by default), in a worker process of its own. --layers, --hidden, --activation,
--optimizer, --lr, --batch-size, --epochs, --engine and --seeds each take several values, and the
sweep runs every combination; a run's file name and its stored settings carry all of them, so a
changed setting never reuses another run's result. --engine torch trains the same MLP on PyTorch
(installed separately: pip install torch) with the same data order, one thread per worker, so the
report shows PyTorch's numbers beside tinygrad_edu's; its runs' names end in _torch. Every finished
run is saved at once (out/runs/*.json, written atomically), so an interrupted sweep picks up where
it stopped when started again with the same flags. At the end it writes sweep.png, results.csv
and results.json to --out, the times, hosts and process ids of the runs to timings.json, and their
provenance (versions, commit, machine, MNIST MD5s: sweep_report.provenance, taken by each run where
it ran) to provenance.json: results.json holds only what the settings determine, so two sweeps with
the same flags on the same backend and machine write it byte for byte alike, on either executor.
Unless --quick (or --no-report), it also writes the assignment's report, report.pdf and report.md
(sweep_report.py), whose figures and table are sweep.png's and the printed table's: one grouping
of the runs.

Why does accuracy change with depth? After every epoch each run also measures, on a fixed probe
batch (the first 1,000 training images), how the gradient flows through the layers: the norm of
each Linear layer's weight gradient, and the mean output and the fraction of dead units (0 on
every probe image) of each hidden layer's activation. They are in every run's JSON and in
results.json, and sweep.png draws them below the accuracy.

Ctrl-C and SIGTERM stop the sweep at once, keeping the finished runs; the workers end with the
sweep however it ends (kill -9 included), and a worker killed on its own (out of memory) ends the
sweep with one line (Dask instead retries a run whose worker was lost, and says so). A second sweep
on the same --out refuses to start (on Linux and macOS).
"""

import argparse
import contextlib
import csv
import io
import itertools
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np

import mnist_common as common
import sweep_report
from tinygrad_edu.utils import progress_bars_wanted
from tinygrad_edu.utils.files import atomic_write_text

try:
    import fcntl   # Linux, macOS: the lock that keeps two sweeps off one folder
except ImportError:   # Windows
    fcntl = None

QUICK_TRAIN, QUICK_TEST = 12000, 2000   # --quick: a fifth of the training set, one epoch
PROBE_IMAGES = 1000   # the first training images: the fixed batch gradient flow is measured on
OPTIMIZERS = ("sgd", "adam")
ENGINES = ("tinygrad_edu", "torch")   # common.load_engine's names
# --group-by's choices, each the flag's name and the run's field it groups by
GROUP_BY = {"layers": "layers", "hidden": "hidden_units", "activation": "activation", "optimizer": "optimizer",
            "lr": "lr", "batch-size": "batch_size", "epochs": "epochs", "engine": "engine"}
GRID_FILE_SETTINGS = ("layers", "hidden", "activation", "optimizer", "lr", "batch_size", "epochs", "engine",
                      "seeds")
DASK_MISSING = 'error: --executor dask needs Dask: pip install -e ".[distributed]"'
TORCH_MISSING = "error: --engine torch needs PyTorch: pip install torch"


def widths(text):
    """``--hidden 512,256,128``: hidden widths, of which a run with n layers takes the first n - 1."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"widths are positive integers separated by commas, got {text!r}") from None
    if not all(value >= 1 for value in values):
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return values


def seed_range(text):
    """``--seeds N`` is seeds 0 .. N-1 (as before); ``A:B`` is seeds A .. B-1, Python's range."""
    first, colon, stop = text.partition(":")
    try:
        start, stop = (int(first), int(stop)) if colon else (0, int(first))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds are N (seeds 0 .. N-1) or A:B (seeds A .. B-1), got {text!r}") from None
    if not 0 <= start < stop:
        raise argparse.ArgumentTypeError(f"{text!r} holds no seed: N must be positive, A:B needs 0 <= A < B")
    return range(start, stop)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    grid = parser.add_argument_group("the grid: each setting takes one or more values, and the sweep runs "
                                     "every combination")
    grid.add_argument("--layers", type=int, nargs="+", default=[2, 3, 4, 5],
                      help="numbers of Linear layers (1 to one more than the --hidden widths)")
    grid.add_argument("--hidden", type=widths, nargs="+", default=[common.LECTURE_HIDDEN], metavar="W1,W2,...",
                      help="hidden widths; a run with n layers takes the first n - 1 (default: 512,256,128,64)")
    grid.add_argument("--activation", choices=common.ACTIVATIONS, nargs="+", default=["relu"])
    grid.add_argument("--optimizer", choices=OPTIMIZERS, nargs="+", default=["sgd"])
    grid.add_argument("--lr", type=common.positive_float, nargs="+", default=[0.01])
    grid.add_argument("--batch-size", type=common.positive_int, nargs="+", default=[12])
    grid.add_argument("--epochs", type=common.positive_int, nargs="+", default=None,
                      help="default: 10, or 1 with --quick")
    grid.add_argument("--engine", choices=ENGINES, nargs="+", default=["tinygrad_edu"],
                      help="the engine that trains the MLP: tinygrad_edu (default), and torch for PyTorch's "
                           "numbers beside (pip install torch)")
    grid.add_argument("--seeds", type=seed_range, nargs="+", default=[range(1)], metavar="N|A:B",
                      help="N: seeds 0 .. N-1 (default: 1, seed 0); A:B: seeds A .. B-1")
    grid.add_argument("--grid", type=Path, metavar="FILE.toml",
                      help="the settings above from a TOML file (layers = [2, 3], hidden = [[256, 128]], "
                           "lr = [0.01, 0.1], seeds = 3, ...); flags given as well take precedence")
    parser.add_argument("--group-by", choices=list(GROUP_BY), default="layers",
                        help="the setting along the x axis of sweep.png and first in the table (default: layers)")
    common.add_jit_arg(parser)
    common.add_data_args(parser)
    parser.add_argument("--out", type=Path, default=None,
                        help="where figures and results go (default: runs/sweep, and runs/sweep-quick "
                             "with --quick, so a smoke run never overwrites a real sweep's results)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_TRAIN} training and {QUICK_TEST} test images, one epoch "
                             f"unless --epochs says otherwise")
    parser.add_argument("--report", action=argparse.BooleanOptionalAction, default=None,
                        help="write report.pdf and report.md (the assignment's report: figures, table, the "
                             "model's code, the runs' provenance) to --out at the end (default: on, off "
                             "with --quick)")
    parser.add_argument("--jobs", type=common.positive_int, default=os.cpu_count() or 1,
                        help="worker processes (default: one per core); with --executor dask, the "
                             "LocalCluster's workers")
    parser.add_argument("--executor", choices=("local", "dask"), default="local",
                        help="local: worker processes on this machine (default); dask: a Dask cluster "
                             "(pip install -e \".[distributed]\")")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="with --executor dask: a running Dask scheduler (tcp://host:8786), whose "
                             "workers each read MNIST from the same --data-dir path (start them with "
                             "--nthreads 1 and TINYGRAD_EDU_NUM_THREADS=1, as the local workers run); "
                             "default: a LocalCluster of --jobs single-threaded worker processes, for "
                             "this sweep only")
    return parser


def parse_args(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.grid is not None:   # the file's settings first, so that the flags given override them
        args = parser.parse_args([*grid_file_flags(parser, args.grid), *(argv if argv is not None else sys.argv[1:])])
    # the report's: the command as typed, or (main called with argv, e.g. in a notebook) the script's name and argv
    args.command_line = sys.argv if argv is None else [parser.prog, *argv]
    if args.epochs is None:
        args.epochs = [1 if args.quick else 10]
    if args.report is None:
        args.report = not args.quick   # a smoke run makes no report unless asked
    args.seeds = sorted(set().union(*args.seeds))
    shortest = min(args.hidden, key=len)
    bad = [layers for layers in args.layers if not 1 <= layers <= len(shortest) + 1]
    if bad:
        parser.error(f"argument --layers: layers must be between 1 and {len(shortest) + 1} (one more than the "
                     f"{len(shortest)} widths of --hidden {','.join(map(str, shortest))}), got {bad[0]}")
    if args.scheduler is not None and args.executor != "dask":
        parser.error("argument --scheduler: needs --executor dask")
    if args.out is None:
        args.out = Path("runs/sweep-quick" if args.quick else "runs/sweep")
    common.check_data_args(parser, args)
    return args


def grid_file_flags(parser, path):
    """The settings of a TOML grid file as the flags that say the same, e.g. ``lr = [0.01, 0.1]``
    -> ``--lr 0.01 0.1``, so that they are checked exactly as the flags are."""
    try:
        import tomllib   # Python 3.11+
    except ImportError:
        try:
            import tomli as tomllib   # the same parser, for Python 3.10
        except ImportError:
            parser.error(f"argument --grid: reading {path} needs Python 3.11 or later, or tomli: pip install tomli")
    try:
        table = tomllib.loads(path.read_text())
    except OSError as e:
        parser.error(f"argument --grid: cannot read {path}: {e.strerror}")
    except tomllib.TOMLDecodeError as e:
        parser.error(f"argument --grid: {path} is not valid TOML: {e}")
    flags = []
    for name, values in table.items():
        if name.replace("-", "_") not in GRID_FILE_SETTINGS:
            parser.error(f"argument --grid: {path} sets {name!r}, which is not a setting of the grid "
                         f"({', '.join(GRID_FILE_SETTINGS)})")
        values = values if isinstance(values, list) else [values]
        if name == "hidden" and values and not isinstance(values[0], list):
            values = [values]   # hidden = [256, 128]: one list of widths
        if not values or any(isinstance(v, (dict, bool)) for v in values):
            parser.error(f"argument --grid: {path}: {name} must be a value or a list of values, got {values!r}")
        flags += [f"--{name.replace('_', '-')}",
                  *(",".join(map(str, v)) if isinstance(v, list) else str(v) for v in values)]
    return flags


def ordered(values):
    """``values`` without repeats: numbers sorted, names in the order given."""
    unique = list(dict.fromkeys(values))
    return unique if any(isinstance(v, str) for v in unique) else sorted(unique)


def run_configs(args):
    """One dict per run, for every combination of the grid's settings; ``key`` names its result
    file and holds every setting, so a sweep with other settings never reuses a result."""
    runs = {}
    for layers, hidden, activation, optimizer, lr, batch_size, epochs, engine, seed in itertools.product(
            ordered(args.layers), args.hidden, ordered(args.activation), ordered(args.optimizer),
            ordered(args.lr), ordered(args.batch_size), ordered(args.epochs), ordered(args.engine), args.seeds):
        hidden_units = list(common.hidden_units_for(layers, hidden))
        # tinygrad_edu's runs keep the names they had before --engine, so their files are still found
        key = (f"layers{layers}_hidden{'-'.join(map(str, hidden_units)) or 'none'}_{activation}_{optimizer}"
               f"_lr{lr!r}_batch{batch_size}_epochs{epochs}_seed{seed}" + ("_torch" if engine == "torch" else "")
               + ("_quick" if args.quick else ""))
        runs.setdefault(key, dict(key=key, layers=layers, hidden_units=hidden_units, activation=activation,
                                  optimizer=optimizer, lr=lr, batch_size=batch_size, epochs=epochs, engine=engine,
                                  seed=seed, quick=args.quick))   # fewer layers than widths: the same run again
    return list(runs.values())


# per epoch, one number per Linear layer (the first) or per hidden layer (the others); see gradient_flow
FLOW_FIELDS = ("weight_grad_norm", "hidden_mean_activation", "dead_relu_fraction")
RESULT_FIELDS = ("final_train_loss", "test_accuracy", "final_test_accuracy", "seconds", "backend", *FLOW_FIELDS,
                 "provenance")
# in a run's own file, never in results.json (they differ from one sweep to the next): the times,
# hosts and pids go to timings.json, the provenance (sweep_report.provenance) to provenance.json
TIMING_FIELDS = ("seconds", "host", "pid")


def read_run_file(path, config):
    """``(result, None)`` if ``path`` holds the finished run of ``config``, ``(None, None)`` if
    there is no such file, ``(None, why)`` if the file is something else."""
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        return None, None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, f"is not valid JSON ({e})"
    if not isinstance(result, dict):
        return None, f"holds a JSON {type(result).__name__}, not a run's result"
    result.setdefault("engine", "tinygrad_edu")   # a run saved before --engine was tinygrad_edu's
    missing = [field for field in (*config, *RESULT_FIELDS) if field not in result]
    if missing:
        return None, f"lacks the field(s) {', '.join(missing)}"
    if not isinstance(result["provenance"], dict):
        return None, f"has provenance {result['provenance']!r:.40}, not the dict sweep_report.provenance() makes"
    for field in sorted(config, key=lambda field: field == "key"):   # the settings first, then the name
        if result[field] != config[field]:
            return None, f"is another configuration's run ({field} {result[field]!r}, this run's is {config[field]!r})"
    accuracies = result["test_accuracy"]
    if not (isinstance(accuracies, list) and len(accuracies) == config["epochs"]
            and all(isinstance(a, (int, float)) for a in accuracies)
            and result["final_test_accuracy"] == accuracies[-1]):
        return None, f"has {config['epochs']} epoch(s) but test accuracies {accuracies!r}"
    for field in FLOW_FIELDS:
        per_layer = config["layers"] - (field != "weight_grad_norm")   # Linear layers, or hidden ones
        values = result[field]
        if not (isinstance(values, list) and len(values) == config["epochs"]
                and all(isinstance(epoch, list) and len(epoch) == per_layer
                        and all(isinstance(v, (int, float)) for v in epoch) for epoch in values)):
            return None, (f"has {config['epochs']} epoch(s) of {per_layer} layer(s) but {field} "
                          f"{values!r}")
    return {**config, **result}, None   # the settings in the order a new run's file has them


def load_finished(run_dir, config):
    """The saved result of ``config``, or None if the run is still to train. A file under the
    run's name that is not its finished result is moved aside (kept for a look, never deleted),
    reported in one line, and the run is trained again."""
    path = run_dir / f"{config['key']}.json"
    result, problem = read_run_file(path, config)
    if problem:
        n = 1
        while (aside := path.with_name(f"{path.name}.rejected-{n}")).exists():
            n += 1
        os.replace(path, aside)
        print(f"{path} {problem}: moved to {aside.name}; the run is trained again", file=sys.stderr)
    return result


# --- one training run ----------------------------------------------------------------------------
def gradient_flow(model, criterion, images, labels):
    """How the gradient and the activations flow through ``model`` (``common.make_mlp``'s MLP) on
    one batch, computed eagerly: per Linear layer, the norm of dL/dweight; per hidden layer, the
    mean of its activation's output and the fraction of its units that are 0 on every image (dead
    ReLUs: they pass no gradient back, whatever the image; tanh and sigmoid units are never exactly
    0). The activations come from a forward hook on the MLP's activation, one module that forward
    calls once per hidden layer, in order. No optimizer step,
    and the parameters' ``.grad`` are put back as they were: training goes on exactly as without
    the probe. The same lines probe a PyTorch model: its hooks and ``.grad`` work alike."""
    activations = []
    kept_grads = [p.grad for p in model.parameters()]
    model.zero_grad()
    with model.activation.register_forward_hook(lambda module, args, out: activations.append(out.detach().numpy())):
        criterion(model(images), labels).backward()
    norms = [float(np.linalg.norm(layer.weight.grad.numpy())) for layer in model.l_layers]
    for p, grad in zip(model.parameters(), kept_grads):
        p.grad = grad
    return dict(weight_grad_norm=norms,
                hidden_mean_activation=[float(a.mean()) for a in activations],
                dead_relu_fraction=[float((a == 0).all(axis=0).mean()) for a in activations])


def train_run(config, data_dir, report, jit=True):
    """Train one MLP on the run's engine, test after every epoch (``report(key, epoch, accuracy)``)
    and return the result (``save_run`` writes it). tinygrad_edu's DataLoader feeds either engine
    (``common.to_engine`` converts its batches), so both see the images in the same order. ``jit``:
    tinygrad_edu's training step through tinygrad_edu.jit (the same numbers, so it is not part of
    the run's configuration; PyTorch's runs always run the lecture's loop)."""
    torch, nn, optim = common.load_engine(config["engine"])
    from tinygrad_edu.utils.data import DataLoader

    subset = (QUICK_TRAIN, QUICK_TEST) if config["quick"] else (None, None)
    train_data, test_data = common.load_mnist(data_dir, *subset)
    torch.manual_seed(config["seed"])
    train_loader = DataLoader(train_data, batch_size=config["batch_size"], shuffle=True, seed=config["seed"])
    test_loader = DataLoader(test_data, batch_size=1000)
    # the same images every epoch, as the engine's tensors
    probe = [common.to_engine(torch, t) for t in next(iter(DataLoader(train_data, batch_size=PROBE_IMAGES)))]
    model = common.make_mlp(nn, config["hidden_units"], activation=config["activation"])
    criterion = nn.CrossEntropyLoss()
    optimizer = {"sgd": optim.SGD, "adam": optim.Adam}[config["optimizer"]](model.parameters(), lr=config["lr"])

    tinygrad = config["engine"] == "tinygrad_edu"
    step = common.compiled_step(torch, model, criterion, optimizer) if jit and tinygrad else None
    start, accuracies, train_loss = time.perf_counter(), [], float("nan")
    flow = {field: [] for field in FLOW_FIELDS}
    with contextlib.nullcontext() if tinygrad else one_torch_thread(torch):
        for epoch in range(config["epochs"]):
            train_loss = common.train_epoch(torch, model, train_loader, criterion, optimizer, epoch, log_every=0,
                                            step=step)
            correct, total = common.evaluate(torch, model, test_loader)
            accuracies.append(correct / total)
            for field, values in gradient_flow(model, criterion, *probe).items():
                flow[field].append(values)
            report(config["key"], epoch + 1, accuracies[-1])
            _test_only_kill_worker(config["key"])
        provenance = sweep_report.provenance(data_dir)   # where the run ran: this worker's
        if not tinygrad:   # PyTorch's numbers depend on its version and threads too
            provenance.update(torch_version=torch.__version__, torch_threads=torch.get_num_threads())
    return dict(config, final_train_loss=train_loss, test_accuracy=accuracies,
                final_test_accuracy=accuracies[-1],
                backend=torch.backend.name() if tinygrad else "torch", **flow,
                seconds=common.seconds_since(start), host=socket.gethostname(), pid=os.getpid(),
                provenance=provenance)


@contextlib.contextmanager
def one_torch_thread(torch):
    """PyTorch on one thread inside the block, as many as before after it. A worker's environment
    already holds it to one (see THREAD_LIMITS); this holds a run trained in the sweep's own
    process (--jobs 1, a single run) to one as well, since PyTorch's sums round differently on
    more threads, and a run's numbers must not depend on where it ran."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def save_run(run_dir, result):
    atomic_write_text(run_dir / f"{result['key']}.json", json.dumps(result, indent=2))


KILL_WORKER_ONCE = "TINYGRAD_EDU_SWEEP_TEST_KILL_WORKER"


def _test_only_kill_worker(key):
    """For the tests only: with $TINYGRAD_EDU_SWEEP_TEST_KILL_WORKER set to ``KEY:MARKER``, the
    first attempt of run KEY kills its own process (as the OS does when memory runs out) after
    its first epoch, and creates the file MARKER so that the next attempt trains on."""
    run_key, _, marker = os.environ.get(KILL_WORKER_ONCE, "").partition(":")
    if run_key == key:
        try:
            open(marker, "x").close()
        except FileExistsError:
            return
        os.kill(os.getpid(), signal.SIGKILL)


# --- reporting ------------------------------------------------------------------------------------
class Progress:
    """A tqdm bar over all epochs on a terminal or in a notebook (tqdm.auto draws it as a widget
    there); plain lines (one per epoch) otherwise, such as in a log file."""

    def __init__(self, total_epochs):
        self.bar = None
        if progress_bars_wanted():
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total_epochs, unit="epoch", desc="sweep")

    def epoch_done(self, key, epoch, accuracy):
        if self.bar is not None:
            self.bar.set_postfix_str(f"{key} epoch {epoch}: {accuracy:.4f}")
            self.bar.update(1)
        else:
            print(f"{key}: epoch {epoch} test accuracy {accuracy:.4f}", flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


CSV_FIELDS = ["layers", "hidden_units", "activation", "optimizer", "lr", "batch_size", "epochs", "engine", "seed",
              "quick", "final_train_loss", "final_test_accuracy", "test_accuracy", "backend"]


def write_results(results, out, group_by="layers"):
    """results.json, results.csv, timings.json, provenance.json and sweep.png, each written
    atomically. results.json and results.csv hold what the settings determine; timings.json
    (seconds, host, pid) and provenance.json (versions, machine, data MD5s) what differs from one
    sweep to the next, keyed by run."""
    atomic_write_text(out / "results.json", json.dumps(
        [{field: value for field, value in r.items() if field not in (*TIMING_FIELDS, "provenance")}
         for r in results], indent=2))
    atomic_write_text(out / "timings.json", json.dumps(
        {r["key"]: {field: r.get(field) for field in TIMING_FIELDS} for r in results}, indent=2))
    atomic_write_text(out / "provenance.json", json.dumps({r["key"]: r["provenance"] for r in results}, indent=2))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for r in results:
        writer.writerow(dict(r, hidden_units="-".join(map(str, r["hidden_units"])),
                             test_accuracy=" ".join(f"{a:.4f}" for a in r["test_accuracy"])))
    atomic_write_text(out / "results.csv", buffer.getvalue())
    plot(results, out / "sweep.png", group_by)


# --- the figure and the table: grouped into configurations as the report groups them --------------
def plot(results, path, group_by="layers"):
    from tinygrad_edu.vision.utils import atomic_savefig
    atomic_savefig(sweep_figure(results, group_by), path, dpi=120)


def sweep_figure(results, group_by="layers"):
    """The report's figures on one Figure: accuracy against the ``group_by`` setting (depth by
    default: one line per combination of the other settings that vary, mean ± sd over seeds) and
    per epoch (top); below, the gradient flow after the last epoch. A --quick run says so in its
    title. On a Figure of its own (not pyplot's), so calling main() in a notebook leaves its
    backend and figures alone."""
    from matplotlib.figure import Figure

    field = GROUP_BY[group_by]
    varying = sweep_report.check_runs(results, field)
    configs = sweep_report.configurations(results, varying)
    series = sweep_report.series_fields(results, field, varying)
    fig = Figure(figsize=(11, 8.4))
    top = 0.95   # room for the --quick title
    sweep_report.draw_accuracy(fig, (0, top / 2, 0.5, top / 2), configs, field, series)
    sweep_report.draw_epochs(fig, (0.5, top / 2, 0.5, top / 2), configs, [field, *series])
    sweep_report.draw_gradient_flow(fig, (0, 0, 1, top / 2), configs, [field, *series])
    if any(r["quick"] for r in results):
        epochs = "/".join(map(str, sorted({r["epochs"] for r in results})))
        fig.suptitle(f"quick run (--quick): {QUICK_TRAIN} training and {QUICK_TEST} test images, "
                     f"{epochs} epoch(s), not the lecture's settings", color="tab:red")
    return fig


def summary_table(results, group_by="layers"):
    """The report's table as text: one line per configuration, the ``group_by`` setting first,
    then the other settings that vary, the number of seeds and the final test accuracy (mean,
    sample sd, each seed's)."""
    varying = sweep_report.check_runs(results, GROUP_BY[group_by])
    header, rows = sweep_report.configuration_table(sweep_report.configurations(results, varying), varying)
    return "\n".join(sweep_report.table_lines(header, rows))


# --- the sweep --------------------------------------------------------------------------------
def main(argv=None):
    args = parse_args(argv)
    # here, before the data is checked: what is missing is found in a moment, not in every worker
    if args.executor == "dask":
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise SystemExit(DASK_MISSING) from None
    if "torch" in args.engine:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise SystemExit(TORCH_MISSING) from None
    with one_sweep_at_a_time(args.out), sigterm_stops_like_ctrl_c():
        return sweep(args)


def sweep(args):
    run_dir = args.out / "runs"
    configs = run_configs(args)
    finished = {c["key"]: load_finished(run_dir, c) for c in configs}
    todo = [c for c in configs if finished[c["key"]] is None]
    done_count = len(configs) - len(todo)
    data_dir = common.mnist_folder(args.data_dir)
    try:
        if todo:   # checked (or fetched) once, here: in the workers a problem would be a traceback each
            common.load_mnist(data_dir, download=args.download or args.data_dir is None)
        where = (f"on Dask ({args.scheduler or f'a LocalCluster of {min(args.jobs, max(len(todo), 1))} worker(s)'})"
                 if args.executor == "dask" else f"with {min(args.jobs, max(len(todo), 1))} worker(s)")
        print(f"{len(configs)} runs: {done_count} already finished in {run_dir}, {len(todo)} to train {where}",
              flush=True)
        with contextlib.closing(Progress(sum(c["epochs"] for c in todo))) as progress:
            if args.executor == "dask" and todo:
                run_dask(todo, args, data_dir, run_dir, progress, finished)
            elif args.jobs == 1 or len(todo) <= 1:
                for config in todo:
                    finished[config["key"]] = train_run(config, data_dir, progress.epoch_done, args.jit)
                    save_run(run_dir, finished[config["key"]])
            else:
                run_parallel(todo, args.jobs, data_dir, run_dir, progress, finished, args.jit)
    except (KeyboardInterrupt, WorkerLost) as stop:
        saved = sum(read_run_file(run_dir / f"{c['key']}.json", c)[0] is not None for c in configs)
        kept = f"{saved} finished run(s) are saved in {run_dir}; run the same command again to continue"
        if isinstance(stop, WorkerLost):
            print(f"error: {stop}; {kept}", file=sys.stderr)
            return 1
        print(f"\ninterrupted: {kept}", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)

    results = [finished[c["key"]] for c in configs]
    write_results(results, args.out, args.group_by)
    print(summary_table(results, args.group_by))
    print(f"wrote {args.out / 'sweep.png'}, {args.out / 'results.csv'}, {args.out / 'results.json'}, "
          f"{args.out / 'timings.json'} and {args.out / 'provenance.json'}")
    if args.report:
        paths = sweep_report.write_report(results, args.out, command_line=args.command_line,
                                          group_by=GROUP_BY[args.group_by],
                                          model_source=sweep_report.model_source(common.make_mlp))
        print(f"wrote {paths['pdf']} and {paths['md']}")
    return 0


@contextlib.contextmanager
def one_sweep_at_a_time(out):
    """Hold an exclusive lock on ``out/.sweep.lock`` while the sweep runs, so a second sweep on the
    same folder stops at once instead of training the same runs again. The OS drops the lock when
    the process ends, however it ends, so a lock file left behind blocks nobody. (flock exists on
    Linux and macOS; on Windows the sweep runs without this lock.)"""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".sweep.lock", "a+") as lock:
        if fcntl is not None:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "unknown"
                raise SystemExit(f"error: another sweep (pid {holder}) is running on {out}; wait for it to "
                                 f"end, or give this one another --out") from None
            lock.truncate(0)
            lock.write(f"{os.getpid()}\n")   # for the message above
            lock.flush()
        yield


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt, so that both stop the sweep alike."""


@contextlib.contextmanager
def sigterm_stops_like_ctrl_c():
    def stop(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def stops_held_back():
    """Hold Ctrl-C and SIGTERM back while the block runs, then act on them as usual.

    Starting a spawned worker writes its start-up data down a pipe; a stop raised halfway leaves a
    process the sweep does not know of yet, which dies reading half the data with a traceback.
    So a stop that arrives meanwhile is only noted, and raised again once the worker is started
    and registered (so that the sweep's clean-up stops it like the others)."""
    held = []
    previous = {signum: signal.signal(signum, lambda signum, frame: held.append(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if held:
            signal.raise_signal(held[0])


# --- worker processes ---------------------------------------------------------------------------
THREAD_LIMITS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TINYGRAD_EDU_NUM_THREADS")


class WorkerLost(Exception):
    """A worker ended without its run's result: killed (kill -9, the OS out of memory), crashed,
    or its run raised an error."""


def run_parallel(todo, jobs, data_dir, run_dir, progress, finished, jit=True):
    """Train ``todo`` in at most ``jobs`` worker processes at a time, one process per run.

    Each worker has one BLAS/kernel thread, so the workers together use the cores without
    oversubscribing them. Workers are spawned (not forked): a fresh interpreter reads the thread
    limits from the environment before NumPy starts its threads. Each worker reports through a
    pipe of its own: its end of file is how the worker's exit is noticed, whatever the cause.
    """
    context = multiprocessing.get_context("spawn")
    running = {}   # the parent's end of a worker's pipe -> (process, config)
    waiting = list(todo)
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                config = waiting.pop(0)
                receiver, sender = context.Pipe(duplex=False)
                worker = context.Process(target=_worker, args=(config, data_dir, run_dir, sender, jit),
                                         name=f"sweep worker {config['key']}", daemon=True)
                with stops_held_back(), _environment({var: "1" for var in THREAD_LIMITS}):
                    worker.start()
                    running[receiver] = (worker, config)
                sender.close()   # the worker holds the only writing end now
            for receiver in multiprocessing.connection.wait(list(running)):
                worker, config = running[receiver]
                try:
                    kind, message = receiver.recv()
                except EOFError:   # the worker has exited
                    del running[receiver]
                    worker.join()
                    if finished[config["key"]] is None:
                        raise WorkerLost(_how_it_ended(worker, config)) from None
                    continue
                if kind == "epoch":
                    progress.epoch_done(*message)
                else:
                    finished[config["key"]] = message
    finally:   # Ctrl-C, SIGTERM, a lost worker: stop the others at once; runs cut short are lost,
        for worker, _ in running.values():   # never half-written
            worker.terminate()
        for worker, _ in running.values():
            worker.join()


def _how_it_ended(worker, config):
    code = worker.exitcode
    if code < 0:
        name = signal.Signals(-code).name
        cause = " (as kill -9 does, or the OS when memory runs out)" if name == "SIGKILL" else ""
        return f"the worker training {config['key']} was killed by {name}{cause}"
    return f"the worker training {config['key']} stopped with exit code {code} (its error is printed above)"


@contextlib.contextmanager
def _environment(values):
    """``os.environ`` with ``values`` set, for a child process to inherit; restored afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def _worker(config, data_dir, run_dir, results, jit):
    """A worker process: train one run, sending ("epoch", (key, epoch, accuracy)) after each epoch
    and ("result", result) at the end through the pipe ``results``. An exception prints its
    traceback and ends the worker with exit code 1 (multiprocessing does that)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C reaches every process: the parent stops us
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    result = train_run(config, data_dir, lambda *message: results.send(("epoch", message)), jit)
    save_run(run_dir, result)
    results.send(("result", result))


def _exit_with_parent():
    """A worker's watchdog thread: end the worker as soon as the sweep that started it is gone,
    however it went (kill -9 included), so that no orphan trains on. The parent's sentinel is a
    pipe that only the parent holds open (a process handle on Windows): waiting on it returns when
    the parent dies, without polling."""
    multiprocessing.parent_process().join()
    os._exit(1)


# --- Dask ------------------------------------------------------------------------------------------
DASK_EVENTS = "tinygrad_edu-sweep"   # the topic of the runs' events: started, an epoch done


def run_dask(todo, args, data_dir, run_dir, progress, finished):
    """Train ``todo`` on Dask: one task per run, on the scheduler at ``args.scheduler`` or on a
    LocalCluster of ``args.jobs`` single-threaded worker processes started for this sweep.

    The driver saves each run as its future completes. A run whose worker is lost (killed, out
    of memory) is rescheduled by Dask itself, on another worker or a restarted one, up to the
    scheduler's allowed-failures (3 by default) times; the task's "started" events tell the driver
    it happened, and it says so. Ctrl-C or SIGTERM cancels the futures and closes the cluster.
    Each worker reads MNIST from ``data_dir`` on its own machine, checked against the MD5s by the
    loader, so no task carries the data."""
    import dask
    from dask.distributed import Client, LocalCluster, as_completed
    from distributed.scheduler import KilledWorker

    attempts = {}

    def on_event(event):   # called on the client's own thread, as events arrive
        _, message = event
        if message["kind"] == "started":
            attempts[message["key"]] = attempts.get(message["key"], 0) + 1
            if attempts[message["key"]] > 1:
                print(f"{message['key']}: its worker was lost; Dask runs it again (attempt "
                      f"{attempts[message['key']]}, on {message['host']})", file=sys.stderr, flush=True)
        else:
            progress.epoch_done(message["key"], message["epoch"], message["accuracy"])

    with contextlib.ExitStack() as stack:
        if args.scheduler:
            try:
                client = stack.enter_context(Client(args.scheduler))   # waits distributed.comm.timeouts.connect
            except OSError as e:
                raise SystemExit(f"error: cannot reach the Dask scheduler at {args.scheduler}: {e}") from None
        else:
            # one thread per worker: the limits are set before a worker starts, and so before NumPy
            threads = {var: 1 for var in THREAD_LIMITS}
            with stops_held_back(), dask.config.set({"distributed.nanny.pre-spawn-environ": threads}):
                cluster = stack.enter_context(LocalCluster(
                    n_workers=min(args.jobs, len(todo)), threads_per_worker=1, processes=True,
                    dashboard_address=None))
            client = stack.enter_context(Client(cluster))
            # Ctrl-C reaches every process of the terminal: the driver stops the workers, as the local
            # executor's do; a worker restarted later gets the plugin too
            client.register_plugin(ctrl_c_left_to_the_driver())
        # the driver's code, also on another machine; a module before those that import it. Not
        # imported on upload (load=False): a LocalCluster's scheduler runs in this process, and
        # importing there would replace this process's own modules with copies in a temporary
        # folder, deleted with the cluster (inspect.getsource, for the report, then fails)
        for module in ("mnist_common.py", "sweep_report.py", "mnist_sweep.py"):
            client.upload_file(str(Path(__file__).with_name(module)), load=False)
        client.subscribe_topic(DASK_EVENTS, on_event)
        futures = {client.submit(dask_task, config, str(data_dir), args.jit, key=config["key"], pure=False): config
                   for config in todo}
        try:
            for future in as_completed(futures):
                config = futures[future]
                try:
                    result = future.result()
                except KilledWorker:
                    raise WorkerLost(f"Dask lost the worker training {config['key']} on every attempt "
                                     f"({attempts.get(config['key'], '?')}): the run itself may kill it "
                                     f"(out of memory?)") from None
                except Exception as error:   # raised by the run on its worker, or by Dask: as with a
                    traceback.print_exception(error)   # local worker, its traceback first, then one line
                    raise WorkerLost(f"the run {config['key']} ended with {type(error).__name__} "
                                     f"(its traceback is printed above)") from None
                save_run(run_dir, result)
                finished[config["key"]] = result
        except BaseException:   # Ctrl-C, SIGTERM, an error: cancel what is still queued or running
            # Dask's warnings from here on (tasks cancelled, workers stopped) tell of the stop asked for
            logging.getLogger("distributed").setLevel(logging.ERROR)
            client.cancel(list(futures))
            raise
    retried = sorted(key for key, n in attempts.items() if n > 1)
    if retried:
        print(f"{len(retried)} run(s) were trained again after their worker was lost: {', '.join(retried)}",
              file=sys.stderr)


def ctrl_c_left_to_the_driver():
    """A Dask worker plugin for the sweep's own LocalCluster: its workers ignore Ctrl-C, which the
    terminal sends to the driver and them alike, so that the driver cancels the runs and closes
    the cluster in order instead of every worker dying with a traceback; nor do they warn of each
    run that the stop cancels. (Defined here: Dask is imported only when it is used.)"""
    from distributed import WorkerPlugin

    class CtrlCLeftToTheDriver(WorkerPlugin):
        def setup(self, worker):   # on the worker's event loop, in its main thread
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            logging.getLogger("distributed.worker.state_machine").setLevel(logging.ERROR)

    return CtrlCLeftToTheDriver()


def dask_task(config, data_dir, jit):
    """One run, as a Dask task: ``train_run`` on the worker, its events sent to the driver."""
    from distributed import get_worker
    worker = get_worker()
    worker.log_event(DASK_EVENTS, dict(kind="started", key=config["key"], host=socket.gethostname()))
    report = lambda key, epoch, accuracy: worker.log_event(   # noqa: E731
        DASK_EVENTS, dict(kind="epoch", key=key, epoch=epoch, accuracy=accuracy))
    try:
        return train_run(config, data_dir, report, jit)
    except SystemExit as e:   # load_mnist's advice, as an error the driver sees (SystemExit would end the worker)
        raise RuntimeError(f"on {socket.gethostname()}: {e}") from None


if __name__ == "__main__":
    sys.exit(main())
