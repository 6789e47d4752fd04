"""Modules, layers and losses."""

import warnings
from collections import OrderedDict

import numpy as np
import pytest

import tinygrad_edu as tg
from tinygrad_edu import nn, optim
import tinygrad_edu.nn.functional as F

from conftest import leaf


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.act = nn.ReLU()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(2, 3)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.scale = nn.Parameter(tg.ones(1))
        self.head = nn.Sequential(nn.Linear(3, 1), nn.Sigmoid())

    def forward(self, x):
        x = self.first(x)
        for b in self.blocks:
            x = b.act(b.fc(x))[:, :3]
        return self.head(x * self.scale)


def test_named_parameters_dotted_and_in_definition_order():
    names = [n for n, _ in Net().named_parameters()]
    # as in PyTorch: a module's own parameters first, then each sub-module's, in definition order
    assert names == ["scale", "first.weight", "first.bias", "blocks.0.fc.weight", "blocks.0.fc.bias",
                     "blocks.1.fc.weight", "blocks.1.fc.bias", "head.0.weight", "head.0.bias"]
    net = Net()
    assert len(list(net.parameters())) == 9
    assert [type(m).__name__ for m in net.children()] == ["Linear", "ModuleList", "Sequential"]
    assert sum(isinstance(m, nn.Linear) for m in net.modules()) == 4


def test_get_submodule_finds_each_module_by_the_name_named_modules_gives():
    net = Net()
    for name, module in net.named_modules():
        assert net.get_submodule(name) is module
    assert net.get_submodule("blocks.1.fc") is net.blocks[1].fc
    with pytest.raises(AttributeError, match="Block has no submodule 'conv' \\(looking up 'blocks.0.conv'\\)"):
        net.get_submodule("blocks.0.conv")
    with pytest.raises(AttributeError, match="Linear has no submodule 'weight'"):
        net.get_submodule("first.weight")   # a parameter, not a module (as PyTorch refuses it)


def test_module_call_backward_and_zero_grad():
    net = Net()
    out = net(tg.randn(5, 2))
    assert out.shape == (5, 1)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_linear_init_is_pytorchs_uniform_bound():
    tg.manual_seed(0)
    lin = nn.Linear(784, 512)
    bound = 1 / np.sqrt(784)
    assert lin.weight.shape == (512, 784) and lin.bias.shape == (512,)
    for p in (lin.weight, lin.bias):
        assert p.dtype == tg.float32 and p.requires_grad
        assert np.abs(p.data).max() <= bound and np.abs(p.data).max() > 0.95 * bound
    assert abs(lin.weight.data.std() - bound / np.sqrt(3)) < 1e-3  # std of U(-b, b) is b/sqrt(3)


