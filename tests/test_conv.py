"""Convolutional layers against PyTorch: ``nn.Conv2d``, ``nn.MaxPool2d``, ``nn.AvgPool2d``,
``nn.Dropout`` and their ``nn.functional`` forms (issue 19).

Forward values and every gradient are compared with PyTorch in float64 (1e-6 relative) over
seeded random configurations; ``gradcheck`` checks each op's backward against finite differences;
the lecture's two ``nn.Sequential`` conv cells run as written. Tests that need torch take the
``torch`` fixture and skip without it; the others run everywhere.
"""

import re
from collections import OrderedDict

import numpy as np
import pytest

import tinygrad_edu as tg
import tinygrad_edu.nn.functional as F
from tinygrad_edu import nn, optim
from tinygrad_edu.autograd import gradcheck

from conftest import leaf


@pytest.fixture(autouse=True, params=["fast layer", "plain ops"])
def path(request):
    """Every test runs twice: with the fast layer (C kernels, where they exist) and with the
    plain NumPy ops alone."""
    with tg.set_fast(request.param == "fast layer"):
        yield request.param


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def assert_close(ours, theirs, rtol=1e-6):
    """Equal up to ``rtol`` of the largest magnitude in torch's ``theirs``."""
    theirs = theirs.detach().numpy()
    assert ours.shape == theirs.shape
    scale = max(np.abs(theirs).max(initial=0.0), 1e-12)
    assert np.abs(ours - theirs).max(initial=0.0) <= rtol * scale


def pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


# --- Conv2d against PyTorch over random configurations ------------------------------------------
def conv_out_size(size, kernel, stride, padding, dilation):
    if padding == "same":
        return size
    pad = 0 if padding == "valid" else padding
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def conv_config(n, c_in, c_out, h, w, kernel, stride=1, padding=0, dilation=1, groups=1, bias=True):
    """One Conv2d case: input (n, c_in, h, w), or (c_in, h, w) when n is None."""
    return dict(locals())


HAND_PICKED = [
    conv_config(1, 1, 20, 28, 28, 5),                                    # the lecture's first layer
    conv_config(1, 20, 64, 8, 8, 5),                                     # its second one
    conv_config(1, 64, 64, 5, 4, 3, padding=1, groups=64),               # depthwise, 64 channels
    conv_config(2, 3, 4, 7, 6, (4, 2), padding="same", bias=False),      # "same", odd total padding
    conv_config(2, 2, 2, 9, 9, 4, padding="same", dilation=3, groups=2),
    conv_config(None, 3, 5, 8, 7, 3, stride=2, padding=(1, 0), dilation=(2, 1)),   # a 3-D input
]


def random_conv_configs(count, seed=19):
    """Seeded random configurations with a non-empty output and N*C*H*W at most 5000."""
    rng = np.random.default_rng(seed)
    pick = lambda *options: options[int(rng.integers(len(options)))]   # noqa: E731
    configs = []
    while len(configs) < count:
        c_in = pick(1, 2, 3, 4, 6, 8) if rng.random() < 0.85 else pick(16, 32, 64)
        groups = pick(1, 1, 2, 2, c_in) if c_in % 2 == 0 else pick(1, 1, c_in)   # plain, 2 groups, depthwise
        c_out = groups * int(rng.integers(1, 4)) if groups > 1 else pick(1, 2, 5, 8, 64)
        kernel = (int(rng.integers(1, 8)), int(rng.integers(1, 8)))
        dilation = (pick(1, 1, 2, 3), pick(1, 1, 2, 3))
        padding = pick(0, 1, 2, 3, (int(rng.integers(4)), int(rng.integers(4))), "same", "valid")
        stride = 1 if padding == "same" else pick(1, 2, 3, (int(rng.integers(1, 4)), int(rng.integers(1, 4))))
        bias = bool(rng.random() < 0.7)
        n = pick(1, 12, 12, 12, None) if c_in <= 8 else pick(1, 1, None)
        spare = 13 if c_in <= 8 else 6                           # image size beyond the dilated kernel
        h, w = (int(rng.integers(1, spare)) + dilation[i] * (kernel[i] - 1) for i in (0, 1))
        if kernel[0] == kernel[1] and dilation[0] == dilation[1] and rng.random() < 0.5:
            kernel, dilation = kernel[0], dilation[0]            # the int forms
        pads = ("same",) * 2 if padding == "same" else pair(0 if padding == "valid" else padding)
        dims = zip((h, w), pair(kernel), pair(stride), pads, pair(dilation))
        if min(conv_out_size(*d) for d in dims) >= 1 and (n or 1) * c_in * h * w <= 5000:
            configs.append(conv_config(n, c_in, c_out, h, w, kernel, stride, padding, dilation, groups, bias))
    return configs


