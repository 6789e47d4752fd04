"""Programming Assignment 3: MNIST test accuracy against the number of layers (2, 3, 4, 5).

    python examples/mnist_sweep.py                    # the lecture's settings, one seed
    python examples/mnist_sweep.py --seeds 3          # mean +- std over seeds 0, 1, 2
    python examples/mnist_sweep.py --quick            # a smoke run in well under a minute

Each (layers, seed) run trains the lecture's MLP with hidden sizes a prefix of 512, 256, 128, 64
(batch 12, SGD lr 0.01, 10 epochs by default) in its own worker process. Every finished run is
saved at once (out/runs/*.json, written atomically), so an interrupted sweep picks up where it
stopped when started again with the same flags. At the end it writes sweep.png, results.csv and
results.json to --out.

Why does accuracy change with depth? After every epoch each run also measures, on a fixed probe
batch (the first 1,000 training images), how the gradient flows through the layers: the norm of
each Linear layer's weight gradient, and the mean output and the fraction of dead units (0 on
every probe image) of each hidden layer's ReLU. They are in every run's JSON and in results.json,
and sweep.png draws them below the accuracy.

Ctrl-C and SIGTERM stop the sweep at once, keeping the finished runs; the workers end with the
sweep however it ends (kill -9 included), and a worker killed on its own (out of memory) ends the
sweep with one line. A second sweep on the same --out refuses to start (on Linux and macOS).
"""

import argparse
import contextlib
import csv
import io
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

import mnist_common as common
from tinygrad_edu.utils.files import atomic_write_text

try:
    import fcntl   # Linux, macOS: the lock that keeps two sweeps off one folder
except ImportError:   # Windows
    fcntl = None

QUICK_TRAIN, QUICK_TEST = 12000, 2000   # --quick: a fifth of the training set, one epoch
PROBE_IMAGES = 1000   # the first training images: the fixed batch gradient flow is measured on


def layer_count(text):
    value = int(text)
    if not 1 <= value <= len(common.LECTURE_HIDDEN) + 1:
        raise argparse.ArgumentTypeError(f"layers must be between 1 and {len(common.LECTURE_HIDDEN) + 1}, got {value}")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, out_default=None,
                           out_help="where figures and results go (default: runs/sweep, and runs/sweep-quick "
                                    "with --quick, so a smoke run never overwrites a real sweep's results)")
    parser.add_argument("--layers", type=layer_count, nargs="+", default=[2, 3, 4, 5],
                        help="numbers of Linear layers to compare (1-5)")
    parser.add_argument("--seeds", type=common.positive_int, default=1,
                        help="runs per depth, with seeds 0, 1, ..., n-1")
    parser.add_argument("--jobs", type=common.positive_int, default=os.cpu_count() or 1,
                        help="worker processes (default: one per core)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_TRAIN} training and {QUICK_TEST} test images, one epoch "
                             f"unless --epochs says otherwise")
    parser.set_defaults(epochs=None)
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 1 if args.quick else 10
    if args.out is None:
        args.out = Path("runs/sweep-quick" if args.quick else "runs/sweep")
    common.check_data_args(parser, args)
    return args


def run_configs(args):
    """One dict per (layers, seed) run; ``key`` names its result file and includes every setting,
    so a sweep with other settings never reuses a result."""
    runs = []
    for layers in sorted(set(args.layers)):
        for seed in range(args.seeds):
            key = (f"layers{layers}_seed{seed}_epochs{args.epochs}_batch{args.batch_size}_lr{args.lr:g}"
                   + ("_quick" if args.quick else ""))
            runs.append(dict(key=key, layers=layers, hidden_units=list(common.hidden_units_for(layers)),
                             seed=seed, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             quick=args.quick))
    return runs