def test_plain_list_of_layers_warns_and_empty_optimizer_explains():
    class Lecture(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Linear(4, 4), nn.Linear(4, 2)]  # the lecture's bug

    with pytest.warns(UserWarning, match=r"Lecture\.layers .*nn\.ModuleList"):
        model = Lecture()
    with pytest.warns(UserWarning, match="Lecture.layers"):  # and again when the parameters are gathered
        assert list(model.parameters()) == []
    with pytest.raises(ValueError, match="optimizer got an empty parameter list.*ModuleList"), \
            pytest.warns(UserWarning):
        optim.SGD(model.parameters(), lr=0.01)

    class WithDict(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = {"a": nn.Linear(1, 1)}

    with pytest.warns(UserWarning, match="nn.ModuleDict"):
        WithDict()


def test_list_of_numbers_does_not_warn():
    class Sizes(nn.Module):
        def __init__(self):
            super().__init__()
            self.sizes = [784, 512, 10]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Sizes()


def test_module_list_operations():
    ml = nn.ModuleList([nn.Linear(1, 1)])
    ml.append(nn.ReLU())
    ml.extend([nn.Tanh(), nn.Linear(1, 2)])
    ml.insert(1, nn.Sigmoid())
    assert [type(m).__name__ for m in ml] == ["Linear", "Sigmoid", "ReLU", "Tanh", "Linear"]
    assert len(ml) == 5 and isinstance(ml[-1], nn.Linear)
    assert isinstance(ml[1:3], nn.ModuleList) and len(ml[1:3]) == 2
    assert [n for n, _ in ml.named_parameters()] == ["0.weight", "0.bias", "4.weight", "4.bias"]
    del ml[0]
    assert [n for n, _ in ml.named_parameters()] == ["3.weight", "3.bias"]


def test_sequential_positional_and_ordered_dict():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    named = nn.Sequential(OrderedDict([("hidden", nn.Linear(2, 3)), ("act", nn.ReLU())]))
    assert [n for n, _ in named.named_parameters()] == ["hidden.weight", "hidden.bias"]
    assert seq(tg.zeros(4, 2)).shape == (4, 1)
    assert len(seq) == 3 and isinstance(seq[0], nn.Linear) and len(seq[:2]) == 2
    assert repr(seq) == ("Sequential(\n  (0): Linear(in_features=2, out_features=3, bias=True)\n"
                         "  (1): ReLU()\n  (2): Linear(in_features=3, out_features=1, bias=True)\n)")


def test_state_dict_round_trip_and_errors():
    a, b = Net(), Net()
    b.load_state_dict(a.state_dict())
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and np.array_equal(pa.data, pb.data) and pa.data is not pb.data
    sd = a.state_dict()
    sd["first.weight"] = tg.zeros(5, 2)
    with pytest.raises(RuntimeError, match=r"first\.weight.*\(5, 2\).*\(3, 2\)"):
        b.load_state_dict(sd)
    sd = a.state_dict()
    del sd["scale"]
    sd["extra"] = tg.zeros(1)
    with pytest.raises(RuntimeError, match="(?s)missing key.*scale.*unexpected key.*extra"):
        b.load_state_dict(sd)
    result = b.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["scale"] and result.unexpected_keys == ["extra"]


def test_train_eval_double_float():
    net = Net()
    assert net.training and not net.eval().training and all(not m.training for m in net.modules())
    net.double()
    assert all(p.dtype == tg.float64 for p in net.parameters())
    assert net(tg.randn(2, 2).double()).dtype == tg.float64
    net.float()
    assert all(p.dtype == tg.float32 for p in net.parameters())


def test_softmax_modules_with_implicit_dim_warn():
    x = tg.randn(2, 3)
    with pytest.warns(UserWarning, match="dim"):
        y = nn.Softmax()(x)
    assert np.allclose(y.data.sum(1), 1)
    with pytest.warns(UserWarning, match="dim"):
        nn.LogSoftmax()(x)
    assert np.allclose(nn.LogSoftmax(dim=0)(x).data, np.log(nn.Softmax(dim=0)(x).data), atol=1e-6)


def test_flatten_identity_layers():
    x = tg.zeros(4, 1, 28, 28)
    assert nn.Flatten()(x).shape == (4, 784)
    assert nn.Identity()(x) is x


# --- losses -----------------------------------------------------------------------------------
LOSSES = ["cross_entropy", "nll", "bce", "bce_logits", "mse"]


def _loss_inputs(rng, name):
    if name in ("cross_entropy", "nll"):
        x = leaf(rng, 5, 4)
        return (x.log_softmax(1) if name == "nll" else x), x, tg.tensor(rng.integers(0, 4, 5))
    x = leaf(rng, 5, 3)
    target = tg.tensor(rng.random((5, 3)))
    return (x.sigmoid() if name == "bce" else x), x, target


def _loss_fn(name, reduction):
    return {"cross_entropy": nn.CrossEntropyLoss, "nll": nn.NLLLoss, "bce": nn.BCELoss,
            "bce_logits": nn.BCEWithLogitsLoss, "mse": nn.MSELoss}[name](reduction=reduction)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", LOSSES)
def test_loss_gradcheck_and_reductions(name, reduction, rng):
    _, x, target = _loss_inputs(rng, name)
    loss_fn = _loss_fn(name, reduction)
    prep = {"nll": lambda x: x.log_softmax(1), "bce": lambda x: x.sigmoid()}.get(name, lambda x: x)
    assert tg.gradcheck(lambda x: loss_fn(prep(x), target), [x])
    per_sample = _loss_fn(name, "none")(prep(x), target).data
    value = loss_fn(prep(x), target).data
    expected = {"mean": per_sample.mean(), "sum": per_sample.sum(), "none": per_sample}[reduction]
    assert np.allclose(value, expected)


def test_cross_entropy_values_and_stability():
    logits = tg.tensor([[2.0, 1.0, 0.1], [1e4, -1e4, 0.0]], requires_grad=True)
    labels = tg.tensor([0, 1])
    losses = F.cross_entropy(logits, labels, reduction="none")
    z = np.array([2.0, 1.0, 0.1])
    assert losses.data[0] == pytest.approx(-(z[0] - np.log(np.exp(z).sum())), rel=1e-6)
    assert losses.data[1] == pytest.approx(2e4)
    losses.sum().backward()
    assert np.all(np.isfinite(logits.grad.data))


def test_cross_entropy_backward_twice_on_a_retained_graph_adds_the_same_gradient():
    logits = tg.tensor([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]], requires_grad=True)
    loss = F.cross_entropy(logits, tg.tensor([0, 2]))
    loss.backward(retain_graph=True)
    once = logits.grad.numpy().copy()
    loss.backward()   # the saved gradient must not have been changed by the first pass
    np.testing.assert_allclose(logits.grad.numpy(), 2 * once, rtol=1e-6)