def conv_id(i, c):
    name = (f"{i}-N{c['n']}-{c['c_in']}to{c['c_out']}-{c['h']}x{c['w']}-k{c['kernel']}-s{c['stride']}-"
            f"p{c['padding']}-d{c['dilation']}-g{c['groups']}" + ("" if c["bias"] else "-nobias"))
    return name.replace(" ", "")


CONV_CONFIGS = HAND_PICKED + random_conv_configs(60 - len(HAND_PICKED))


@pytest.mark.filterwarnings("ignore:Using padding='same'")   # torch's note on an odd total padding
@pytest.mark.parametrize("index, c", [pytest.param(i, c, id=conv_id(i, c))
                                      for i, c in enumerate(CONV_CONFIGS)])
def test_conv2d_forward_and_every_gradient_match_torch(torch, index, c):
    """F.conv2d and nn.Conv2d (with torch's weights copied in): the output, dL/dx, dL/dW, dL/db."""
    rng = np.random.default_rng(index)
    kh, kw = pair(c["kernel"])
    x = rng.standard_normal(((c["n"],) if c["n"] else ()) + (c["c_in"], c["h"], c["w"]))
    w = rng.standard_normal((c["c_out"], c["c_in"] // c["groups"], kh, kw))
    b = rng.standard_normal(c["c_out"]) if c["bias"] else None
    args = {k: c[k] for k in ("stride", "padding", "dilation", "groups")}

    theirs = [torch.tensor(v, requires_grad=True) if v is not None else None for v in (x, w, b)]
    out_t = torch.nn.functional.conv2d(*theirs, **args)
    g = rng.standard_normal(tuple(out_t.shape))      # a random dL/doutput
    out_t.backward(torch.from_numpy(g))

    def check(out, leaves):
        out.backward(g)
        assert_close(out.data, out_t)
        for ours, t in zip(leaves, theirs):
            assert (ours is None) == (t is None)
            if t is not None:
                assert ours.grad is not None
                assert_close(ours.grad.data, t.grad)

    functional = [tg.tensor(v, requires_grad=True) if v is not None else None for v in (x, w, b)]
    check(F.conv2d(*functional, **args), functional)

    conv = nn.Conv2d(c["c_in"], c["c_out"], c["kernel"], bias=c["bias"], **args).double()
    assert conv.weight.shape == w.shape and (conv.bias is None) == (b is None)
    conv.weight.data[...] = w
    if b is not None:
        conv.bias.data[...] = b
    x_module = tg.tensor(x, requires_grad=True)
    check(conv(x_module), [x_module, conv.weight, conv.bias])


@pytest.mark.parametrize("c_in, c_out, kernel, groups, fan_in", [
    (16, 32, 3, 1, 16 * 9), (16, 32, 3, 2, 8 * 9), (4, 8, (3, 5), 1, 4 * 15), (6, 6, 5, 6, 25)])
def test_conv2d_init_shapes_and_pytorchs_uniform_bound(c_in, c_out, kernel, groups, fan_in):
    """W and b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in_channels/groups * kh * kw."""
    tg.manual_seed(0)
    conv = nn.Conv2d(c_in, c_out, kernel, groups=groups)
    assert conv.weight.shape == (c_out, c_in // groups) + pair(kernel) and conv.bias.shape == (c_out,)
    assert conv.weight.dtype == tg.float32 and conv.bias.dtype == tg.float32
    bound = 1 / np.sqrt(fan_in)
    weight, bias = conv.weight.data, conv.bias.data
    assert np.abs(weight).max() <= bound and np.abs(bias).max() <= bound
    assert np.abs(weight).max() > 0.9 * bound                          # the bound, not a smaller one
    assert abs(weight.std() - bound / np.sqrt(3)) < 0.1 * bound           # uniform: std = bound/sqrt(3)
    no_bias = nn.Conv2d(c_in, c_out, kernel, groups=groups, bias=False)
    assert no_bias.bias is None and [name for name, _ in no_bias.named_parameters()] == ["weight"]


def test_conv2d_repr_is_pytorchs():
    assert repr(nn.Conv2d(1, 20, 5)) == "Conv2d(1, 20, kernel_size=(5, 5), stride=(1, 1))"
    assert repr(nn.Conv2d(1, 20, 5, stride=2, padding=1, dilation=2, bias=False)) == (
        "Conv2d(1, 20, kernel_size=(5, 5), stride=(2, 2), padding=(1, 1), dilation=(2, 2), bias=False)")
    assert repr(nn.Conv2d(4, 8, 3, padding="same", groups=2)) == (
        "Conv2d(4, 8, kernel_size=(3, 3), stride=(1, 1), padding=same, groups=2)")


def test_unbatched_input_gives_unbatched_output(rng):
    x = tg.tensor(rng.standard_normal((3, 9, 8)))
    conv = nn.Conv2d(3, 5, 3, padding=1).double()
    assert conv(x).shape == (5, 9, 8)
    np.testing.assert_allclose(conv(x).data, conv(x.unsqueeze(0)).data[0], rtol=1e-12)
    for pool in (nn.MaxPool2d(2), nn.AvgPool2d(3, stride=1, padding=1)):
        np.testing.assert_allclose(pool(x).data, pool(x.unsqueeze(0)).data[0], rtol=1e-12)


# --- pooling ----------------------------------------------------------------------------------
def random_pool_configs(count, seed=7):
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < count:
        kernel = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        padding = (int(rng.integers(kernel[0] // 2 + 1)), int(rng.integers(kernel[1] // 2 + 1)))
        stride = [None, 1, 2, 3, (int(rng.integers(1, 4)), int(rng.integers(1, 4)))][int(rng.integers(5))]
        if kernel[0] == kernel[1] and padding[0] == padding[1] and rng.random() < 0.5:
            kernel, padding = kernel[0], padding[0]
        shape = ((3,) if rng.random() < 0.7 else ()) + (int(rng.integers(1, 4)),) + tuple(
            int(rng.integers(max(1, k - 2 * p), 12)) for k, p in zip(pair(kernel), pair(padding)))
        configs.append(dict(shape=shape, kernel=kernel, stride=stride, padding=padding))
    return configs


POOL_CONFIGS = random_pool_configs(30)


@pytest.mark.parametrize("config", POOL_CONFIGS,
                         ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()).replace(" ", ""))
@pytest.mark.parametrize("op", ["max", "avg"])
def test_pooling_forward_and_gradient_match_torch(torch, op, config, rng):
    x = rng.standard_normal(config["shape"])       # distinct values: no ties (those are below)
    args = dict(kernel_size=config["kernel"], stride=config["stride"], padding=config["padding"])
    x_t = torch.tensor(x, requires_grad=True)
    out_t = getattr(torch.nn.functional, f"{op}_pool2d")(x_t, **args)
    g = rng.standard_normal(tuple(out_t.shape))
    out_t.backward(torch.from_numpy(g))
    module = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}[op](**args)
    functional = getattr(F, f"{op}_pool2d")
    for pool in (lambda x: functional(x, **args), module):
        x_ours = tg.tensor(x, requires_grad=True)
        out = pool(x_ours)
        out.backward(g)
        assert_close(out.data, out_t)
        assert_close(x_ours.grad.data, x_t.grad)


def first_max_gradient(x, kernel, stride, padding):
    """Max pooling's gradient for dL/doutput = 1 as PyTorch's CPU kernel routes it: each window's
    whole gradient goes to its first maximum in row-major order (padding never wins)."""
    (kh, kw), (sh, sw), (ph, pw) = pair(kernel), pair(stride or kernel), pair(padding)
    *lead, height, width = x.shape
    grad = np.zeros_like(x)
    for index in np.ndindex(*lead):
        for top in range(-ph, height + ph - kh + 1, sh):
            for left in range(-pw, width + pw - kw + 1, sw):
                rows = range(max(top, 0), min(top + kh, height))
                cols = range(max(left, 0), min(left + kw, width))
                window = [(r, q) for r in rows for q in cols]            # in row-major order
                best = max(window, key=lambda rq: x[index + rq])         # max() keeps the first
                grad[index + best] += 1
    return grad


TIE_CASES = [(2, None, 0), (3, 1, 1), ((3, 2), (1, 2), (1, 0)), (4, 3, 2), (3, 2, 1)]


@pytest.mark.parametrize("kernel, stride, padding", TIE_CASES)
def test_max_pool_ties_go_to_the_first_maximum(kernel, stride, padding, rng):
    """Also where a window's maximum is -inf: the first real element gets the gradient, never the
    padding (padded with -inf, it ties with the real elements there)."""
    for x in (np.full((2, 3, 9, 8), 0.5), rng.integers(0, 3, (2, 3, 9, 8)).astype(np.float64),
              np.full((2, 3, 9, 8), -np.inf), np.where(rng.random((2, 3, 9, 8)) < 0.7, -np.inf, 1.0)):
        x_ours = tg.tensor(x, requires_grad=True)
        out = F.max_pool2d(x_ours, kernel, stride, padding)
        out.backward(np.ones(out.shape))
        np.testing.assert_array_equal(x_ours.grad.data, first_max_gradient(x, kernel, stride, padding))


@pytest.mark.parametrize("kernel, stride, padding", TIE_CASES)
def test_the_tie_rule_is_torchs(torch, kernel, stride, padding, rng):
    for x in (rng.integers(0, 3, (2, 3, 9, 8)).astype(np.float64), np.full((2, 3, 9, 8), -np.inf)):
        x_t = torch.tensor(x, requires_grad=True)
        torch.nn.functional.max_pool2d(x_t, kernel, stride, padding).sum().backward()
        np.testing.assert_array_equal(x_t.grad.numpy(), first_max_gradient(x, kernel, stride, padding))


# --- gradcheck: each op's backward against central differences -----------------------------------
def distinct(rng, *shape):
    """Values at least 0.1 apart, so no finite-difference step changes a window's maximum."""
    return tg.tensor(rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1, requires_grad=True)


GRADCHECKS = {
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b), [(2, 2, 5, 5), (3, 2, 3, 3), (3,)]),
    "conv2d stride 2 dilation 2": (lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1, dilation=2),
                                   [(2, 2, 7, 6), (3, 2, 3, 3), (3,)]),
    "conv2d groups 2 same": (lambda x, w: F.conv2d(x, w, padding="same", groups=2),
                             [(2, 4, 5, 5), (6, 2, 3, 2)]),
    "conv2d depthwise 3-D": (lambda x, w: F.conv2d(x, w, stride=(2, 1), groups=3), [(3, 5, 4), (3, 1, 2, 2)]),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 3, stride=2, padding=1), [(2, 2, 6, 5)]),
    "avg_pool2d 3-D": (lambda x: F.avg_pool2d(x, (2, 3)), [(2, 5, 6)]),
}


