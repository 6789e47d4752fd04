"""Draw the computation graph that ``backward()`` walks: inline in Jupyter, as SVG, PNG or DOT.

What a computation graph is
---------------------------
Every op on a tensor that requires a gradient is recorded: the result's ``grad_fn`` is the
``Function`` that made it, and ``grad_fn.parents`` are its input tensors. Following ``parents``
from the loss back to the leaves (the tensors the user made: inputs and weights) walks the whole
graph: ``backward()`` walks the same edges the other way, applying each op's derivative rule.
Here tensors are boxes and ops are rounded boxes labelled with the rule from their docstring::

    from tinygrad_edu.viz import draw_graph
    g = draw_graph(loss, model=model)     # shows itself in Jupyter; after backward(), with .grad
    g.save("graph.svg"); g.save("graph.png"); print(g.to_dot())

The picture is made in four steps, each a section below: walk the graph into nodes and edges;
group the nodes by the module whose parameters they read (drawn as one labelled box, or
collapsed into one node); lay the nodes out in layers; draw them with matplotlib.

Why grandalf for the layout: it is pure Python (no Graphviz binary to install), its Sugiyama
layout is the layered layout Graphviz's ``dot`` makes (each edge pointing down, few crossings),
it takes every node's own width and height, and it routes an edge that skips layers through
dummy points so that it goes around the nodes between. (networkx has no layered layout, and
igraph's ``layout_sugiyama`` ignores node widths.) Labels are in a monospace font, so a label's
size is its number of characters and lines. It is an optional extra:
``pip install "tinygrad_edu[viz]"``.
"""

import io
import re
import textwrap
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from . import fast, ops
from .handgrad import compare as gradient_errors
from .tensor import Tensor, _FreedGraph
from .utils.files import atomic_path

COLLAPSE_ABOVE = 40      # collapse=None collapses the modules of a graph with more nodes than this
AGREE, CLOSE = 1e-6, 1e-3   # relative error of a hand gradient: green up to AGREE, amber to CLOSE
FONT = 8                 # points; a monospace character is 0.6 em wide, a line 1.2 em high
CHAR_W, LINE_H, PAD = 0.6 * FONT, 1.2 * FONT, 5
RULE_WIDTH = 36          # characters per line of a derivative rule

STYLES = {   # kind: (fill colour, legend entry)
    "input": ("#dbeafe", "input (no grad)"), "parameter": ("#ede9fe", "parameter / leaf"),
    "tensor": ("#ffffff", "intermediate"), "root": ("#fce7f3", "loss (the root)"),
    "op": ("#f3f4f6", "op: derivative rule"), "module": ("#ddd6fe", "module (collapsed)"),
}
VERDICTS = {"agree": "#86efac", "close": "#fcd34d", "wrong": "#fca5a5", "no grad": "#e5e7eb"}


# --- derivative rules, from the ops' docstrings --------------------------------------------------
# These fast ops describe their rule in terms of the kernels; the plain op they stand for (same
# numbers, tests/test_fast.py) has it in the ops.py form. fast.CrossEntropy has its own.
STANDS_FOR = {fast.Linear: ops.Linear, fast.ReLU: ops.ReLU, fast.Conv2d: ops.Conv2d,
              fast.MaxPool2d: ops.MaxPool2d}


def derivative_rule(op):
    """The derivative rule of an op class, read from its docstring, in one line.

    ops.py writes ``"formula;  derivative. More words."``: the rule is after the first ``;`` of
    the first paragraph that is not inside brackets; an op whose formula fills its first paragraph
    gives the rule in the second. Only the first sentence is kept, up to any ``:`` that starts an
    explanation."""
    paragraphs = (STANDS_FOR.get(op, op).__doc__ or "").strip().split("\n\n")
    depth, rule = 0, ""
    for i, char in enumerate(paragraphs[0]):
        depth += (char == "(") - (char == ")")
        if char == ";" and depth == 0:
            rule = paragraphs[0][i + 1:]
            break
    if not rule and len(paragraphs) > 1:
        rule = paragraphs[1]
    rule = re.sub(r"\s*\n\s*", " ", rule.strip())
    return re.split(r"\.\s|\.$|:\s", rule)[0]


