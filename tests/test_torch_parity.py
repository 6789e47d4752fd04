"""Parity with PyTorch (the reference): forward values, every gradient, optimizer trajectories.

Runs only where torch is importable; CI installs it so these run there.
"""

import numpy as np
import pytest

import tinygrad_edu as tg
from tinygrad_edu import nn, optim

torch = pytest.importorskip("torch")

@pytest.fixture(autouse=True, params=["fast layer", "plain ops"])
def path(request):
    """Every test here runs twice: with the fast layer (fast.py, when the C kernels are the
    backend) and with the plain ops of ops.py alone."""
    with tg.set_fast(request.param == "fast layer"):
        yield request.param


ACTIVATIONS = {"relu": (nn.ReLU, torch.nn.ReLU), "tanh": (nn.Tanh, torch.nn.Tanh),
               "sigmoid": (nn.Sigmoid, torch.nn.Sigmoid)}


def twin_mlps(depth, activation, sizes_in=7, hidden=6, out=3, seed=0):
    """The same random MLP in tinygrad_edu and in torch (float64, shared weights)."""
    rng = np.random.default_rng(seed)
    sizes = [sizes_in] + [hidden] * (depth - 1) + [out]
    ours, theirs = [], []
    act_ours, act_theirs = ACTIVATIONS[activation]
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        w, b = rng.standard_normal((n_out, n_in)), rng.standard_normal(n_out)
        lo, lt = nn.Linear(n_in, n_out).double(), torch.nn.Linear(n_in, n_out).double()
        lo.weight.data[...], lo.bias.data[...] = w, b
        with torch.no_grad():
            lt.weight.copy_(torch.from_numpy(w))
            lt.bias.copy_(torch.from_numpy(b))
        ours.append(lo)
        theirs.append(lt)
        if i < len(sizes) - 2:
            ours.append(act_ours())
            theirs.append(act_theirs())
    return nn.Sequential(*ours), torch.nn.Sequential(*theirs)


def assert_close(ours, theirs, rtol=1e-6):
    theirs = theirs.detach().numpy()
    scale = max(np.abs(theirs).max(), 1e-12)
    assert np.abs(ours - theirs).max() <= rtol * scale


@pytest.mark.parametrize("loss", ["cross_entropy", "bce", "mse"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_mlp_forward_and_every_gradient_match_torch(depth, activation, loss):
    rng = np.random.default_rng(depth)
    ours, theirs = twin_mlps(depth, activation, out=3 if loss == "cross_entropy" else 2)
    x = rng.standard_normal((8, 7))
    if loss == "cross_entropy":
        y = rng.integers(0, 3, 8)
        lo = nn.CrossEntropyLoss()(ours(tg.tensor(x)), tg.tensor(y))
        out_t = theirs(torch.from_numpy(x))
        lt = torch.nn.CrossEntropyLoss()(out_t, torch.from_numpy(y))
    elif loss == "bce":
        y = rng.integers(0, 2, (8, 2)).astype(np.float64)
        lo = nn.BCELoss()(ours(tg.tensor(x)).sigmoid(), tg.tensor(y))
        lt = torch.nn.BCELoss()(theirs(torch.from_numpy(x)).sigmoid(), torch.from_numpy(y))
    else:
        y = rng.standard_normal((8, 2))
        lo = nn.MSELoss()(ours(tg.tensor(x)), tg.tensor(y))
        lt = torch.nn.MSELoss()(theirs(torch.from_numpy(x)), torch.from_numpy(y))
    assert_close(lo.data, lt)
    lo.backward()
    lt.backward()
    for (name, po), pt in zip(ours.named_parameters(), theirs.parameters()):
        assert po.grad is not None, name
        assert_close(po.grad.data, pt.grad)


def test_ops_forward_and_backward_match_torch():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((3, 4)), rng.random((1, 4)) + 0.5
    ops = [lambda m, a, b: (a / b).log_softmax(1) * m.exp(a),
           lambda m, a, b: m.sqrt(b) ** 3 - a.softmax(0),
           lambda m, a, b: (a @ b.T).tanh() + a.max(1, keepdim=True)[0],
           lambda m, a, b: a.sigmoid()[[0, 2, 2]] * a.mean(0),
           lambda m, a, b: m.cat([a, b], 0).relu().sum(0)]
    for op in ops:
        ao, bo = tg.tensor(a, requires_grad=True), tg.tensor(b, requires_grad=True)
        at, bt = (torch.tensor(v, requires_grad=True) for v in (a, b))
        out_o, out_t = op(tg, ao, bo), op(torch, at, bt)
        assert_close(out_o.data, out_t)
        g = rng.standard_normal(out_o.shape)
        out_o.backward(g)
        out_t.backward(torch.from_numpy(g))
        for ours_leaf, torch_leaf in ((ao, at), (bo, bt)):
            assert (ours_leaf.grad is None) == (torch_leaf.grad is None)
            if ours_leaf.grad is not None:
                assert_close(ours_leaf.grad.data, torch_leaf.grad)


OPTIMIZERS = {
    "sgd": dict(lr=0.05),
    "sgd_momentum": dict(lr=0.05, momentum=0.9),
    "sgd_nesterov": dict(lr=0.05, momentum=0.9, nesterov=True),
    "sgd_dampening_decay": dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01),
    "adam": dict(lr=0.01),
    "adam_decay": dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_trajectories_match_torch_over_20_steps(name):
    kwargs = OPTIMIZERS[name]
    ours, theirs = twin_mlps(3, "tanh", seed=3)
    cls_o, cls_t = (optim.Adam, torch.optim.Adam) if name.startswith("adam") else (optim.SGD, torch.optim.SGD)
    opt_o, opt_t = cls_o(ours.parameters(), **kwargs), cls_t(theirs.parameters(), **kwargs)
    rng = np.random.default_rng(4)
    for _ in range(20):
        x, y = rng.standard_normal((5, 7)), rng.integers(0, 3, 5)
        opt_o.zero_grad()
        opt_t.zero_grad()
        nn.CrossEntropyLoss()(ours(tg.tensor(x)), tg.tensor(y)).backward()
        torch.nn.CrossEntropyLoss()(theirs(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt_o.step()
        opt_t.step()
    for po, pt in zip(ours.parameters(), theirs.parameters()):
        assert_close(po.data, pt, rtol=1e-9)


def test_linear_init_distribution_matches_torch_bounds():
    tg.manual_seed(0)
    torch.manual_seed(0)
    ours, theirs = nn.Linear(300, 200), torch.nn.Linear(300, 200)
    for po, pt in zip(ours.parameters(), theirs.parameters()):
        assert po.shape == tuple(pt.shape) and po.dtype == tg.float32
        t = pt.detach().numpy()
        assert abs(np.abs(po.data).max() - np.abs(t).max()) < 2e-3
        assert abs(po.data.std() - t.std()) < 2e-3
