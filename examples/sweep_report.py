"""The assignment's report of a sweep: report.pdf and report.md, with the provenance of every run.

    prov = sweep_report.provenance(data_dir)      # in each worker: stored in its run's JSON
    paths = sweep_report.write_report(results, out_dir, command_line=sys.argv, group_by="layers",
                                      model_source=sweep_report.model_source(common.make_mlp))

Programming Assignment 3 asks for "a figure: accuracy vs # layers" and the source code. The report
holds both, and what a reader needs to trust and rerun them: the settings, a table per
configuration (mean, sample sd and every seed's number), the per-epoch curves, the gradient flow,
and the provenance of the runs (versions, commit, machine, the MNIST files' MD5s, the command).

The report is built once as a list of blocks (heading, paragraph, table, code, figure) and written
twice from it: as PDF pages (matplotlib's PDF backend, on Figures of our own, so the user's pyplot
backend and figures are left alone) and as Markdown, whose figures are PNG files beside it. So the
two files always say the same thing.
"""

import ast
import functools
import hashlib
import inspect
import os
import platform
import shlex
import socket
import subprocess
import textwrap
from pathlib import Path

import numpy as np

import mnist_common as common
import tinygrad_edu
from tinygrad_edu import backend
from tinygrad_edu.utils.files import atomic_path, atomic_write_text
from tinygrad_edu.vision import datasets
from tinygrad_edu.vision.utils import atomic_savefig

# --- provenance: where and with what a run was made ----------------------------------------------


def provenance(data_dir=None):
    """What a run depends on besides its settings, as a JSON-serialisable dict: tinygrad_edu's
    version and the git commit it runs from ("unknown" outside a git checkout; "+modified" when
    the checkout has uncommitted changes), the Python and NumPy versions, the backend, the ISA of
    the C kernels and their thread count, the CPU, the host, and the MD5 of each MNIST file read
    from ``data_dir`` (``None``: $TINYGRAD_EDU_DATA, else the user cache), as ``md5sum`` prints it."""
    folder = common.mnist_folder(data_dir)
    c_backend = backend.name() == "c"
    return {
        "tinygrad_edu_version": tinygrad_edu.__version__,
        "git_commit": git_commit(Path(tinygrad_edu.__file__).parent),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "backend": backend.name(),
        "isa": backend.c_kernels.isa() if c_backend else None,
        "threads": backend.c_kernels.THREADS if c_backend else blas_threads(),
        "cpu": cpu_model(),
        "hostname": socket.gethostname(),
        "data_dir": str(folder.resolve()),
        "data_md5": {str(path.relative_to(folder)): file_md5(path) for path in mnist_files(folder)},
    }


def git_commit(folder):
    """The commit checked out at ``folder`` ("+modified" if tracked files differ from it), or
    "unknown" when that is not a git checkout or git is not installed: never an exception."""
    def git(*args):
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return "unknown"
        modified = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("+modified" if modified else "")


def blas_threads():
    """The NumPy backend's threads: BLAS's own setting, as the environment gives it."""
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(variable):
            return f"{variable}={os.environ[variable]}"
    return "BLAS default"