def _rule_lines(rule):
    """A rule in lines of at most RULE_WIDTH characters: one per gradient (``dy/da = b,  dy/db =
    a``), a long one broken before its `` = `` signs (not those inside brackets), then between
    words; at most four lines."""
    lines = []
    for part in re.split(r",\s{2,}", rule):
        pieces = []
        for token in part.split(" = "):
            opened = pieces and sum(map(pieces[-1].count, "([")) > sum(map(pieces[-1].count, ")]"))
            if pieces and (opened or len(part) <= RULE_WIDTH):
                pieces[-1] += " = " + token
            else:
                pieces.append(("= " if pieces else "") + token)
        for piece in pieces:
            lines += textwrap.wrap(piece, RULE_WIDTH, break_on_hyphens=False)
    return lines if len(lines) <= 4 else lines[:3] + [lines[3][:RULE_WIDTH - 3] + "..."]


# --- walk the graph: nodes and edges -------------------------------------------------------------
class Node:
    """One box of the picture: a tensor, an op, or a collapsed module. ``lines`` is its label."""

    def __init__(self, key, kind, lines, verdict=None):
        self.key, self.kind, self.lines, self.verdict, self.group = key, kind, lines, verdict, None
        self.fill = VERDICTS[verdict] if verdict else STYLES[kind][0]
        self.width = max(map(len, lines)) * CHAR_W + 2 * PAD
        self.height = len(lines) * LINE_H + 2 * PAD


def _walk(root):
    """Every tensor and op reachable from ``root``, and the edges input -> op -> output.

    An explicit stack, not recursion: a graph 10,000 ops deep must not hit the recursion limit.
    Tensors and ops are known by themselves (both hash by identity), as dict keys and in sets."""
    if isinstance(root._ctx, _FreedGraph):
        raise RuntimeError(_FREED_MESSAGE)
    tensors, functions, edges, seen = [root], [], [], {root}
    stack = [root]
    while stack:
        t = stack.pop()
        fn = t._ctx
        if fn is None:
            continue
        if isinstance(fn, _FreedGraph):
            raise RuntimeError(_FREED_MESSAGE)
        functions.append(fn)
        edges.append((fn, t))
        for parent in fn.parents:
            edges.append((parent, fn))
            if parent not in seen:
                seen.add(parent)
                tensors.append(parent)
                stack.append(parent)
    return tensors, functions, edges


_FREED_MESSAGE = ("draw_graph: this graph was freed by backward(); call draw_graph before "
                  "backward(), or pass backward(retain_graph=True) to keep the graph")


def _summary(a):
    """The values of a tiny array, else its mean and range."""
    a = np.asarray(a)
    if a.size == 0:
        return "empty"
    if a.size <= 4:
        return "[" + ", ".join(f"{v:.4g}" for v in a.ravel().tolist()) + "]" if a.ndim else f"{a.item():.4g}"
    a = a.astype(np.float64)
    return f"mean {a.mean():.3g} in [{a.min():.3g}, {a.max():.3g}]"


def _tensor_node(key, t, is_root, name, hand):
    """A tensor's box: what it is, shape and dtype, its values, and its gradient where it has one;
    with ``hand`` (a hand-derived gradient) also that, the relative error, and its colour."""
    if is_root:
        kind = "root"
    elif t._ctx is not None:
        kind = "tensor"
    else:
        kind = "parameter" if name or t.requires_grad else "input"
    root_title = "loss" if t.data.size == 1 else "output"
    title = name or {"root": root_title, "parameter": "leaf", "input": "input"}.get(kind, "")
    lines = [f"{title} {tuple(t.shape)} {t.dtype}".strip(), "data " + _summary(t.data)]
    if t.grad is not None:
        lines.append("grad " + _summary(t.grad.data))
    verdict = None
    if hand is not None:
        lines.append("hand " + _summary(hand))
        if t.grad is None:
            verdict = "no grad"
            lines.append("no .grad yet: call backward()")
        else:
            error = gradient_errors({name: t.grad.data}, {name: hand})[0].max_rel_diff
            verdict = "agree" if error <= AGREE else "close" if error <= CLOSE else "wrong"
            lines.append(f"rel err {error:.2g}: {verdict}")
    return Node(key, kind, lines, verdict)


