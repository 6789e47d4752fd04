"""Programming Assignment 3: MNIST test accuracy against the number of layers (2, 3, 4, 5).

    python examples/mnist_sweep.py                    # the lecture's settings, one seed
    python examples/mnist_sweep.py --seeds 3          # mean +- std over seeds 0, 1, 2
    python examples/mnist_sweep.py --quick            # a smoke run in well under a minute

Each (layers, seed) run trains the lecture's MLP with hidden sizes a prefix of 512, 256, 128, 64
(batch 12, SGD lr 0.01, 10 epochs by default) in its own worker process. Every finished run is
saved at once (out/runs/*.json, written atomically), so an interrupted sweep picks up where it
stopped when started again with the same flags. At the end it writes sweep.png, results.csv and
results.json to --out.
"""

import argparse
import csv
import io
import json
import multiprocessing
import os
import queue
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

import mnist_common as common
from tinygrad_edu.utils.files import atomic_write_text

QUICK_TRAIN, QUICK_TEST = 12000, 2000   # --quick: a fifth of the training set, one epoch


def layer_count(text):
    value = int(text)
    if not 1 <= value <= len(common.LECTURE_HIDDEN) + 1:
        raise argparse.ArgumentTypeError(f"layers must be between 1 and {len(common.LECTURE_HIDDEN) + 1}, got {value}")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, out_default="runs/sweep")
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


RESULT_FIELDS = ("final_train_loss", "test_accuracy", "final_test_accuracy", "seconds", "backend")


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


# --- one training run (in a worker process) -----------------------------------------------------
_progress = None  # a multiprocessing queue in workers: (key, epoch, accuracy) messages


def _init_worker(progress):
    global _progress
    _progress = progress


def train_run(config, data_dir, run_dir):
    """Train one MLP, test after every epoch, save the result atomically and return it."""
    torch, nn, optim = common.load_engine("tinygrad_edu")
    from tinygrad_edu.utils.data import DataLoader

    subset = (QUICK_TRAIN, QUICK_TEST) if config["quick"] else (None, None)
    train_data, test_data = common.load_mnist(data_dir, *subset)
    torch.manual_seed(config["seed"])
    train_loader = DataLoader(train_data, batch_size=config["batch_size"], shuffle=True, seed=config["seed"])
    test_loader = DataLoader(test_data, batch_size=1000)
    model = common.make_mlp(nn, config["hidden_units"])
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=config["lr"])

    start, accuracies, train_loss = time.perf_counter(), [], float("nan")
    for epoch in range(config["epochs"]):
        train_loss = common.train_epoch(torch, model, train_loader, criterion, optimizer, epoch, log_every=0)
        correct, total = common.evaluate(torch, model, test_loader)
        accuracies.append(correct / total)
        if _progress is not None:
            _progress.put((config["key"], epoch + 1, accuracies[-1]))
    result = dict(config, final_train_loss=train_loss, test_accuracy=accuracies,
                  final_test_accuracy=accuracies[-1], seconds=common.seconds_since(start),
                  backend=torch.backend.name())
    atomic_write_text(run_dir / f"{config['key']}.json", json.dumps(result, indent=2))
    return result


# --- reporting ------------------------------------------------------------------------------------
class Progress:
    """A tqdm bar over all epochs on a terminal; plain lines (one per epoch) otherwise."""

    def __init__(self, total_epochs):
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm
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
    """Accuracy against depth, and per epoch. On a Figure of its own (not pyplot's), so calling
    main() in a notebook leaves the notebook's backend and figures alone."""
    from matplotlib.figure import Figure
    from tinygrad_edu.vision.utils import atomic_savefig

    depths = sorted({r["layers"] for r in results})
    final = {d: np.array([r["final_test_accuracy"] for r in results if r["layers"] == d]) for d in depths}
    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2)
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
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)


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
    run_dir = args.out / "runs"
    configs = run_configs(args)
    finished = {c["key"]: load_finished(run_dir, c) for c in configs}
    todo = [c for c in configs if finished[c["key"]] is None]
    done_count = len(configs) - len(todo)
    data_dir = common.mnist_folder(args.data_dir)
    if todo:   # checked (or fetched) once, here: in the workers a problem would be a traceback each
        common.load_mnist(data_dir, download=args.download or args.data_dir is None)
    print(f"{len(configs)} runs: {done_count} already finished in {run_dir}, {len(todo)} to train"
          f" with {min(args.jobs, max(len(todo), 1))} worker(s)", flush=True)

    progress = Progress(sum(c["epochs"] for c in todo))
    try:
        if args.jobs == 1 or len(todo) <= 1:
            _init_worker(_Reporter(progress))
            for config in todo:
                finished[config["key"]] = train_run(config, data_dir, run_dir)
        else:
            run_parallel(todo, args.jobs, data_dir, run_dir, progress, finished)
    except KeyboardInterrupt:
        progress.close()
        saved = sum(read_run_file(run_dir / f"{c['key']}.json", c)[0] is not None for c in configs)
        print(f"\ninterrupted: {saved} finished run(s) are saved in {run_dir}; run the same "
              f"command again to continue", file=sys.stderr)
        return 130
    progress.close()

    results = [finished[c["key"]] for c in configs]
    write_results(results, args.out)
    print(summary_table(results))
    print(f"wrote {args.out / 'sweep.png'}, {args.out / 'results.csv'} and {args.out / 'results.json'}")
    return 0


class _Reporter:
    """In-process stand-in for the workers' queue: reports progress directly."""

    def __init__(self, progress):
        self.progress = progress

    def put(self, message):
        self.progress.epoch_done(*message)


def run_parallel(todo, jobs, data_dir, run_dir, progress, finished):
    """Train ``todo`` in worker processes, one BLAS/kernel thread each, so the workers together
    use the cores without oversubscribing them. Workers are spawned (not forked): a fresh
    interpreter reads the thread limits from the environment before NumPy starts its threads."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TINYGRAD_EDU_NUM_THREADS"):
        os.environ[var] = "1"
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=context,
                             initializer=_init_worker, initargs=(messages,)) as pool:
        pending = {pool.submit(train_run, c, data_dir, run_dir) for c in todo}
        try:
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(messages, progress)
                for future in done:
                    result = future.result()
                    finished[result["key"]] = result
            _drain(messages, progress)
        except BaseException:   # Ctrl-C: stop now. Finished runs are on disk; the ones cut short
            pool.shutdown(wait=False, cancel_futures=True)   # are lost, never half-written
            for worker in multiprocessing.active_children():
                worker.terminate()
            raise


def _drain(messages, progress):
    while True:
        try:
            progress.epoch_done(*messages.get_nowait())
        except queue.Empty:
            return


if __name__ == "__main__":
    sys.exit(main())