@pytest.mark.parametrize("name", sorted(GRADCHECKS))
def test_gradcheck(name, rng):
    fn, shapes = GRADCHECKS[name]
    assert gradcheck(fn, [leaf(rng, *shape) for shape in shapes])


@pytest.mark.parametrize("kernel, stride, padding", [(2, None, 0), (3, 1, 1), ((3, 2), 2, (1, 0))])
def test_gradcheck_max_pool2d(kernel, stride, padding, rng):
    assert gradcheck(lambda x: F.max_pool2d(x, kernel, stride, padding), [distinct(rng, 2, 2, 6, 5)])


# --- Dropout ----------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_statistics_scale_and_gradient(p, rng):
    n = 200_000
    x = tg.tensor(rng.random(n) + 0.5, requires_grad=True)           # no zeros: y == 0 means dropped
    tg.manual_seed(1)
    y = nn.Dropout(p)(x)
    kept = y.data != 0
    assert abs(kept.mean() - (1 - p)) < 4 * np.sqrt(p * (1 - p) / n)   # 4 standard errors
    np.testing.assert_allclose(y.data[kept], x.data[kept] / (1 - p), rtol=1e-12)   # inverted dropout
    assert abs(y.data.mean() - x.data.mean()) < 4 * y.data.std() / np.sqrt(n)
    ones = tg.ones(n, dtype=tg.float64, requires_grad=True)
    y = F.dropout(ones, p)
    y.sum().backward()
    np.testing.assert_array_equal(ones.grad.data, y.data / ones.data)   # the same mask, same scale