def _op_node(key, fn):
    return Node(key, "op", [type(fn).__name__] + _rule_lines(derivative_rule(type(fn))))


# --- groups: the module each node belongs to ----------------------------------------------------
def _module_label(name, module):
    """``fc1: Linear(784, 512)``: the module's extra_repr without keywords and flags."""
    args = re.sub(r",?\s*\b\w+=(True|False)\b|\b\w+=", "", module.extra_repr()).strip(", ")
    label = f"{name}: {type(module).__name__}({args})"
    return label if len(label) <= 40 else label[:37] + "..."


def _match_compare(compare, params):
    """``compare`` as {parameter name: hand gradient shaped like the parameter}.

    Keys are parameter names (``"fc1.weight"``). A dict whose keys are *all* other names is
    matched by position instead, in ``model.parameters()`` order: the lecture's ShallowNet's
    ``{"W1", "b1", "W2", "b2"}`` against its ``module()``'s ``0.weight, 0.bias, 2.weight,
    2.bias``; each gradient must then have as many numbers as its parameter (W2 (h,) is
    2.weight (1, h))."""
    unknown = [k for k in compare if k not in params]
    if unknown and len(unknown) == len(compare) == len(params):
        names = list(params)
    elif unknown:
        raise KeyError(f"draw_graph: compare key(s) {unknown} name no parameter of the model "
                       f"(its parameters: {list(params)})")
    else:
        names = list(compare)
    matched = {}
    for name, (key, hand) in zip(names, compare.items()):
        hand, shape = np.asarray(hand), params[name].shape
        if hand.size != int(np.prod(shape)):
            raise ValueError(f"draw_graph: compare[{key!r}] has shape {hand.shape}, but parameter "
                             f"{name} has shape {shape}")
        matched[name] = hand.reshape(shape)
    return matched


def build_nodes(root, model=None, compare=None, collapse=None):
    """The nodes, edges and module groups of the picture (what ``draw_graph`` lays out).

    A parameter belongs to its module (``fc1.weight`` to ``fc1``); an op belongs to the module
    of the parameters it reads, with its output (``Linear`` reading fc1.weight and fc1.bias).
    A collapsed module is one node; edges into and out of it go to that node."""
    tensors, functions, edges = _walk(root)
    params = dict(model.named_parameters()) if model is not None else {}
    modules = dict(model.named_modules()) if model is not None else {}
    hands = _match_compare(compare, params) if compare else {}
    name_of = {p: n for n, p in params.items()}   # tensors and ops are keys by identity
    group_of = {p: n.rpartition(".")[0] or None for n, p in params.items()}
    for fn in functions:   # an op and its output join the one module whose parameters it reads
        owners = {group_of.get(p) for p in fn.parents if p in name_of}
        if len(owners) == 1:
            group_of[fn] = owners.pop()
    for fn, out in (e for e in edges if isinstance(e[1], Tensor)):
        if out is not root and fn in group_of:
            group_of[out] = group_of[fn]
    key = {x: f"{'t' if isinstance(x, Tensor) else 'f'}{i}" for i, x in enumerate(tensors + functions)}
    nodes = [_tensor_node(key[t], t, t is root, name_of.get(t), hands.get(name_of.get(t)))
             for t in tensors] + [_op_node(key[fn], fn) for fn in functions]
    for node, x in zip(nodes, tensors + functions):
        node.group = group_of.get(x)
    if collapse is None:
        collapse = len(nodes) > COLLAPSE_ABOVE
    if collapse is True:
        collapse = sorted({n.group for n in nodes if n.group})
    unknown = [m for m in collapse or () if m not in modules or not m]
    if unknown:
        raise ValueError(f"draw_graph: collapse names {unknown}, which are not modules of the model "
                         f"(its modules: {[m for m in modules if m]})")
    merged = {}   # collapsed module -> its nodes (the outermost listed module holding each)
    for node in nodes:
        outer = [m for m in collapse or () if node.group and (node.group + ".").startswith(m + ".")]
        if outer:
            merged.setdefault(min(outer, key=len), []).append(node)
    into = {node.key: "m:" + name for name, members in merged.items() for node in members}
    nodes = [n for n in nodes if n.key not in into]
    for name, members in merged.items():
        verdicts = [n.verdict for n in members if n.verdict]
        lines = [_module_label(name, modules[name])]
        lines += [f"{p_name[len(name) + 1:]}.grad norm {np.linalg.norm(p.grad.data):.3g}"
                  for p_name, p in params.items()   # how much gradient reached the module
                  if p_name.startswith(name + ".") and p.grad is not None]
        worst = max(verdicts, key=list(VERDICTS).index) if verdicts else None
        if worst:   # the worst verdict among its compared parameters
            lines.append(f"hand gradients: {worst}")
        nodes.append(Node("m:" + name, "module", lines, verdict=worst))
    links = {}   # an ordered set of (from, to) keys
    for a, b in edges:
        a, b = key[a], key[b]
        a, b = into.get(a, a), into.get(b, b)
        if a != b:
            links[a, b] = None
    return nodes, list(links), {n: modules[n] for n in {x.group for x in nodes if x.group}}