def test_bce_log_is_clamped_like_pytorch():
    p = tg.tensor([0.0, 1.0], requires_grad=True)
    loss = F.binary_cross_entropy(p, tg.tensor([1.0, 0.0]), reduction="none")
    assert loss.tolist() == [100.0, 100.0]
    loss.sum().backward()
    assert np.all(np.isfinite(p.grad.data))


CLASS_SHAPES = [(4,), (5, 4), (2, 3, 3), (2, 4, 3), (2, 3, 4, 5), (0, 3, 2)]   # (C,) (N, C) (N, C, d1...)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", CLASS_SHAPES, ids=str)
@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss"])
def test_class_losses_match_pytorch_for_k_dimensional_input(name, shape, reduction, rng):
    """PyTorch's layout: scores (C,), (N, C) or (N, C, d1, d2, ...) with labels (), (N,) or
    (N, d1, d2, ...); "mean" averages over every label."""
    torch = pytest.importorskip("torch")
    scores = rng.standard_normal(shape)
    n_classes = shape[0] if len(shape) == 1 else shape[1]
    labels = rng.integers(0, n_classes, shape[:1] + shape[2:] if len(shape) > 1 else ())
    weights = rng.standard_normal(labels.shape if reduction == "none" else ())   # dL/dloss
    x = tg.tensor(scores, requires_grad=True)
    with np.errstate(invalid="ignore", divide="ignore"):   # N = 0: the mean of no losses is 0/0
        loss = getattr(F, name)(x, tg.tensor(labels), reduction=reduction)
        (loss * tg.tensor(weights)).sum().backward()
    x_torch = torch.tensor(scores, requires_grad=True)
    loss_torch = getattr(torch.nn.functional, name)(x_torch, torch.tensor(labels), reduction=reduction)
    (loss_torch * torch.tensor(weights)).sum().backward()
    assert loss.shape == tuple(loss_torch.shape)
    np.testing.assert_allclose(loss.data, loss_torch.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x.grad.data, x_torch.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss"])
def test_class_losses_say_which_target_shape_they_need(name):
    loss = getattr(F, name)
    with pytest.raises(ValueError, match=r"\(N, C, d1\) .* \(N, d1\) = \(2, 4\), got \(2, 3\)"):
        loss(tg.randn(2, 3, 4), tg.tensor(np.zeros((2, 3), np.int64)))
    with pytest.raises(ValueError, match=r"\(N, C\) .* \(N,\) = \(3,\), got \(3, 1\)"):
        loss(tg.randn(3, 10), tg.tensor(np.zeros((3, 1), np.int64)))
    with pytest.raises(ValueError, match=r"\(C,\) .* \(\) = \(\), got \(1,\)"):
        loss(tg.randn(10), tg.tensor([1]))
    with pytest.raises(ValueError, match="needs a class dimension.*got a 0-d input"):
        loss(tg.tensor(1.0), tg.tensor(0))
    with pytest.raises(IndexError, match="target 3 is out of range for 3 classes"):
        loss(tg.randn(2, 3, 4), tg.tensor(np.full((2, 4), 3)))
    for module in (nn.CrossEntropyLoss(), nn.NLLLoss()):
        assert module(tg.randn(2, 3, 3), tg.tensor(np.zeros((2, 3), np.int64))).shape == ()


def test_bad_labels_raise_clear_errors():
    logits = tg.randn(3, 10)
    with pytest.raises(TypeError, match="int64"):
        F.cross_entropy(logits, tg.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(IndexError, match="target 10 is out of range for 10 classes"):
        F.cross_entropy(logits, tg.tensor([1, 10, 3]))
    with pytest.raises(IndexError, match="target -1"):
        nn.NLLLoss()(logits, tg.tensor([-1, 0, 0]))
    with pytest.raises(ValueError, match=r"target must have shape \(N,\) = \(3,\)"):
        F.cross_entropy(logits, tg.tensor([1, 2]))
    with pytest.raises(ValueError, match="target shape"):
        nn.MSELoss()(tg.zeros(3, 1), tg.zeros(3))
    with pytest.raises(ValueError, match="probability"):
        nn.BCELoss()(tg.tensor([1.5]), tg.tensor([1.0]))
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="average")


def test_linear_rejects_wrong_feature_count_and_dtype():
    lin = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="3"):
        lin(tg.zeros(4, 5))
    with pytest.raises(TypeError, match="float64"):
        lin(tg.zeros(4, 3, dtype=tg.float64))
    with pytest.raises(ValueError, match=r"linear: bias must have shape \(2,\) and dtype float32"):
        nn.functional.linear(tg.zeros(4, 3), lin.weight, tg.zeros(3))
    with pytest.raises(ValueError, match="linear: bias"):
        nn.functional.linear(tg.zeros(4, 3), lin.weight, tg.zeros(2, dtype=tg.float64))