# per epoch, one number per Linear layer (the first) or per hidden layer (the others); see gradient_flow
FLOW_FIELDS = ("weight_grad_norm", "hidden_mean_activation", "dead_relu_fraction")
RESULT_FIELDS = ("final_train_loss", "test_accuracy", "final_test_accuracy", "seconds", "backend", *FLOW_FIELDS)


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
    missing = [field for field in (*config, *RESULT_FIELDS) if field not in result]
    if missing:
        return None, f"lacks the field(s) {', '.join(missing)}"
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
    return result, None


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
    mean of its ReLU's output and the fraction of its units that are 0 on every image (dead: they
    pass no gradient back, whatever the image). The activations come from a forward hook on the
    MLP's ReLU, one module that forward calls once per hidden layer, in order. No optimizer step,
    and the parameters' ``.grad`` are put back as they were: training goes on exactly as without
    the probe."""
    activations = []
    kept_grads = [p.grad for p in model.parameters()]
    model.zero_grad()
    with model.relu.register_forward_hook(lambda relu, args, out: activations.append(out.detach().numpy())):
        criterion(model(images), labels).backward()
    norms = [float(np.linalg.norm(layer.weight.grad.numpy())) for layer in model.l_layers]
    for p, grad in zip(model.parameters(), kept_grads):
        p.grad = grad
    return dict(weight_grad_norm=norms,
                hidden_mean_activation=[float(a.mean()) for a in activations],
                dead_relu_fraction=[float((a == 0).all(axis=0).mean()) for a in activations])


def train_run(config, data_dir, run_dir, report, jit=True):
    """Train one MLP, test after every epoch (``report(key, epoch, accuracy)``), save the result
    atomically and return it. ``jit``: the training step through tinygrad_edu.jit (the same
    numbers, so it is not part of the run's configuration)."""
    torch, nn, optim = common.load_engine("tinygrad_edu")
    from tinygrad_edu.utils.data import DataLoader

    subset = (QUICK_TRAIN, QUICK_TEST) if config["quick"] else (None, None)
    train_data, test_data = common.load_mnist(data_dir, *subset)
    torch.manual_seed(config["seed"])
    train_loader = DataLoader(train_data, batch_size=config["batch_size"], shuffle=True, seed=config["seed"])
    test_loader = DataLoader(test_data, batch_size=1000)
    probe = next(iter(DataLoader(train_data, batch_size=PROBE_IMAGES)))   # the same images every epoch
    model = common.make_mlp(nn, config["hidden_units"])
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=config["lr"])

    step = common.compiled_step(torch, model, criterion, optimizer) if jit else None
    start, accuracies, train_loss = time.perf_counter(), [], float("nan")
    flow = {field: [] for field in FLOW_FIELDS}
    for epoch in range(config["epochs"]):
        train_loss = common.train_epoch(torch, model, train_loader, criterion, optimizer, epoch, log_every=0,
                                        step=step)
        correct, total = common.evaluate(torch, model, test_loader)
        accuracies.append(correct / total)
        for field, values in gradient_flow(model, criterion, *probe).items():
            flow[field].append(values)
        report(config["key"], epoch + 1, accuracies[-1])
    result = dict(config, final_train_loss=train_loss, test_accuracy=accuracies,
                  final_test_accuracy=accuracies[-1], seconds=common.seconds_since(start),
                  backend=torch.backend.name(), **flow)
    atomic_write_text(run_dir / f"{config['key']}.json", json.dumps(result, indent=2))
    return result