# --- layout: layers, top (leaves) to bottom (root) ------------------------------------------------
class _Box:
    """What grandalf needs of a node (its ``view``): a size, and room for the centre it picks."""

    def __init__(self, w, h):
        self.w, self.h, self.xy = w, h, (0.0, 0.0)


class _Route:
    """What grandalf needs of an edge: a place for the polyline it routes."""

    def setpath(self, points):
        self.points = points


def _layout(nodes, links):
    """Centres {key: (x, y)} and edge polylines {(a, b): points}, y growing downwards."""
    try:
        from grandalf.graphs import Edge, Graph, Vertex
        from grandalf.layouts import SugiyamaLayout
        from grandalf.routing import route_with_lines
    except ImportError as error:
        raise ImportError('draw_graph lays graphs out with grandalf: pip install "tinygrad_edu[viz]"') from error
    vertices = {n.key: Vertex(n.key) for n in nodes}
    for n in nodes:
        vertices[n.key].view = _Box(n.width, n.height)
    edges = {(a, b): Edge(vertices[a], vertices[b]) for a, b in links}
    for e in edges.values():
        e.view = _Route()
    graph = Graph(list(vertices.values()), list(edges.values()))
    left = 0.0
    for component in graph.C:   # one, unless model= names parameters the root does not use
        sugiyama = SugiyamaLayout(component)
        sugiyama.xspace, sugiyama.yspace = 14, 26
        sugiyama.route_edge = route_with_lines
        sugiyama.init_all(roots=[v for v in component.sV if not v.e_in()], optimize=True)
        for _ in range(3):   # sweeps up and down the layers, reordering them to cut crossings
            for _ in sugiyama.ordering_step():
                pass
        sugiyama.setxy()
        for layer in sugiyama.layers:   # setxy averages four placements, which can overlap
            views = sorted((v.view for v in layer), key=lambda view: view.xy[0])
            for before, view in zip(views, views[1:]):
                least = before.xy[0] + (before.w + view.w) / 2 + sugiyama.xspace
                view.xy = (max(view.xy[0], least), view.xy[1])
        sugiyama.draw_edges()
        views = [v.view for v in component.sV]
        shift = left - min(v.xy[0] - v.w / 2 for v in views)
        for v in views:
            v.xy = (v.xy[0] + shift, v.xy[1])
        for e in component.sE:
            e.view.points = [(x + shift, y) for x, y in e.view.points]
        left = max(v.xy[0] + v.w / 2 for v in views) + 30
    return ({k: v.view.xy for k, v in vertices.items()},
            {k: e.view.points for k, e in edges.items()})


# --- draw with matplotlib, on a Figure of our own (never pyplot: the user's backend is theirs) ----
MARGIN, GROUP_PAD, LEGEND_H = 12, 8, 26