def cpu_model():
    """The CPU's model name from /proc/cpuinfo (Linux), else what the platform module says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                field, _, value = line.partition(":")
                if field.strip() in ("model name", "Hardware", "Processor") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def mnist_files(folder):
    """The four files ``datasets.MNIST(root=folder)`` reads (``folder`` or ``folder/MNIST/raw``,
    gzipped or not), found without loading them."""
    paths = datasets.MNIST.files_in(folder)
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        raise FileNotFoundError(f"provenance: no MNIST file {', '.join(missing)} in {folder} (nor in its "
                                f"MNIST/raw): give the data_dir the runs read MNIST from")
    return list(paths.values())


def file_md5(path):
    """The MD5 of the bytes of ``path``, computed once per file and process (a sweep's worker asks
    for it at every run): cached by path, size and modification time, so a replaced file is read again."""
    stat = Path(path).stat()
    return _md5_of(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _md5_of(path, size, mtime_ns):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def model_source(make_model):
    """The source code of the model class the runs trained, read from the code itself: the class
    ``make_model`` defines inside it (``common.make_mlp``'s MLP), or ``make_model`` itself if it is
    a class."""
    if inspect.isclass(make_model):
        return textwrap.dedent(inspect.getsource(make_model))
    if not inspect.isfunction(make_model):
        raise TypeError(f"model_source: make_model must be a function that defines the model class, or "
                        f"the class, got {make_model!r}")
    source = textwrap.dedent(inspect.getsource(make_model))
    classes = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ClassDef)]
    if len(classes) != 1:
        raise ValueError(f"model_source: {make_model.__qualname__} defines {len(classes)} classes; "
                         f"expected the one model class (or pass the class itself)")
    lines = source.splitlines(keepends=True)[classes[0].lineno - 1:classes[0].end_lineno]
    return textwrap.dedent("".join(lines))


# --- the runs: checked, grouped, summarised ------------------------------------------------------

# a run's settings, in the order the sweep writes them; "engine" is optional (absent: tinygrad_edu),
# for PyTorch's runs beside the sweep's
CONFIG_FIELDS = ("layers", "hidden_units", "activation", "optimizer", "lr", "batch_size", "epochs", "quick")
OPTIONAL_CONFIG = {"engine": "tinygrad_edu"}
RESULT_FIELDS = ("seed", "test_accuracy", "final_test_accuracy", "seconds", "provenance")
FLOW_FIELDS = ("weight_grad_norm", "dead_relu_fraction")   # the gradient-flow panel's, where runs have them
SETTING_NAMES = {"layers": "# layers", "hidden_units": "hidden units", "epochs": "epochs",
                 "batch_size": "batch size", "lr": "learning rate", "quick": "quick (--quick)",
                 "optimizer": "optimizer", "activation": "activation", "engine": "engine"}


def setting(run, field):
    """``run``'s value of a setting, hashable (a list becomes a tuple); an optional setting the run
    lacks has its default."""
    value = run.get(field, OPTIONAL_CONFIG.get(field))
    return tuple(value) if isinstance(value, list) else value


def show(field, value):
    """A setting's value as the report prints it."""
    if field == "engine":
        return {"torch": "PyTorch"}.get(value, value)
    if isinstance(value, tuple):
        return "-".join(map(str, value)) or "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def order(value):
    """Sort key that puts numbers before text, so a column of mixed values still sorts."""
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def check_runs(results, group_by):
    """Refuse what cannot be reported, naming the run and the field; returns the settings that
    tell the runs' configurations apart (seed aside), ``group_by`` first."""
    if not isinstance(results, (list, tuple)) or not results:
        raise ValueError(f"write_report: results must be a non-empty list of run dicts, got {results!r:.80}")
    for i, run in enumerate(results):
        if not isinstance(run, dict):
            raise TypeError(f"write_report: results[{i}] must be a run's dict, got {type(run).__name__}")
        name = run.get("key", f"results[{i}]")
        missing = [f for f in (*CONFIG_FIELDS, *RESULT_FIELDS) if f not in run]
        if missing:
            raise ValueError(f"write_report: run {name} lacks the field(s) {', '.join(missing)}"
                             + (" (runs saved before provenance was recorded: run them again)"
                                if missing == ["provenance"] else ""))
        if not isinstance(run["provenance"], dict):
            raise ValueError(f"write_report: run {name}: provenance must be the dict provenance() returns, "
                             f"got {type(run['provenance']).__name__}")
        accuracies = run["test_accuracy"]
        if not (isinstance(accuracies, list) and len(accuracies) == run["epochs"]
                and all(isinstance(a, (int, float)) for a in accuracies)
                and accuracies[-1] == run["final_test_accuracy"]):
            raise ValueError(f"write_report: run {name} has {run['epochs']} epoch(s) but test_accuracy "
                             f"{accuracies!r:.80} (one number per epoch, the last final_test_accuracy)")
    known = (*CONFIG_FIELDS, *OPTIONAL_CONFIG)
    if group_by not in known and not all(group_by in run for run in results):
        raise ValueError(f"write_report: group_by={group_by!r} is not a setting of every run; choose one "
                         f"of {', '.join(known)}")
    fields = [group_by] + [f for f in known if f != group_by]   # engine last: PyTorch's rows beside
    seen = {}
    for run in results:
        config = (*(setting(run, f) for f in fields), run["seed"])
        if config in seen:
            raise ValueError(f"write_report: runs {seen[config]} and {run.get('key')} have the same "
                             f"settings and seed: give each run once")
        seen[config] = run.get("key")
    return [f for f in fields if f == group_by or len({setting(run, f) for run in results}) > 1]


def series_fields(results, group_by, varying):
    """The settings that split a group into lines of the accuracy figure: those that vary, less
    those that follow from the group and the others (hidden_units follows from layers and the
    width). In the order of ``varying``: "engine" last."""
    kept = [f for f in varying if f != group_by]
    for field in sorted(kept, key=lambda f: f != "hidden_units"):   # the most likely to follow, first
        others = [f for f in kept if f != field]
        value_of = {}
        if all(value_of.setdefault((setting(run, group_by), *(setting(run, f) for f in others)),
                                   setting(run, field)) == setting(run, field) for run in results):
            kept.remove(field)
    return kept


class Configuration:
    """The runs of one configuration (all settings equal but the seed), and their final accuracy."""

    def __init__(self, values, runs):
        self.values = values   # {setting: value} for the settings that vary across the report
        self.runs = sorted(runs, key=lambda run: order(run["seed"]))
        self.final = np.array([run["final_test_accuracy"] for run in self.runs], dtype=float)
        self.mean = float(self.final.mean())
        self.sd = float(self.final.std(ddof=1)) if len(self.final) > 1 else None   # sample sd: n - 1

    def label(self, fields):
        return ", ".join(f"{show(f, self.values[f])} layers" if f == "layers"
                         else show(f, self.values[f]) if f == "engine"
                         else f"{SETTING_NAMES.get(f, f)} {show(f, self.values[f])}" for f in fields)


def configurations(results, varying):
    """The runs grouped into Configurations by their values of ``varying`` (``check_runs``'s: all
    settings but the seed), sorted by those values in that order."""
    grouped = {}
    for run in results:
        grouped.setdefault(tuple(setting(run, f) for f in varying), []).append(run)
    return [Configuration(dict(zip(varying, values)), runs)
            for values, runs in sorted(grouped.items(), key=lambda item: [order(v) for v in item[0]])]


def configuration_table(configs, varying):
    """``(header, rows)``: one row per configuration, its ``varying`` settings, the number of
    seeds, the final accuracy's mean and sample sd, and each seed's number. The report's table and
    the table the sweep prints."""
    header = [SETTING_NAMES.get(f, f) for f in varying] + ["seeds", "mean", "sd", "per seed"]
    rows = [[show(f, c.values[f]) for f in varying]
            + [str(len(c.runs)), f"{c.mean:.4f}", "-" if c.sd is None else f"{c.sd:.4f}",
               "  ".join(f"{run['seed']}: {run['final_test_accuracy']:.4f}" for run in c.runs)]
            for c in configs]
    return header, rows


def flatten(provenance_dict, prefix=""):
    """``{"data_md5": {"a.gz": "..."}}`` -> ``{"data_md5 a.gz": "..."}``: one comparable field each."""
    flat = {}
    for field, value in provenance_dict.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{field} "))
        else:
            flat[prefix + field] = value
    return flat


PROVENANCE_NAMES = {"tinygrad_edu_version": "tinygrad_edu version", "git_commit": "git commit",
                    "python": "Python", "numpy": "NumPy", "backend": "backend", "isa": "ISA of the C kernels",
                    "threads": "threads", "cpu": "CPU", "hostname": "hostname", "data_dir": "MNIST folder",
                    "data_md5": "MD5 of"}   # in the order provenance() gives them


def compare_provenance(results):
    """``(equal, differing)``: the provenance fields with one value in every run ({field: value}),
    and the names of the others (also those some runs lack), in provenance()'s order."""
    flats = [flatten(run["provenance"]) for run in results]
    known = list(PROVENANCE_NAMES)
    fields = sorted(dict.fromkeys(field for flat in flats for field in flat),   # fields of its own last
                    key=lambda f: known.index(f.split()[0]) if f.split()[0] in known else len(known))
    missing = object()
    equal = {f: flats[0][f] for f in fields if all(flat.get(f, missing) == flats[0].get(f, missing) for flat in flats)}
    return equal, [f for f in fields if f not in equal]


def provenance_name(field):
    if field.startswith("data_md5 "):
        return "MD5 of " + field[len("data_md5 "):]
    return PROVENANCE_NAMES.get(field, field)


def show_provenance(value):
    return "n/a" if value is None else str(value)


# --- the report as blocks ------------------------------------------------------------------------

class FigureBlock:
    """A figure block: ``draw(fig, rect)`` draws it into the part ``rect`` (left, bottom, width,
    height, in figure fractions) of a matplotlib Figure: a PDF page, or a PNG of its own."""

    def __init__(self, file_name, height, draw, caption):
        self.file_name, self.height, self.draw, self.caption = file_name, height, draw, caption


def build_report(results, command_line, group_by, source):
    """The report's blocks: ("title" | "heading" | "paragraph", text), ("table", header, rows),
    ("code", text) and FigureBlocks."""
    varying = check_runs(results, group_by)
    series = series_fields(results, group_by, varying)
    configs = configurations(results, varying)
    seeds = sorted({run["seed"] for run in results}, key=order)
    group_name = SETTING_NAMES.get(group_by, group_by)
    blocks = [("title", f"MNIST: test accuracy vs {group_name}"),
              ("paragraph", f"{len(results)} runs: {len(configs)} configuration(s) x seeds "
                            f"{', '.join(map(str, seeds))}, grouped by {group_name}."
                            + (" Quick runs (--quick): a subset of MNIST, not the lecture's settings."
                               if any(run["quick"] for run in results) else "")),
              ("paragraph", "Settings of every run: " + "; ".join(
                  f"{SETTING_NAMES[f]} {show(f, setting(results[0], f))}"
                  for f in (*CONFIG_FIELDS, *OPTIONAL_CONFIG) if f not in varying) + ".")]

    blocks.append(FigureBlock("report_accuracy.png", 3.9,
                         functools.partial(draw_accuracy, configs=configs, group_by=group_by, series=series),
                         f"Final test accuracy per {group_name}: mean ± sd over seeds (bars; dots: the "
                         f"seeds), the lecture's {common.LECTURE_ACCURACY} for 5 layers dashed."))
    line_fields = [group_by, *series]
    blocks += [("heading", "Test accuracy per epoch"),
               FigureBlock("report_epochs.png", 3.0, functools.partial(draw_epochs, configs=configs, fields=line_fields),
                      "Test accuracy after each epoch, mean over seeds, one line per configuration.")]

    measured = [c for c in configs if all(field in run for run in c.runs for field in FLOW_FIELDS)]
    if measured:   # runs that did not measure it (older runs, PyTorch's) are left out of the panel
        blocks += [("heading", "Gradient flow after the last epoch"),
                   ("paragraph", "On a fixed probe batch of training images, means over seeds: the norm of each "
                                 "Linear layer's weight gradient (log scale), and the fraction of each hidden "
                                 "layer's units that are 0 on every probe image (dead: they pass no gradient back)."
                                 + ("" if len(measured) == len(configs) else
                                    f" {len(configs) - len(measured)} configuration(s) without these numbers "
                                    f"are left out.")),
                   FigureBlock("report_gradient_flow.png", 2.9,
                               functools.partial(draw_gradient_flow, configs=measured, fields=line_fields), "")]

    per_seed = ", ".join(f"seed {s}" for s in seeds[:2]) + (", ..." if len(seeds) > 2 else "")
    blocks += [("heading", "Results per configuration"),
               ("paragraph", f"Final test accuracy: mean and sample standard deviation (n - 1) over the seeds, "
                             f"and each seed's number ({per_seed})."),
               ("table", *configuration_table(configs, varying))]

    blocks += [("heading", "Model source"),
               ("paragraph", "The class the runs trained, as it stands in the code that ran "
                             "(hidden sizes: the table's hidden units)."),
               ("code", source)]

    equal, differing = compare_provenance(results)
    blocks += [("heading", "Provenance"),
               ("paragraph", "Command line:"),
               ("command", " ".join(shlex.quote(arg) for arg in command_line)),
               ("paragraph", f"Equal in all {len(results)} runs:" if not differing else
                             f"Equal in all {len(results)} runs (the fields that differ are listed per run "
                             f"below: {', '.join(map(provenance_name, differing))}):"),
               ("table", ["field", "value"], [[provenance_name(f), show_provenance(v)] for f, v in equal.items()]),
               ("paragraph", "Runs (wall time: training and testing, in seconds)"
                             + (", with the provenance fields that differ:" if differing else ":")),
               ("table", ["run", "seed", "accuracy", "wall time (s)", *map(provenance_name, differing)],
                [[run.get("key", "-"), str(run["seed"]), f"{run['final_test_accuracy']:.4f}", f"{run['seconds']:.1f}",
                  *(show_provenance(flatten(run["provenance"]).get(f, "(missing)")) for f in differing)]
                 for c in configs for run in c.runs])]
    return blocks


# --- the figures ---------------------------------------------------------------------------------

def axes_grid(fig, rect, columns):
    """``columns`` side-by-side axes inside ``rect``, leaving room (in inches) for their labels."""
    left, bottom, width, height = rect
    w_in, h_in = fig.get_size_inches()
    grid = fig.add_gridspec(1, columns, left=left + 0.75 / w_in, right=left + width - 0.15 / w_in,
                            bottom=bottom + 0.5 / h_in, top=bottom + height - 0.3 / h_in, wspace=0.3)
    return [fig.add_subplot(grid[0, i]) for i in range(columns)]


def draw_accuracy(fig, rect, configs, group_by, series):
    """Final accuracy against the grouping setting, one line per series (mean ± sd, seeds as dots)."""
    ax, = axes_grid(fig, rect, 1)
    groups = sorted({c.values[group_by] for c in configs}, key=order)
    position = {g: i for i, g in enumerate(groups)}
    lines = {}
    for c in configs:
        lines.setdefault(tuple(c.values[f] for f in series), []).append(c)
    for k, (values, members) in enumerate(lines.items()):
        shift = (k - (len(lines) - 1) / 2) * 0.08   # side by side, not on top of each other
        x = np.array([position[c.values[group_by]] for c in members]) + shift
        label = members[0].label(series) if series else "tinygrad_edu"
        line = ax.errorbar(x, [c.mean for c in members], yerr=[c.sd or 0.0 for c in members], marker="o",
                           capsize=4, label=label + (" (mean ± sd)" if any(c.sd is not None for c in members) else ""))
        for xi, c in zip(x, members):
            ax.scatter([xi] * len(c.final), c.final, s=10, color=line[0].get_color(), alpha=0.5, zorder=3)
    ax.axhline(common.LECTURE_ACCURACY, color="red", linestyle="--", label=f"lecture, 5 layers ({common.LECTURE_ACCURACY})")
    ax.set_xticks(range(len(groups)), [show(group_by, g) for g in groups])
    ax.set(xlabel=SETTING_NAMES.get(group_by, group_by), ylabel="final test accuracy",
           title=f"MNIST test accuracy vs {SETTING_NAMES.get(group_by, group_by)}")
    ax.legend(loc="best", fontsize=8)


def draw_epochs(fig, rect, configs, fields):
    """Test accuracy after each epoch, one line per configuration (the mean over its seeds)."""
    ax, = axes_grid(fig, rect, 1)
    for c in configs:
        curves = np.array([run["test_accuracy"] for run in c.runs], dtype=float)
        epochs = np.arange(1, curves.shape[1] + 1)
        ax.plot(epochs, curves.mean(axis=0), marker="o", markersize=4, label=c.label(fields))
    ax.set_xticks(range(1, max(len(run["test_accuracy"]) for c in configs for run in c.runs) + 1))
    ax.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy per epoch")
    ax.title.set_fontsize(10)
    ax.legend(loc="best", fontsize=7, ncol=1 + len(configs) // 8)


def draw_gradient_flow(fig, rect, configs, fields):
    """Two panels side by side, per configuration (means over its seeds, one colour each): the
    last epoch's weight-gradient norm of each Linear layer (log scale: they span decades), and
    the fraction of dead units of each hidden layer (a 1-layer MLP has none: no line there)."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    grads, dead = axes_grid(fig, rect, 2)
    for c in configs:
        norms = np.mean([run["weight_grad_norm"][-1] for run in c.runs], axis=0)
        line, = grads.plot(np.arange(1, len(norms) + 1), norms, marker="o", label=c.label(fields))
        fractions = np.mean([run["dead_relu_fraction"][-1] for run in c.runs], axis=0)
        if len(fractions):
            dead.plot(np.arange(1, len(fractions) + 1), fractions, marker="o", color=line.get_color(),
                      label=line.get_label())
    grads.set_yscale("log")   # labelled 0.2, 0.3, 0.5 (not 2 x 10^-1): a decade or two show
    grads.yaxis.set_minor_locator(LogLocator(subs=(2, 3, 5)))
    for set_formatter in (grads.yaxis.set_major_formatter, grads.yaxis.set_minor_formatter):
        set_formatter(FormatStrFormatter("%g"))
    grads.set(xlabel="Linear layer (1 = next to the input)", ylabel="‖dL/dW‖",
              title="weight-gradient norm per Linear layer")
    dead.set(xlabel="hidden layer", ylabel="fraction of units",
             title="dead units per hidden layer")
    dead.set_ylim(bottom=0)
    for ax in (grads, dead):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.title.set_fontsize(10)
    grads.legend(loc="best", fontsize=7)


# --- writing: PDF pages and Markdown -------------------------------------------------------------

PAGE = (8.27, 11.69)    # A4, inches
MARGIN = 0.6
TEXT_SIZE, MONO_SIZE = 9, 7.5
TEXT_CHARS, MONO_CHARS = 105, 112      # characters that fit across the page at those sizes


def table_lines(header, rows, width=MONO_CHARS):
    """A table as aligned monospace lines, wrapping the widest columns' cells to fit ``width``."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    while sum(widths) + 2 * (len(widths) - 1) > width and max(widths) > 8:
        widths[widths.index(max(widths))] -= 1
    lines = []
    for k, row in enumerate([header, *rows]):
        cells = [textwrap.wrap(cell, w, break_on_hyphens=False) or [""] for cell, w in zip(row, widths)]
        for i in range(max(map(len, cells))):
            lines.append("  ".join((c[i] if i < len(c) else "").ljust(w) for c, w in zip(cells, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


# PDF styles: font size (points), line height (inches), matplotlib text properties
STYLES = {"title": (15, 0.32, dict(weight="bold")), "heading": (12, 0.26, dict(weight="bold")),
          "text": (TEXT_SIZE, 0.17, {}), "mono": (MONO_SIZE, 0.135, dict(family="monospace")),
          "caption": (8, 0.16, dict(style="italic"))}
GAP = 0.12   # inches after a block


def pdf_lines(block):
    """A block as the PDF draws it: ``(style, text)`` lines, or the FigureBlock itself."""
    if isinstance(block, FigureBlock):
        return [block] + ([("caption", block.caption)] if block.caption else [])
    kind, *content = block
    if kind in ("title", "heading"):
        return [(kind, content[0])]
    if kind == "paragraph":
        return [("text", line) for line in textwrap.wrap(content[0], TEXT_CHARS, break_on_hyphens=False)]
    if kind == "table":
        return [("mono", line) for line in table_lines(*content)]
    if kind == "command":
        return [("mono", line) for line in textwrap.wrap(content[0], MONO_CHARS, break_on_hyphens=False)]
    lines = []   # code: numbered, long lines continued on the next with ">"
    for number, line in enumerate(content[0].rstrip("\n").splitlines(), 1):
        pieces = textwrap.wrap(line, MONO_CHARS - 5, drop_whitespace=False, replace_whitespace=False) or [""]
        lines += [("mono", f"{number:>3}  {piece}" if k == 0 else f"   > {piece}") for k, piece in enumerate(pieces)]
    return lines


def kind_of(item):
    return "figure" if isinstance(item, FigureBlock) else item[0]


def height(lines):
    return sum(item.height if isinstance(item, FigureBlock) else STYLES[item[0]][1] for item in lines)


def pdf_pages(blocks):
    """The blocks laid out top to bottom on A4 Figures, a new page when the next line or figure
    does not fit; a heading starts a page when what follows it would not fit after it."""
    from matplotlib.figure import Figure

    pages, y = [], PAGE[1]   # y: inches from the top of the current page; no page yet
    laid_out = [pdf_lines(block) for block in blocks]
    bottom = PAGE[1] - MARGIN

    def room(needed):
        nonlocal y
        if y + needed > bottom:
            pages.append(Figure(figsize=PAGE))
            pages[-1].text(0.5, 0.3 / PAGE[1], f"page {len(pages)}", ha="center", fontsize=7, color="gray")
            y = MARGIN
        return y

    for i, lines in enumerate(laid_out):
        if lines and kind_of(lines[0]) == "heading":   # kept with the next block (its first 2 inches, or its figure)
            following = laid_out[i + 1] if i + 1 < len(laid_out) else []
            if following and kind_of(following[0]) == "text" and i + 2 < len(laid_out):
                following = following + laid_out[i + 2]
            needed = height(lines) + min(height(following), max(2.0, height(f for f in following
                                                                             if isinstance(f, FigureBlock))))
            room(needed + GAP)
            y += GAP if y > MARGIN else 0
        for item in lines:
            if isinstance(item, FigureBlock):
                top = room(item.height + (STYLES["caption"][1] if item.caption else 0))
                item.draw(pages[-1], (MARGIN / PAGE[0], 1 - (top + item.height) / PAGE[1],
                                      1 - 2 * MARGIN / PAGE[0], item.height / PAGE[1]))
                y += item.height
                continue
            kind, text = item
            size, line_height, properties = STYLES[kind]
            top = room(line_height)
            pages[-1].text(MARGIN / PAGE[0], 1 - top / PAGE[1], text, va="top", fontsize=size, **properties)
            y += line_height
        y += GAP
    return pages


def write_pdf(blocks, path):
    from matplotlib.backends.backend_pdf import PdfPages

    pages = pdf_pages(blocks)
    metadata = {"Title": blocks[0][1], "Creator": "tinygrad_edu examples/sweep_report.py",
                "CreationDate": None}   # no date: the same runs give the same bytes
    with atomic_path(path) as tmp, PdfPages(tmp, metadata=metadata) as pdf:
        for page in pages:
            pdf.savefig(page)


def markdown_cell(text):
    return text.replace("|", "\\|")


def write_markdown(blocks, path):
    """report.md, and each figure as a PNG beside it; returns the PNGs' paths."""
    from matplotlib.figure import Figure as MatplotlibFigure

    out, pngs = [], []
    for block in blocks:
        if isinstance(block, FigureBlock):
            fig = MatplotlibFigure(figsize=(PAGE[0] - 2 * MARGIN, block.height))
            block.draw(fig, (0, 0, 1, 1))
            atomic_savefig(fig, path.parent / block.file_name, dpi=110)
            pngs.append(path.parent / block.file_name)
            out.append(f"![{block.file_name}]({block.file_name})\n")
            if block.caption:
                out.append(f"*{block.caption}*\n")
            continue
        kind, *content = block
        if kind == "title":
            out.append(f"# {content[0]}\n")
        elif kind == "heading":
            out.append(f"## {content[0]}\n")
        elif kind == "paragraph":
            out.append(content[0] + "\n")
        elif kind == "table":
            header, rows = content
            out.append("\n".join("| " + " | ".join(map(markdown_cell, row)) + " |"
                                 for row in [header, ["---"] * len(header), *rows]) + "\n")
        elif kind == "command":
            out.append(f"```\n{content[0]}\n```\n")
        elif kind == "code":
            out.append(f"```python\n{content[0].rstrip()}\n```\n")
    atomic_write_text(path, "\n".join(out))
    return pngs


def write_report(results, out_dir, *, command_line, group_by="layers", model_source):
    """Write ``out_dir/report.pdf`` and ``out_dir/report.md`` (its figures as report_*.png beside
    it), each atomically, from the sweep's ``results`` (run dicts, each with its ``provenance``).

    ``command_line``: the sweep's (sys.argv); ``group_by``: the setting on the figure's x axis and
    first in the table; ``model_source``: the trained class's code (see ``model_source()``).
    Everything is checked before anything is written: bad runs raise ValueError naming the run and
    the field. Returns ``{"pdf": path, "md": path}``."""
    if not isinstance(model_source, str) or not model_source.strip():
        raise TypeError(f"write_report: model_source must be the model class's source code (a non-empty "
                        f"str, from model_source(make_model)), got {model_source!r:.80}")
    if isinstance(command_line, str) or not all(isinstance(arg, str) for arg in command_line):
        raise TypeError(f"write_report: command_line must be a list of str (sys.argv), got {command_line!r:.80}")
    blocks = build_report(results, command_line, group_by, model_source)
    out_dir = Path(out_dir)
    paths = {"pdf": out_dir / "report.pdf", "md": out_dir / "report.md"}
    write_pdf(blocks, paths["pdf"])
    write_markdown(blocks, paths["md"])
    return paths
