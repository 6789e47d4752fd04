"""tinygrad_edu.viz: the drawn graph holds the right nodes, labels, colours and files."""

import inspect
import io
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

pytest.importorskip("grandalf")

import tinygrad_edu as tg
from tinygrad_edu import fast, nn, ops, viz
from tinygrad_edu.handgrad import ShallowNet
from tinygrad_edu.tensor import Function
from tinygrad_edu.viz import draw_graph
from test_lecture import lecture_mlp

SVG = "{http://www.w3.org/2000/svg}"


def svg_texts(drawing):
    """Every line of text in the drawing's SVG (parsed: it must be valid XML)."""
    return [t.text for t in ET.fromstring(drawing.to_svg()).iter(SVG + "text")]


def scalar_expression():
    """micrograd's example: e = tanh(a*b + c)."""
    a, b, c = (tg.tensor(v, requires_grad=True) for v in (2.0, -3.0, 10.0))
    return (a * b + c).tanh()


def shallow_case(rng, wrong=False):
    """The lecture's shallow net after backward, and its hand gradients (W1 spoiled if ``wrong``)."""
    net = ShallowNet(2, 3)
    X, Y = rng.standard_normal((5, 2)), (rng.random(5) > 0.5).astype(np.float64)
    model = net.module()
    loss = nn.BCELoss(reduction="sum")(model(tg.Tensor(X)).reshape(-1), tg.Tensor(Y))
    loss.backward(retain_graph=True)
    hand = net.gradients_batch(X, Y)
    if wrong:
        hand["W1"] = hand["W1"] * 1.5
    return loss, model, hand


def lecture_loss(rng):
    model = lecture_mlp(nn)()
    x = tg.Tensor(rng.standard_normal((4, 1, 28, 28)).astype(np.float32))
    return nn.CrossEntropyLoss()(model(x), tg.Tensor(rng.integers(0, 10, 4))), model


def op_classes(module):
    return [c for c in vars(module).values()
            if inspect.isclass(c) and issubclass(c, Function) and c.__module__ == module.__name__]