def _figure(nodes, links, groups):
    """One matplotlib Figure of the graph, 1 point of layout = 1 point of paper (72 per inch)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch, Rectangle
    from matplotlib.path import Path as MplPath

    centres, routes = _layout(nodes, links)
    boxes = {n.key: (centres[n.key], n) for n in nodes}
    frames = {}   # expanded module -> its rectangle around its nodes (x0, y0, x1, y1)
    for name in groups:
        members = [(xy, n) for xy, n in boxes.values() if n.group == name]
        frames[name] = (min(x - n.width / 2 for (x, _), n in members) - GROUP_PAD,
                        min(y - n.height / 2 for (_, y), n in members) - GROUP_PAD - LINE_H,
                        max(x + n.width / 2 for (x, _), n in members) + GROUP_PAD,
                        max(y + n.height / 2 for (_, y), n in members) + GROUP_PAD)
    extents = [(x - n.width / 2, y - n.height / 2, x + n.width / 2, y + n.height / 2)
               for (x, y), n in boxes.values()] + list(frames.values())
    left, right = min(e[0] for e in extents), max(e[2] for e in extents)
    width = max(right - left + 2 * MARGIN, 460)   # at least the legend's width
    x0, y0 = (left + right - width) / 2, min(e[1] for e in extents) - MARGIN
    height = max(e[3] for e in extents) - y0 + MARGIN + LEGEND_H
    fig = Figure(figsize=(width / 72, height / 72))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(x0, x0 + width)
    ax.set_ylim(y0 + height, y0)   # y grows downwards, as in the layout
    ax.set_axis_off()
    for name, (fx0, fy0, fx1, fy1) in frames.items():
        ax.add_patch(Rectangle((fx0, fy0), fx1 - fx0, fy1 - fy0, facecolor="#f5f3ff",
                               edgecolor="#7c3aed", linestyle="--", linewidth=0.8, zorder=0))
        ax.text(fx1 - 4, fy0 + 3, _module_label(name, groups[name]), family="monospace",   # right:
                fontsize=FONT, color="#5b21b6", weight="bold", ha="right", va="top", zorder=0)   # edges come in left
    for points in routes.values():
        ax.add_patch(FancyArrowPatch(path=MplPath(points), arrowstyle="-|>", mutation_scale=8,
                                     linewidth=0.8, color="#4b5563", zorder=1))
    for (x, y), n in boxes.values():
        style = "round,pad=0,rounding_size=7" if n.kind == "op" else "square,pad=0"
        ax.add_patch(FancyBboxPatch((x - n.width / 2, y - n.height / 2), n.width, n.height,
                                    boxstyle=style, facecolor=n.fill, zorder=2,
                                    edgecolor="#be185d" if n.kind == "root" else "#374151",
                                    linewidth=1.8 if n.kind in ("root", "module") else 0.8))
        ax.text(x, y, "\n".join(n.lines), family="monospace", fontsize=FONT, ha="center",
                va="center", zorder=3, linespacing=1.2)
    shown = {n.kind for n in nodes} | {n.verdict for n in nodes if n.verdict}
    handles = [Patch(facecolor=fill, edgecolor="#374151", label=label)
               for kind, (fill, label) in STYLES.items() if kind in shown]
    handles += [Patch(facecolor=fill, edgecolor="#374151", label=f"hand gradient: {verdict}")
                for verdict, fill in VERDICTS.items() if verdict in shown]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=FONT - 1,
               frameon=False, handlelength=1.2, columnspacing=1.0)
    return fig


# --- the result: shown in Jupyter, saved as SVG or PNG, exported as DOT ------------------------
class GraphDrawing:
    """A drawn computation graph. Jupyter shows it (``_repr_svg_``); ``save(path)`` writes
    ``.svg`` or ``.png`` by the suffix; ``to_dot()`` gives the same graph in Graphviz's language."""

    MAX_PNG_PIXELS = 8000   # the long side of a PNG; a huge graph gets a lower resolution

    def __init__(self, nodes, links, groups):
        self.nodes, self.links, self.groups = nodes, links, groups
        self._svg = None

    def _render(self, fmt):
        from matplotlib import rc_context
        fig = _figure(self.nodes, self.links, self.groups)
        dpi = min(150, self.MAX_PNG_PIXELS / max(fig.get_size_inches()))
        buffer = io.BytesIO()
        # labels as real <text> elements: searchable, selectable, and small files
        with rc_context({"svg.fonttype": "none", "svg.hashsalt": "tinygrad_edu"}):
            fig.savefig(buffer, format=fmt, dpi=dpi, facecolor="white")
        return buffer.getvalue()

    def to_svg(self):
        if self._svg is None:
            self._svg = self._render("svg").decode()
        return self._svg

    def to_png(self):
        return self._render("png")

    def _repr_svg_(self):
        return self.to_svg()

    def save(self, path):
        """Write the picture to ``path`` (``.svg`` or ``.png``), whole or not at all."""
        path = Path(path)
        render = {".svg": lambda: self.to_svg().encode(), ".png": self.to_png}.get(path.suffix.lower())
        if render is None:
            raise ValueError(f"save: path must end in .svg or .png, got {str(path)!r}")
        data = render()   # made before the file is opened: an error leaves no file behind
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        return path

    def to_dot(self):
        """The graph in the DOT language, for ``dot -Tpdf`` where Graphviz is installed; each
        expanded module is a cluster."""
        def quoted(text):
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

        def statement(n):
            shape = "box, style=\"rounded,filled\"" if n.kind == "op" else "box, style=filled"
            return f'  {quoted(n.key)} [label={quoted(chr(10).join(n.lines))}, shape={shape}, ' \
                   f'fillcolor={quoted(n.fill)}];'.replace("\n", "\\n")
        lines = ["digraph computation {", '  node [fontname="monospace", fontsize=10];']
        lines += [statement(n) for n in self.nodes if n.group is None]
        for i, (name, module) in enumerate(self.groups.items()):
            lines.append(f"  subgraph cluster_{i} {{ label={quoted(_module_label(name, module))};")
            lines += ["  " + statement(n) for n in self.nodes if n.group == name]
            lines.append("  }")
        lines += [f"  {quoted(a)} -> {quoted(b)};" for a, b in self.links]
        return "\n".join(lines + ["}"]) + "\n"