# --- reporting ------------------------------------------------------------------------------------
class Progress:
    """A tqdm bar over all epochs on a terminal or in a notebook (tqdm.auto draws it as a widget
    there); plain lines (one per epoch) otherwise, such as in a log file."""

    def __init__(self, total_epochs):
        self.bar = None
        if sys.stderr.isatty() or "ipykernel" in sys.modules:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total_epochs, unit="epoch", desc="sweep")

    def epoch_done(self, key, epoch, accuracy):
        if self.bar is not None:
            self.bar.set_postfix_str(f"{key.split('_epochs')[0]} epoch {epoch}: {accuracy:.4f}")
            self.bar.update(1)
        else:
            print(f"{key}: epoch {epoch} test accuracy {accuracy:.4f}", flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


CSV_FIELDS = ["layers", "hidden_units", "seed", "epochs", "batch_size", "lr", "quick",
              "final_train_loss", "final_test_accuracy", "test_accuracy", "seconds", "backend"]


def write_results(results, out):
    """results.json, results.csv and sweep.png, each written atomically."""
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for r in results:
        writer.writerow(dict(r, hidden_units="-".join(map(str, r["hidden_units"])),
                             test_accuracy=" ".join(f"{a:.4f}" for a in r["test_accuracy"])))
    atomic_write_text(out / "results.csv", buffer.getvalue())
    plot(results, out / "sweep.png")


def plot(results, path):
    from tinygrad_edu.vision.utils import atomic_savefig
    atomic_savefig(sweep_figure(results), path, dpi=120)


def sweep_figure(results):
    """Accuracy against depth, and per epoch (top); below, the gradient flow after the last
    epoch: each Linear layer's weight-gradient norm and each hidden layer's dead-ReLU fraction,
    one line per depth (means over seeds). A --quick run says so in its title. On a Figure of its
    own (not pyplot's), so calling main() in a notebook leaves its backend and figures alone."""
    from matplotlib.figure import Figure

    depths = sorted({r["layers"] for r in results})
    final = {d: np.array([r["final_test_accuracy"] for r in results if r["layers"] == d]) for d in depths}
    fig = Figure(figsize=(11, 8.4))
    (left, right), (grads, dead) = fig.subplots(2, 2)
    means = [final[d].mean() for d in depths]
    stds = [final[d].std(ddof=1) if len(final[d]) > 1 else 0.0 for d in depths]
    n_seeds = max(len(v) for v in final.values())
    left.errorbar(depths, means, yerr=stds if n_seeds > 1 else None, marker="o", capsize=4,
                  label="tinygrad_edu" + (f" (mean ± std, {n_seeds} seeds)" if n_seeds > 1 else ""))
    for d in depths:
        left.scatter([d] * len(final[d]), final[d], s=10, color="gray", alpha=0.6, zorder=3)
    left.axhline(common.LECTURE_ACCURACY, color="red", linestyle="--",
                 label=f"lecture, 5 layers ({common.LECTURE_ACCURACY})")
    left.set_xticks(depths)
    left.set(xlabel="number of Linear layers", ylabel="test accuracy", title="MNIST: accuracy vs depth")
    left.legend(loc="lower right")
    for d in depths:
        curves = np.array([r["test_accuracy"] for r in results if r["layers"] == d])
        epochs = np.arange(1, curves.shape[1] + 1)
        right.plot(epochs, curves.mean(axis=0), marker=".", label=f"{d} layers")
    right.set_xticks(epochs)
    right.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy per epoch")
    right.legend(loc="lower right")
    draw_gradient_flow(grads, dead, results, depths)
    if any(r["quick"] for r in results):
        fig.suptitle(f"quick run (--quick): {QUICK_TRAIN} training and {QUICK_TEST} test images, "
                     f"{results[0]['epochs']} epoch(s), not the lecture's settings", color="tab:red")
    fig.tight_layout()
    return fig


def draw_gradient_flow(grads, dead, results, depths):
    """The bottom panels of ``sweep_figure``: per depth, the last epoch's weight-gradient norm of
    each Linear layer (log scale: they span decades) and dead-ReLU fraction of each hidden layer,
    averaged over seeds; one colour per depth, as in the accuracy-per-epoch panel."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    for d in depths:
        runs = [r for r in results if r["layers"] == d]
        norms = np.mean([r["weight_grad_norm"][-1] for r in runs], axis=0)
        line, = grads.plot(np.arange(1, d + 1), norms, marker="o", label=f"{d} layers")
        if d > 1:
            fractions = np.mean([r["dead_relu_fraction"][-1] for r in runs], axis=0)
            dead.plot(np.arange(1, d), fractions, marker="o", color=line.get_color(), label=f"{d} layers")
    grads.set_yscale("log")   # ticks labelled 0.1, 0.2, 0.3, 0.5, 1 (not 3 x 10^-1): a decade or two show
    grads.yaxis.set_minor_locator(LogLocator(subs=(2, 3, 5)))
    for set_formatter in (grads.yaxis.set_major_formatter, grads.yaxis.set_minor_formatter):
        set_formatter(FormatStrFormatter("%g"))
    grads.set_xticks(range(1, max(depths) + 1))
    grads.set(xlabel="Linear layer (1 = next to the input)", ylabel="‖dL/dW‖ on the probe batch",
              title="weight-gradient norm per layer, after the last epoch")
    grads.legend(loc="best")
    dead.set_xticks(range(1, max(depths)))
    dead.set_ylim(bottom=0)
    dead.set(xlabel="hidden layer", ylabel="fraction of units 0 on every probe image",
             title=f"dead ReLUs per hidden layer ({PROBE_IMAGES} training images)")
    if max(depths) > 1:
        dead.legend(loc="best")


def summary_table(results):
    lines = ["layers  hidden units          seeds  test accuracy"]
    for d in sorted({r["layers"] for r in results}):
        accs = np.array([r["final_test_accuracy"] for r in results if r["layers"] == d])
        hidden = "-".join(map(str, common.hidden_units_for(d))) or "(none)"
        spread = f" ± {accs.std(ddof=1):.4f}" if len(accs) > 1 else ""
        lines.append(f"{d:>6}  {hidden:<20}  {len(accs):>5}  {accs.mean():.4f}{spread}")
    return "\n".join(lines)


# --- the sweep --------------------------------------------------------------------------------
def main(argv=None):
    args = parse_args(argv)
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
        print(f"{len(configs)} runs: {done_count} already finished in {run_dir}, {len(todo)} to train"
              f" with {min(args.jobs, max(len(todo), 1))} worker(s)", flush=True)
        with contextlib.closing(Progress(sum(c["epochs"] for c in todo))) as progress:
            if args.jobs == 1 or len(todo) <= 1:
                for config in todo:
                    finished[config["key"]] = train_run(config, data_dir, run_dir, progress.epoch_done, args.jit)
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
    write_results(results, args.out)
    print(summary_table(results))
    print(f"wrote {args.out / 'sweep.png'}, {args.out / 'results.csv'} and {args.out / 'results.json'}")
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
    """A worker ended without its run's result: killed (kill -9, the OS out of memory) or crashed."""


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
    result = train_run(config, data_dir, run_dir, lambda *message: results.send(("epoch", message)), jit)
    results.send(("result", result))


def _exit_with_parent():
    """A worker's watchdog thread: end the worker as soon as the sweep that started it is gone,
    however it went (kill -9 included), so that no orphan trains on. The parent's sentinel is a
    pipe that only the parent holds open (a process handle on Windows): waiting on it returns when
    the parent dies, without polling."""
    multiprocessing.parent_process().join()
    os._exit(1)


if __name__ == "__main__":
    sys.exit(main())