def test_dropout_eval_p0_p1_and_seed(rng):
    x = tg.tensor(rng.standard_normal((4, 50)), requires_grad=True)
    drop = nn.Dropout(0.3)
    assert drop.training
    drop.eval()
    assert np.array_equal(drop(x).data, x.data)                        # eval: identity, exactly
    assert np.array_equal(F.dropout(x, 0.3, training=False).data, x.data)
    assert np.array_equal(F.dropout(x, 0.0).data, x.data)
    y = F.dropout(x, 1.0)
    y.backward(np.ones(y.shape))
    assert not y.data.any() and not x.grad.data.any()                  # zeros, not 0 * inf = NaN
    masks = []
    for seed in (3, 3, 4):
        tg.manual_seed(seed)
        masks.append(nn.Dropout(0.5)(x).data != 0)
    assert np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[0], masks[2])


# --- errors -----------------------------------------------------------------------------------
def test_errors_name_the_problem():
    x = tg.zeros(1, 1, 28, 28)
    with pytest.raises(ValueError, match=re.escape("Conv2d(20, 64, 5) expects 20 input channels, got 1")):
        nn.Conv2d(20, 64, 5)(x)
    with pytest.raises(ValueError, match=re.escape("Conv2d(20, 64, 5) expects 20 input channels, got 1")):
        nn.Conv2d(20, 64, 5)(tg.zeros(1, 28, 28))
    with pytest.raises(ValueError, match="(?i)kernel"):                # 3x3 input, 5x5 kernel
        nn.Conv2d(1, 2, 5)(tg.zeros(1, 1, 3, 3))
    with pytest.raises(ValueError, match="(?i)kernel"):                # the dilated kernel spans 5
        nn.Conv2d(1, 2, 3, dilation=2)(tg.zeros(1, 1, 4, 4))
    assert nn.Conv2d(1, 2, 5, padding=1)(tg.zeros(1, 1, 3, 3)).shape == (1, 2, 1, 1)   # padded: fits
    with pytest.raises(ValueError, match="3D.*4D|3-D.*4-D"):
        nn.Conv2d(1, 2, 3)(tg.zeros(5, 5))
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        nn.Conv2d(3, 6, 3, groups=2)
    with pytest.raises(ValueError, match="out_channels must be divisible by groups"):
        nn.Conv2d(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match="groups must be a positive integer"):
        nn.Conv2d(4, 6, 3, groups=0)
    with pytest.raises(ValueError, match="padding='same' is not supported for strided convolutions"):
        nn.Conv2d(4, 6, 3, padding="same", stride=2)
    with pytest.raises(ValueError, match="Invalid padding string 'foo'"):
        nn.Conv2d(4, 6, 3, padding="foo")
    for mode in ("reflect", "replicate", "circular"):
        with pytest.raises(NotImplementedError, match=mode):
            nn.Conv2d(4, 6, 3, padding_mode=mode)
    with pytest.raises((ValueError, NotImplementedError), match="bogus"):   # torch: ValueError
        nn.Conv2d(4, 6, 3, padding_mode="bogus")
    for pool in (nn.MaxPool2d, nn.AvgPool2d):                          # at construction or call
        with pytest.raises(ValueError, match="at most half"):
            pool(4, padding=3)(tg.zeros(1, 1, 8, 8))
        with pytest.raises(ValueError, match="(?i)too small"):         # 2x2 input, 3x3 window
            pool(3)(tg.zeros(1, 1, 2, 2))
    for p in (1.5, -0.1):
        message = re.escape(f"dropout probability has to be between 0 and 1, but got {p}")
        with pytest.raises(ValueError, match=message):
            nn.Dropout(p)
        with pytest.raises(ValueError, match=message):
            F.dropout(tg.zeros(3), p)