def draw_graph(root, model=None, compare=None, collapse=None):
    """Draw the computation graph that ends at ``root`` (usually the loss).

    ``model``: an ``nn.Module``; its parameters are named by their path (``fc1.weight``) and the
    ops reading them are grouped by module. ``collapse``: True draws each module as one node
    (``fc1: Linear(784, 512)``), False as a box around its nodes, a list collapses the modules
    named; None (default) collapses when the graph has more than COLLAPSE_ABOVE nodes.
    ``compare``: {parameter name: hand-derived gradient}; each such parameter shows the hand
    gradient beside autograd's ``.grad``, coloured by their relative error (green up to AGREE,
    amber up to CLOSE, red beyond). Names are ``model.named_parameters()`` names, or, for a dict
    of other names (ShallowNet's W1, b1, W2, b2), matched by position (see ``_match_compare``)::

        net = ShallowNet(2, 3); model = net.module()
        loss = nn.BCELoss(reduction="sum")(model(Tensor(X)).reshape(-1), Tensor(Y))
        loss.backward(retain_graph=True)
        draw_graph(loss, model=model, compare=net.gradients_batch(X, Y))

    Draw before ``backward()``, or after ``backward(retain_graph=True)``: backward frees the graph.
    """
    if not isinstance(root, Tensor):
        raise TypeError(f"draw_graph: root must be a Tensor, got {type(root).__name__}")
    if model is not None and not callable(getattr(model, "named_parameters", None)):
        raise TypeError(f"draw_graph: model must be an nn.Module, got {type(model).__name__}")
    if compare is not None and not isinstance(compare, Mapping):
        raise TypeError(f"draw_graph: compare must be a dict of gradients, got {type(compare).__name__}")
    if (compare or isinstance(collapse, (list, tuple))) and model is None:
        raise ValueError("draw_graph: compare= and a list of modules to collapse need model=")
    if not (collapse is None or isinstance(collapse, (bool, list, tuple))):
        raise TypeError(f"draw_graph: collapse must be None, True, False or a list of module "
                        f"names, got {type(collapse).__name__}")
    return GraphDrawing(*build_nodes(root, model, compare, collapse))