@pytest.mark.parametrize("op", op_classes(ops) + op_classes(fast), ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_every_op_has_a_derivative_rule(op):
    rule = viz.derivative_rule(op)
    assert rule and ";" not in rule and "``" not in rule


def test_rules_read_from_the_docstrings():
    assert viz.derivative_rule(ops.Tanh) == "d tanh(z)/dz = 1 - tanh(z)^2 = 1 - a^2"
    assert viz.derivative_rule(ops.Linear).startswith("dL/dx = dL/dy W")   # its second paragraph
    assert viz.derivative_rule(fast.Linear) == viz.derivative_rule(ops.Linear)
    assert viz.derivative_rule(fast.CrossEntropy) == "dL_n/dz_n = softmax(z_n) - onehot(t_n)"


def test_scalar_expression_before_and_after_backward():
    e = scalar_expression()
    before = svg_texts(draw_graph(e))
    assert {"Mul", "Add", "Tanh", "dy/da = b, dy/db = a", "data 2", "data -3", "data 10"} <= set(before)
    assert not any(line.startswith("grad") for line in before)
    assert "loss () float32" in before   # the root, named as what it is
    e.backward(retain_graph=True)
    after = svg_texts(draw_graph(e))
    expected = 1 - np.tanh(4.0) ** 2   # de/dc
    assert f"grad {expected:.4g}" in after and f"grad {expected * -3.0:.4g}" in after   # dc, da


def test_freed_graph_is_refused_with_the_fix():
    e = scalar_expression()
    e.backward()
    with pytest.raises(RuntimeError, match="before backward.*retain_graph=True"):
        draw_graph(e)


def test_deep_chain_is_walked_without_recursion():
    x = tg.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0
    nodes, links, _ = viz.build_nodes(y, collapse=False)
    assert len(nodes) == 1 + 3 * 10_000   # x, and per op: its constant 1.0, the op, its output
    assert len(links) == 3 * 10_000


def test_shallow_net_compare_colours_right_and_wrong(rng):
    loss, model, hand = shallow_case(rng)
    good = draw_graph(loss, model=model, compare=hand)
    verdicts = {n.lines[0].split()[0]: n.verdict for n in good.nodes if n.verdict}
    assert verdicts == dict.fromkeys(["0.weight", "0.bias", "2.weight", "2.bias"], "agree")
    texts = svg_texts(good)
    assert "Tanh" in texts and "Sigmoid" in texts and "BinaryCrossEntropy" in texts
    assert sum(t.startswith("rel err") for t in texts) == 4   # label lines, not the legend
    assert viz.VERDICTS["agree"] in good.to_svg()

    loss, model, hand = shallow_case(rng, wrong=True)
    bad = {n.lines[0].split()[0]: n.verdict for n in draw_graph(loss, model=model, compare=hand).nodes
           if n.verdict}
    assert bad["0.weight"] == "wrong" and bad["0.bias"] == "agree"


def test_compare_by_parameter_name_and_collapsed_verdict(rng):
    loss, model, hand = shallow_case(rng, wrong=True)
    by_name = {"0.weight": hand["W1"], "2.weight": hand["W2"].reshape(1, -1)}
    drawing = draw_graph(loss, model=model, compare=by_name, collapse=True)
    labels = {n.lines[0]: n.verdict for n in drawing.nodes if n.kind == "module"}
    assert labels == {"0: Linear(2, 3)": "wrong", "2: Linear(3, 1)": "agree"}


def test_compare_before_backward_says_so(rng):
    net = ShallowNet(2, 3)
    model = net.module()
    X = rng.standard_normal((3, 2))
    out = model(tg.Tensor(X)).sum()
    drawing = draw_graph(out, model=model, compare={"0.bias": np.zeros(3)})
    assert [n.verdict for n in drawing.nodes if n.verdict] == ["no grad"]


def test_lecture_mlp_collapsed_and_expanded(rng):
    loss, model = lecture_loss(rng)
    collapsed = draw_graph(loss, model=model, collapse=True)
    modules = sorted(n.lines[0] for n in collapsed.nodes if n.kind == "module")
    assert modules == ["fc1: Linear(784, 512)", "fc2: Linear(512, 256)", "fc3: Linear(256, 128)",
                       "fc4: Linear(128, 64)", "fc5: Linear(64, 10)"]
    assert set(modules) <= set(svg_texts(collapsed))
    assert not any("fc1.weight" in t for t in svg_texts(collapsed))
    assert not any("grad norm" in t for t in svg_texts(collapsed))   # before backward
    loss.backward(retain_graph=True)
    norm = np.linalg.norm(model.fc3.weight.grad.data)
    assert f"weight.grad norm {norm:.3g}" in svg_texts(draw_graph(loss, model=model, collapse=["fc3"]))
    expanded = draw_graph(loss, model=model, collapse=False)
    texts = svg_texts(expanded)
    assert "fc1.weight (512, 784) float32" in texts and "fc5.bias (10,) float32" in texts
    assert {"fc1: Linear(784, 512)", "fc5: Linear(64, 10)"} <= set(texts)   # the boxes' labels
    assert {n.group for n in expanded.nodes if n.lines[0] == "Linear"} == {f"fc{i}" for i in range(1, 6)}


def test_collapse_default_and_by_name(rng):
    loss, model = lecture_loss(rng)
    assert not any(n.kind == "module" for n in draw_graph(loss, model=model).nodes)   # 31 nodes
    wide = sum((loss * float(i) for i in range(1, 6)), loss)   # the same graph, 10 more nodes
    assert {n.kind for n in draw_graph(wide, model=model).nodes} >= {"module"}
    only = draw_graph(loss, model=model, collapse=["fc2", "fc4"])
    assert sorted(n.lines[0] for n in only.nodes if n.kind == "module") == \
        ["fc2: Linear(512, 256)", "fc4: Linear(128, 64)"]
    assert set(only.groups) == {"fc1", "fc3", "fc5"}


@pytest.mark.parametrize("fast_on", [True, False])
def test_fast_and_plain_paths(rng, fast_on):
    with tg.set_fast(fast_on):
        loss, model = lecture_loss(rng)
    ops_shown = {n.lines[0] for n in draw_graph(loss, model=model).nodes if n.kind == "op"}
    expected = {"CrossEntropy"} if fast_on and fast.enabled() else {"LogSoftmax", "NLLLoss"}
    assert expected <= ops_shown


def test_numpy_backend():
    code = ("import sys; sys.path.insert(0, 'tests'); import numpy as np, tinygrad_edu as tg\n"
            "from tinygrad_edu import nn, backend\nfrom tinygrad_edu.viz import draw_graph\n"
            "from test_lecture import lecture_mlp\nm = lecture_mlp(nn)()\n"
            "loss = nn.CrossEntropyLoss()(m(tg.Tensor(np.ones((2, 784), 'float32'))), tg.Tensor([1, 2]))\n"
            "loss.backward(retain_graph=True)\n"
            "print(backend.name(), sorted(n.lines[0] for n in draw_graph(loss, model=m).nodes if n.kind == 'op'))")
    env = dict(os.environ, TINYGRAD_EDU_BACKEND="numpy")
    out = subprocess.run([sys.executable, "-c", code], cwd=viz.__file__.rsplit("/tinygrad_edu/", 1)[0],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.startswith("numpy") and "'NLLLoss'" in out and "'CrossEntropy'" not in out


def not_blank(image):
    pixels = np.asarray(image.convert("RGB"))
    return bool((pixels != pixels[0, 0]).any())


def test_png_from_the_svg_and_from_save(rng, tmp_path):
    try:   # a real SVG renderer; it needs the system's cairo library (OSError without it)
        import cairosvg
    except (ImportError, OSError) as error:
        pytest.skip(f"cairosvg cannot render here: {error}")
    from PIL import Image
    loss, model, hand = shallow_case(rng)
    drawing = draw_graph(loss, model=model, compare=hand)
    rendered = Image.open(io.BytesIO(cairosvg.svg2png(bytestring=drawing.to_svg().encode())))
    assert not_blank(rendered) and 300 < rendered.width < 3000 and 300 < rendered.height < 3000
    saved = drawing.save(tmp_path / "graph.png")
    image = Image.open(saved)
    assert not_blank(image) and image.width > rendered.width   # 150 dpi against cairo's 96
    assert drawing.save(tmp_path / "graph.svg").read_text() == drawing._repr_svg_()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # pydot's parser calls old pyparsing names
def test_dot_parses_with_every_node(rng):
    pydot = pytest.importorskip("pydot")
    loss, model = lecture_loss(rng)
    for collapse in (True, False):
        drawing = draw_graph(loss, model=model, collapse=collapse)
        graph, = pydot.graph_from_dot_data(drawing.to_dot())
        subgraphs = graph.get_subgraphs()
        names = [n.get_name() for g in [graph] + subgraphs for n in g.get_nodes()]
        names = [n for n in names if n not in ("node", "edge", "graph")]
        assert len(names) == len(set(names)) == len(drawing.nodes)
        assert len(graph.get_edges()) == len(drawing.links)
        assert len(subgraphs) == (0 if collapse else 5)


def test_save_writes_nothing_on_error(tmp_path, monkeypatch):
    drawing = draw_graph(scalar_expression())
    with pytest.raises(ValueError, match=r"\.svg or \.png.*graph\.pdf"):
        drawing.save(tmp_path / "graph.pdf")
    target = tmp_path / "graph.png"
    target.write_bytes(b"old picture")

    def broken_savefig(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr("matplotlib.figure.Figure.savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        drawing.save(target)
    assert target.read_bytes() == b"old picture" and sorted(tmp_path.iterdir()) == [target]


def test_bad_arguments(rng):
    loss, model, hand = shallow_case(rng)
    with pytest.raises(TypeError, match="root must be a Tensor, got ndarray"):
        draw_graph(np.ones(3))
    with pytest.raises(TypeError, match="model must be an nn.Module, got dict"):
        draw_graph(loss, model={})
    with pytest.raises(TypeError, match="compare must be a dict"):
        draw_graph(loss, model=model, compare=[1])
    with pytest.raises(ValueError, match="need model="):
        draw_graph(loss, compare=hand)
    with pytest.raises(KeyError, match="'0.wieght'"):
        draw_graph(loss, model=model, compare={"0.weight": hand["W1"], "0.wieght": hand["W1"]})
    with pytest.raises(ValueError, match=r"compare\['0.bias'\] has shape \(2,\).*shape \(3,\)"):
        draw_graph(loss, model=model, compare={"0.bias": np.zeros(2)})
    with pytest.raises(ValueError, match=r"collapse names \['fc9'\]"):
        draw_graph(loss, model=model, collapse=["fc9"])
    with pytest.raises(TypeError, match="collapse must be"):
        draw_graph(loss, model=model, collapse="0")


def test_missing_grandalf_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "grandalf.graphs", None)   # import fails as if not installed
    with pytest.raises(ImportError, match=r'pip install "tinygrad_edu\[viz\]"'):
        draw_graph(scalar_expression()).to_svg()