# --- the lecture's Sequential cells, as written -------------------------------------------------
def lecture_sequential(nn):
    # Example of using Sequential
    model = nn.Sequential(
        nn.Conv2d(1, 20, 5),
        nn.ReLU(),
        nn.Conv2d(20, 64, 5),
        nn.ReLU()
    )
    return model


def lecture_sequential_ordered_dict(nn):
    # Example of using Sequential with OrderedDict
    model = nn.Sequential(OrderedDict([
        ('conv1', nn.Conv2d(1, 20, 5)),
        ('relu1', nn.ReLU()),
        ('conv2', nn.Conv2d(20, 64, 5)),
        ('relu2', nn.ReLU())
    ]))
    return model


LECTURE_CELLS = {lecture_sequential: ("0", "2"), lecture_sequential_ordered_dict: ("conv1", "conv2")}


@pytest.mark.parametrize("cell", LECTURE_CELLS, ids=lambda cell: cell.__name__)
def test_lecture_sequential_cells(cell):
    first, second = LECTURE_CELLS[cell]
    model = cell(nn)
    assert [(name, p.shape) for name, p in model.named_parameters()] == [
        (f"{first}.weight", (20, 1, 5, 5)), (f"{first}.bias", (20,)),
        (f"{second}.weight", (64, 20, 5, 5)), (f"{second}.bias", (64,))]
    assert model(tg.randn(1, 1, 28, 28)).shape == (1, 64, 20, 20)


def copy_torch_weights(ours, theirs):
    """Make both float64 and give ``ours`` the parameters of ``theirs``, name by name."""
    ours.double()
    theirs.double()
    pairs = list(zip(ours.named_parameters(), theirs.named_parameters()))
    assert [name for (name, _), _ in pairs] == [name for _, (name, _) in pairs]
    for (_, po), (_, pt) in pairs:
        po.data[...] = pt.detach().numpy()


@pytest.mark.parametrize("cell", LECTURE_CELLS, ids=lambda cell: cell.__name__)
def test_lecture_sequential_cells_match_torch(torch, cell, rng):
    torch.manual_seed(0)
    ours, theirs = cell(nn), cell(torch.nn)
    assert repr(ours) == repr(theirs)
    copy_torch_weights(ours, theirs)
    x = rng.random((12, 1, 28, 28))                               # an MNIST-shaped batch
    out_o, out_t = ours(tg.tensor(x)), theirs(torch.from_numpy(x))
    assert_close(out_o.data, out_t)
    g = rng.standard_normal(out_o.shape)
    out_o.backward(g)
    out_t.backward(torch.from_numpy(g))
    for po, pt in zip(ours.parameters(), theirs.parameters()):
        assert_close(po.grad.data, pt.grad)


# --- a small CNN trained for three steps beside its torch twin -----------------------------------
def small_cnn(nn):
    """Conv(1, 4, 3)-ReLU-MaxPool(2)-Flatten-Linear on 28x28 images, on the engine whose nn is given."""
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 13 * 13, 10))


def test_small_cnn_trains_like_torch(torch, rng):
    torch.manual_seed(0)
    ours, theirs = small_cnn(nn), small_cnn(torch.nn)
    copy_torch_weights(ours, theirs)
    opt_o = optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    opt_t = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        x, y = rng.random((12, 1, 28, 28)), rng.integers(0, 10, 12)
        opt_o.zero_grad()
        opt_t.zero_grad()
        loss_o = nn.CrossEntropyLoss()(ours(tg.tensor(x)), tg.tensor(y))
        loss_t = torch.nn.CrossEntropyLoss()(theirs(torch.from_numpy(x)), torch.from_numpy(y))
        assert_close(loss_o.data, loss_t)
        loss_o.backward()
        loss_t.backward()
        opt_o.step()
        opt_t.step()
    for po, pt in zip(ours.parameters(), theirs.parameters()):
        assert_close(po.data, pt)


def test_conv2d_refuses_mixed_dtypes_as_pytorch_does():
    """float64 images into a float32 layer: PyTorch raises rather than silently promote."""
    layer = nn.Conv2d(1, 2, 3)
    with pytest.raises(TypeError, match="conv2d: input dtype float64 differs from weight dtype float32"):
        layer(tg.zeros(1, 1, 5, 5, dtype=tg.float64))
    assert layer(tg.zeros(1, 1, 5, 5)).dtype == tg.float32
